"""The transport plug: the narrow contract between a transport and the rest of mux.

A transport (QUIC, SCTP, or a future one) implements three things and nothing in the pool or the
behaviour code imports it:

1. ``TransportConnection``: one per connection, carrying out the neutral commands (send, open
   stream, datagram, close, abort...).
2. It reports what happens on the wire as the neutral events below, by calling the
   ``ConnectionSink`` (the framework's ``mux.connection.Connection``) it was given:
   ``sink.deliver(event)`` queues an event for the behaviour in arrival order, and
   ``sink.writable()`` wakes senders waiting on backpressure (it bypasses the mailbox, because the
   callback that is waiting *is* the mailbox).
3. A ``TransportPlugin`` registered in ``mux.registry``: its pydantic listener options model, a
   factory for server listeners, and a client ``connect``.

Admission is the pool's: a listener asks ``pool.admit(listener_name)`` *before* it keeps any state
for a new peer, and answers the peer by its own stated policy when told ``BUSY`` or ``REFUSE``.
Only then does it create its connection state and call ``pool.accept(...)``, which returns the sink.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mux.pool import AcceptorPool

Address = tuple[Any, ...]


class TransportError(Exception):
    """A command the transport cannot carry out (stream limit, closed connection, bad stream)."""


class ConnectionGone(TransportError):
    """The connection ended (peer close, abort, timeout) before this command: not the caller's bug.

    A transport raises it for its own connection only. ``connection`` names the framework connection
    it concerns once known, so a callback stopped by its own connection's end is not called a crash
    while one that touched some *other*, closed connection is.
    """

    connection: Any = None


# ---------------------------------------------------------------------------------------------
# Neutral events, transport -> framework. Plain slotted records: they are made per packet.


@dataclass(slots=True)
class Connected:
    props: dict[str, Any]


@dataclass(slots=True)
class StreamData:
    """Data on a stream. The first event for a peer-initiated stream id also opens it."""

    stream_id: int
    data: bytes
    fin: bool
    props: dict[str, Any] | None = None


@dataclass(slots=True)
class StreamReset:
    stream_id: int
    error_code: int


@dataclass(slots=True)
class StopSending:
    stream_id: int
    error_code: int


@dataclass(slots=True)
class DatagramReceived:
    data: bytes
    flags: int = 0


@dataclass(slots=True)
class StreamsAvailable:
    bidi: int
    unidi: int


@dataclass(slots=True)
class PeerNeedsStreams:
    unidirectional: bool


@dataclass(slots=True)
class AddressChanged:
    address: Address


@dataclass(slots=True)
class PathChanged:
    """One of the peer's addresses changed state (SCTP multi-homing: ``path_changed``)."""

    address: Address
    state: str
    props: dict[str, Any]


@dataclass(slots=True)
class LocalAddressChanged:
    """Our own address for this connection changed (quicer's ``local_address_changed``)."""

    address: Address


@dataclass(slots=True)
class DatagramStateChanged:
    """Whether ``send_datagram`` works now, and the largest datagram it takes (quicer's props:
    ``dgram_send_enabled``, ``dgram_max_len``)."""

    props: dict[str, Any]


@dataclass(slots=True)
class PeerCertificate:
    """The peer's certificate and the chain it sent, DER, leaf first (TLS transports only)."""

    certificates: list[bytes]


@dataclass(slots=True)
class Resumed:
    """Server side: the peer resumed an earlier session; ``data`` is what the ticket carried, or False."""

    data: bytes | Literal[False] = False


@dataclass(slots=True)
class TicketReceived:
    """Client side: the server sent a session ticket (TLS NewSessionTicket); ``ticket`` resumes a session."""

    ticket: bytes


@dataclass(slots=True)
class PeerShutdown:
    """The peer's application closed the connection with ``error_code`` (QUIC application CONNECTION_CLOSE;
    SCTP SHUTDOWN, code 0, or an ABORT carrying mux's application close)."""

    error_code: int
    reason: str = ""


@dataclass(slots=True)
class TransportShutdown:
    """The connection ended below the application: idle timeout, protocol error, retransmission failure, or an
    abort, ours or the peer's (QUIC transport CONNECTION_CLOSE, SCTP ABORT). ``props`` as ``Closed``'s."""

    props: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Closed:
    """The connection is gone; always the last event. ``props`` says how it ended.

    Every transport gives ``by`` (``local``, ``peer`` or ``transport``: who started the end), ``error_code``
    and ``reason``, and ``error`` (a short name such as ``aborted``, ``refused``, ``idle_timeout``) when the end
    was not an application's close; extras go under the transport's own key (``quic``, ``sctp``).
    """

    props: dict[str, Any] = field(default_factory=dict)


Event = (
    Connected
    | StreamData
    | StreamReset
    | StopSending
    | DatagramReceived
    | StreamsAvailable
    | PeerNeedsStreams
    | AddressChanged
    | PathChanged
    | LocalAddressChanged
    | DatagramStateChanged
    | PeerCertificate
    | Resumed
    | TicketReceived
    | PeerShutdown
    | TransportShutdown
    | Closed
)


