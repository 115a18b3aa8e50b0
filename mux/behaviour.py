"""The connection behaviour an application writes once and runs over every transport.

Callbacks follow quicer's ``quicer_connection`` behaviour. One instance is created per connection, so
``self`` is the per-connection state (quicer's ``cb_state``). Every callback may be ``def`` or
``async def``; the callbacks of one connection run one at a time, in arrival order.

Design choice: there is no separate stream behaviour class. Stream events arrive on the connection
behaviour (``new_stream``, ``stream_data``, ``peer_send_aborted``...), so the order of events across
the streams of one connection is the order they arrived in, and an app keeps all of its state in one
object. An app that wants per-stream objects keeps a dict keyed by ``stream.id``.

Control flow is explicit:

* return nothing (or anything) to carry on;
* ``raise Reject(code, reason)`` from ``new_conn`` to refuse a connection (counted as refused);
* ``raise Stop(code, reason)`` from any callback to close the connection gracefully with that code;
* any other exception closes only this connection with an internal error and is logged with its
  traceback. After a Stop or a crash only ``closed`` is still called, so the app can clean up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mux.connection import Address, Connection
    from mux.stream import Stream


class Stop(Exception):
    """Raised by a callback to close its connection gracefully with ``code`` and ``reason``."""

    def __init__(self, code: int = 0, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Reject(Stop):
    """Raised by ``new_conn`` to refuse a connection; the pool counts it as refused."""


class ConnectionBehaviour:
    """Base class with no-op defaults; override what you need.

    ``props`` dicts are transport-neutral where possible (``transport``, ``alpn``, ``peer``) and carry
    transport extras under their own keys (SCTP's ``ppid`` and ``unordered`` for stream data).
    """

    #: set by the framework before ``init``; the connection this instance serves.
    conn: Connection

    def init(self, opts: dict[str, Any]) -> Any:
        """Called first with the behaviour options from the YAML file (or ``connect(..., opts=)``)."""

    def new_conn(self, conn: Connection, props: dict[str, Any]) -> Any:
        """Server side: a peer was admitted by the pool. ``raise Reject()`` to refuse it."""

    def connected(self, conn: Connection, props: dict[str, Any]) -> Any:
        """The handshake completed; streams and datagrams may be used."""

    def new_stream(self, stream: Stream, props: dict[str, Any]) -> Any:
        """The peer opened ``stream``; its data follows in ``stream_data``."""

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> Any:
        """Bytes (QUIC) or one whole message (SCTP) arrived; ``fin`` means the peer ended its side."""

    def peer_send_aborted(self, stream: Stream, error_code: int) -> Any:
        """The peer reset its sending side of ``stream`` (QUIC RESET_STREAM)."""

    def peer_receive_aborted(self, stream: Stream, error_code: int) -> Any:
        """The peer asked us to stop sending on ``stream`` (QUIC STOP_SENDING)."""

    def stream_closed(self, stream: Stream, props: dict[str, Any]) -> Any:
        """Both directions of ``stream`` are finished (fin or reset each way)."""

    def dgram_recv(self, conn: Connection, data: bytes, flags: int) -> Any:
        """An unreliable datagram arrived (QUIC DATAGRAM, RFC 9221)."""

    def streams_available(self, conn: Connection, bidi: int, unidi: int) -> Any:
        """The peer's stream limits now allow ``bidi``/``unidi`` more streams to be opened by us."""

    def peer_needs_streams(self, conn: Connection, unidirectional: bool) -> Any:
        """The peer is blocked on our stream limit (QUIC STREAMS_BLOCKED)."""

    def peer_address_changed(self, conn: Connection, address: Address) -> Any:
        """The peer's address changed (QUIC migration, SCTP primary path change)."""

    def shutdown(self, conn: Connection, error_code: int) -> Any:
        """The peer closed the connection (QUIC CONNECTION_CLOSE, SCTP SHUTDOWN)."""

    def transport_shutdown(self, conn: Connection, props: dict[str, Any]) -> Any:
        """The transport ended the connection: idle timeout, protocol error, ABORT, retransmission failure."""

    def closed(self, conn: Connection, props: dict[str, Any]) -> Any:
        """Always the last callback of a connection."""

    def handle_info(self, msg: Any) -> Any:
        """A message posted with ``conn.post(msg)`` or a timer set with ``conn.send_after``."""

    def handle_call(self, msg: Any) -> Any:
        """A request made with ``await conn.call(msg)``; the return value is the reply."""
        raise NotImplementedError(f"{type(self).__name__} does not handle calls")
