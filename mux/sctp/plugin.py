"""Registers our SCTP (over UDP, RFC 6951) with mux's transport registry."""

from __future__ import annotations

from mux.registry import TransportPlugin
from mux.sctp.client import connect
from mux.sctp.listener import SctpListener
from mux.sctp.options import SctpClientOptions, SctpListenerOptions

PLUGIN = TransportPlugin(
    name="sctp",
    listener_model=SctpListenerOptions,
    client_model=SctpClientOptions,
    listener=SctpListener,
    connect=connect,
    default_port=9899,
)