#: what ``TransportConnection.stats()`` gives on every transport (the mailbox adds ``mailbox``)
COMMON_STATS = (
    "transport",
    "state",
    "peer",
    "srtt_ms",
    "rto_ms",
    "cwnd",
    "bytes_in_flight",
    "mtu",
    "peer_rwnd",
    "packets_sent",
    "packets_received",
    "packets_retransmitted",
    "recv_unconsumed",
    "dgram_send_queued",
    "dgram_send_dropped",
)


class ConnectionSink(Protocol):
    """What a transport talks to; implemented by ``mux.connection.Connection``."""

    #: True while some sender waits on backpressure; transports may skip ``writable()`` otherwise.
    blocked: bool

    def deliver(self, event: Event) -> None: ...

    def writable(self) -> None: ...

    #: No callback is running or queued: whatever the events caused has been given to the transport.
    #: A plain attribute, read by the driver once per connection per batch of datagrams.
    idle: bool

    def handles(self, callback: str) -> bool:
        """Whether the behaviour overrides ``callback``: a transport may skip work only it would use
        (asking for session tickets, encoding certificates)."""
        ...


class TransportConnection(Protocol):
    """Commands the framework gives one connection of a transport. None of them block."""

    transport_name: str
    #: bytes queued on a stream above which ``await stream.send`` waits.
    high_water: int
    #: the connection has ended (its ``Closed`` was delivered); commands now raise ``ConnectionGone``
    finished: bool

    @property
    def alpn(self) -> str | None: ...

    @property
    def local_address(self) -> Address: ...

    @property
    def peer_address(self) -> Address: ...

    def open_stream(self, unidirectional: bool = False) -> int:
        """Return a new locally initiated stream id; raise ``TransportError`` at the peer's limit."""
        ...

    def send(self, stream_id: int, data: bytes, fin: bool, props: Mapping[str, Any] | None) -> int:
        """Queue ``data`` (one message for message-oriented transports) on a stream.

        Returns what ``send_buffered(stream_id)`` would now, so a send costs one call on the hot path.
        """
        ...

    def send_buffered(self, stream_id: int) -> int:
        """Bytes queued for ``stream_id`` that the transport has not yet got rid of."""
        ...

    def consumed(self, stream_id: int, nbytes: int) -> None:
        """The behaviour is done with one delivered ``StreamData`` of ``nbytes`` on ``stream_id``.

        Receive credit comes only from here: what a transport advertises to its peer (QUIC
        MAX_STREAM_DATA and MAX_DATA, SCTP a_rwnd) counts data delivered to the mailbox and not yet
        consumed, so a slow behaviour holds its peer back and a peer that never stops sending is held
        to the window. Called once per delivered ``StreamData`` with data, after its callback returned
        (or raised); ``nbytes`` is ``len(event.data)``.
        """
        ...

    def reset_stream(self, stream_id: int, error_code: int) -> None: ...

    def stop_sending(self, stream_id: int, error_code: int) -> None: ...

    def set_priority(self, stream_id: int, priority: int) -> None:
        """quicer's stream ``priority``: 0..65535, higher first (a transport without priorities ignores it)."""
        ...

    def send_datagram(self, data: bytes) -> None: ...

    def close(self, error_code: int, reason: str) -> None:
        """Graceful close with an application code."""
        ...

    def abort(self, reason: str) -> None:
        """Close with the transport's internal-error code (a behaviour crashed)."""
        ...

    def stats(self) -> dict[str, Any]:
        """Figures with the same keys on every transport (``COMMON_STATS``) and the transport's own under
        its name. ``state`` is one of ``handshaking``, ``connected``, ``closing``, ``closed``."""
        ...

    # Optional: ``flush()`` is called when the behaviour has worked through its queued callbacks, so
    # a transport can send what they produced at once instead of on the next loop step.
    # Server side, optional: a transport that can hold a new peer's handshake until the behaviour's
    # ``new_conn`` has accepted it implements ``proceed()`` (continue the handshake) and
    # ``refuse(reason)`` (answer with its refusal, e.g. QUIC CONNECTION_REFUSED, SCTP ABORT).


class Listener(Protocol):
    """A bound server socket of one transport feeding the shared pool."""

    name: str
    transport_name: str

    @property
    def address(self) -> Address: ...

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Stop reading and release the socket; connections must already be gone."""
        ...

    # Optional, for hot reload (mux/reload.py): ``reconfigure(options)`` checks new options of the same socket,
    # raising on a problem before anything changes, and returns a function that applies them to connections made
    # from then on. A transport without it refuses a reload that changes its listener's options.


#: builds the framework side of a client connection for a transport connection
SinkFactory = Callable[["TransportConnection"], "ConnectionSink"]


class TransportPlugin(Protocol):
    name: ClassVar[str]

    #: pydantic model of this transport's listener options (``transport: <name>`` selects it)
    listener_model: ClassVar[type[BaseModel]]

    def listener(self, options: Any, pool: AcceptorPool) -> Listener: ...

    def connect(
        self, options: Any, host: str, port: int, make_sink: SinkFactory
    ) -> Awaitable[tuple[TransportConnection, Callable[[], Awaitable[None]]]]:
        """Open a client connection; returns it and a coroutine function releasing its socket."""
        ...
