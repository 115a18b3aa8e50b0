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
* ``raise Stop(code, reason)`` from any callback to close the connection with that code (see ``Stop``);
* any other exception closes only this connection with an internal error and is logged with its
  traceback. After a Stop or a crash only ``closed`` is still called, so the app can clean up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mux.connection import Address, Connection
    from mux.stream import Stream


class Stop(Exception):
    """Raised by a callback to close its connection with ``code`` and ``reason``, as ``conn.close`` does.

    The peer's behaviour gets ``shutdown(conn, code)`` and ``closed`` with ``error_code`` and ``reason`` on
    both transports, with one difference SCTP imposes: its graceful SHUTDOWN carries no code. So over SCTP,
    code 0 closes with SHUTDOWN (everything queued is delivered first; the peer sees code 0 and reason "")
    and any other code closes with an ABORT whose User-Initiated Abort cause carries the code and reason
    (immediate: data still queued is dropped, as QUIC's CONNECTION_CLOSE always does).
    """

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

    Which transport calls what: every callback fires on both QUIC and SCTP except

    * ``resumed``, ``nst_received``, ``peer_cert_received``: QUIC only (they are TLS events);
    * ``local_address_changed``: neither today (a listener's socket stays bound; clients do not migrate);
    * ``peer_send_aborted``, ``peer_receive_aborted``, ``dgram_recv``: QUIC only until SCTP stream reset
      (RFC 6525) and datagrams (RFC 3758) are in; ``dgram_state_changed`` fires on both and says so.

    Order: ``init``, then ``new_conn`` (server), then what the handshake learnt (``peer_cert_received``,
    ``dgram_state_changed``, ``resumed``), then ``connected``; ``new_stream`` comes before any other event
    of its stream; ``closed`` is always last.
    """

    # a slot: a subclass that declares ``__slots__`` of its own has no instance dict (an idle connection costs less);
    # one that does not gets its dict as usual
    __slots__ = ("conn",)

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

    def path_changed(self, conn: Connection, address: Address, state: str, props: dict[str, Any]) -> Any:
        """One of the peer's addresses changed state (SCTP multi-homing): ``added``, ``confirmed``, ``unreachable``
        or ``available``; ``props`` is the path's ``#sctp_paddrinfo{}`` (as in ``conn.stats()["paths"]``)."""

    def local_address_changed(self, conn: Connection, address: Address) -> Any:
        """Our address for this connection changed. No mux transport changes it today; here for quicer's apps."""

    def dgram_state_changed(self, conn: Connection, props: dict[str, Any]) -> Any:
        """Whether ``send_datagram`` works: ``dgram_send_enabled`` and ``dgram_max_len`` (the largest datagram
        it takes), as quicer gives them. Fires before ``connected`` on both transports; SCTP says disabled
        until it carries datagrams."""

    def peer_cert_received(self, conn: Connection, certificates: list[bytes]) -> Any:
        """QUIC: the peer's certificate and the chain it sent, DER bytes, leaf first. A client always gets
        it, except on a resumed session (no certificate is sent); a server when its client presented one
        (``verify: optional`` or ``required``) and it passed. Fires before ``connected``."""

    def resumed(self, conn: Connection, session_data: bytes | Literal[False]) -> Any:
        """QUIC server: the client resumed an earlier session (before ``connected``). mux puts no
        application data in tickets, so ``session_data`` is False. A client reads ``session_resumed`` in
        the ``connected`` props."""

    def nst_received(self, conn: Connection, ticket: bytes) -> Any:
        """QUIC client: the server sent a session ticket. Write ``ticket`` to a file and name it in the
        ``session_ticket_file`` option to resume later (the format that option reads)."""

    def shutdown(self, conn: Connection, error_code: int) -> Any:
        """The peer's application closed the connection with ``error_code`` (``Stop``, ``conn.close``):
        QUIC application CONNECTION_CLOSE; SCTP SHUTDOWN (code 0) or mux's coded ABORT (see ``Stop``)."""

    def transport_shutdown(self, conn: Connection, props: dict[str, Any]) -> Any:
        """The connection ended below the application: an abort (the peer's ``conn.abort`` or crash, our own
        transport giving up), an idle timeout, a protocol error, a retransmission failure. A peer's abort
        lands here on both transports, as msquic reports a transport CONNECTION_CLOSE. ``props`` are the
        ``closed`` props, with ``error`` naming what happened."""

    def closed(self, conn: Connection, props: dict[str, Any]) -> Any:
        """Always the last callback of a connection.

        ``props`` on every transport: ``by`` (``local``, ``peer`` or ``transport``: who started the end),
        ``error_code`` and ``reason`` (the application's, for an application close; otherwise the
        transport's own code: a QUIC transport error code, an SCTP error cause code), and ``error`` when
        the end was not an application close (``aborted``, ``refused``, ``idle_timeout``,
        ``communication_lost``, ``protocol_violation``...). Extras sit under ``quic`` or ``sctp``.
        """

    def handle_info(self, msg: Any) -> Any:
        """A message posted with ``conn.post(msg)`` or a timer set with ``conn.send_after``."""

    def handle_call(self, msg: Any) -> Any:
        """A request made with ``await conn.call(msg)``; the return value is the reply."""
        raise NotImplementedError(f"{type(self).__name__} does not handle calls")
