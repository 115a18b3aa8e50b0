"""mux: one connection behaviour, served over QUIC and SCTP through one acceptor pool."""

from mux.behaviour import ConnectionBehaviour, Reject, Stop
from mux.client import connect
from mux.connection import Connection, ConnectionClosed
from mux.quick import make_server, serve
from mux.stream import Stream

__all__ = [
    "Connection",
    "ConnectionBehaviour",
    "ConnectionClosed",
    "Reject",
    "Stop",
    "Stream",
    "connect",
    "make_server",
    "serve",
]
__version__ = "0.1.0"
