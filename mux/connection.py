"""A connection: the handle a behaviour gets, whatever the transport underneath.

Its mailbox (``mux.mailbox``) queues what the transport delivers, and ``mux.dispatch`` runs the behaviour's
callbacks from it one at a time, in order. Nothing here knows which transport is underneath.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import Any, Protocol

from mux import transport as t
from mux.behaviour import ConnectionBehaviour
from mux.dispatch import Dispatcher
from mux.mailbox import _INIT, DGRAM_COST, DGRAM_INBOX, ConnectionClosed, _Call, _Info, _NewConn, _StreamClosed
from mux.stream import Stream

__all__ = ["DGRAM_COST", "DGRAM_INBOX", "Address", "Connection", "ConnectionClosed", "Supervisor"]

Address = t.Address

_ids = itertools.count(1)

#: the last loop's done future: one loop's connections share it (a server runs one loop per process)
_done: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None


def done_future(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """A completed future of ``loop``, shared by its connections (one each would cost 144 bytes)."""
    global _done
    if _done is None or _done[0] is not loop:
        future: asyncio.Future[None] = loop.create_future()
        future.set_result(None)
        _done = (loop, future)
    return _done[1]


class Supervisor(Protocol):
    """Who is told about a connection's life: the server's pool, or nobody for a client."""

    def _connected(self, conn: Connection) -> None: ...

    def _closed(self, conn: Connection) -> None: ...

    def _rejected(self, conn: Connection) -> None: ...


class Connection(Dispatcher):
    """The handle a behaviour gets for its connection, whatever the transport.

    States: ``handshaking`` -> ``connected`` -> ``closing`` -> ``closed``.
    """

    # slotted, as are its bases: a server may hold tens of thousands of idle connections
    __slots__ = (
        "__weakref__",
        "_timers",
        "_writable_waiters",
        "blocked",
        "bytes_out",
        "close_props",
        "connected_at",
        "listener",
        "started",
    )

    def __init__(
        self,
        tconn: t.TransportConnection,
        behaviour: ConnectionBehaviour,
        opts: dict[str, Any],
        *,
        supervisor: Supervisor | None = None,
        listener: str | None = None,
        new_conn_props: dict[str, Any] | None = None,
    ) -> None:
        #: unique in this process for its lifetime: ``mux ctl connections`` and the logs show it
        self.id = next(_ids)
        self.listener = listener
        self.state = "handshaking"
        #: application bytes each way: stream data and datagrams delivered to / sent by the behaviour
        self.bytes_in = 0
        self.bytes_out = 0
        #: callbacks that crashed (a Reject or Stop is not an error)
        self.callback_errors = 0
        #: how the connection ended, once it has (the ``closed`` props)
        self.close_props: dict[str, Any] | None = None
        self.behaviour = behaviour
        self._tconn = tconn
        self._reply = getattr(tconn, "reply_now", None)
        self._supervisor = supervisor
        #: what waits for the behaviour; None while the connection idles (an idle connection holds no queue)
        self._mailbox: deque[Any] | None = deque((_Info(_INIT),))
        self._waiter: asyncio.Future[None] | None = None
        self._streams: dict[int, Stream] = {}
        #: streams done both ways whose ``stream_closed`` has not run yet, by id: a transport that reuses ids
        #: (SCTP) may already deliver the next stream of that id, which must wait for the old one's close
        self._closing: dict[int, _StreamClosed] | None = None  # made on first use, as are the two below
        self._timers: set[asyncio.TimerHandle] | None = None  # ``send_after``'s, made on first use
        self._writable_waiters: dict[int, asyncio.Future[None]] | None = None
        self._dead = False  # stopped or crashed: only ``closed`` is still called
        loop = self._loop = asyncio.get_running_loop()
        #: loop times: created (the peer admitted), and handshake done (set by the pool)
        self.started = loop.time()
        self.connected_at: float | None = None
        #: made by the first ``wait_closed`` (or by the end): most connections are never waited on
        self._closed_future: asyncio.Future[dict[str, Any]] | None = None
        #: what ``Stream.send`` returns when it need not wait: awaiting a done future costs no frame
        self._sent = done_future(loop)
        self.blocked = False
        #: waiting for its next event with nothing queued (``ConnectionSink.idle``); set by ``_run``
        self.idle = False
        #: stream bytes waiting in the mailbox; the transport grants the peer credit for them only
        #: once the behaviour is done with them (``TransportConnection.consumed``)
        self.inbox_bytes = 0
        self._dgram_bytes = 0
        self.dgram_dropped = 0
        #: each byte stream's data event still waiting in the mailbox: later data on it joins it, so
        #: a peer sending many tiny frames while the behaviour is busy cannot queue an event per frame
        self._queued_data: dict[int, t.StreamData] | None = None  # made on first use, as are the notes below
        self._joined: dict[int, bytearray] | None = None
        #: notifications a peer can repeat at will (MAX_STREAMS, STREAMS_BLOCKED...): one of each waits
        self._queued_notes: dict[Any, Any] | None = None
        behaviour.conn = self
        self._opts = opts
        if new_conn_props is not None:
            self._mailbox.append(_NewConn(new_conn_props))
        self._task = loop.create_task(self._run(), name=f"mux-conn-{self.id}")

    # -- handle API for behaviours ------------------------------------------------------------

    @property
    def transport(self) -> str:
        return self._tconn.transport_name

    @property
    def alpn(self) -> str | None:
        return self._tconn.alpn

    @property
    def local_address(self) -> Address:
        return self._tconn.local_address

    @property
    def peer_address(self) -> Address:
        return self._tconn.peer_address

    @property
    def streams(self) -> dict[int, Stream]:
        return self._streams

    def stats(self) -> dict[str, Any]:
        """The transport's figures, same keys on every transport (``mux.transport.COMMON_STATS``) with its
        own under ``quic`` or ``sctp``, and ``mailbox``: what waits for the behaviour."""
        stats = self._tconn.stats()
        stats["mailbox"] = {
            "queued": len(self._mailbox or ()),
            "inbox_bytes": self.inbox_bytes,
            "dgram_bytes": self._dgram_bytes,
            "dgram_dropped": self.dgram_dropped,
        }
        return stats

    def open_stream(self, unidirectional: bool = False) -> Stream:
        """Open a stream to the peer; raises ``TransportError`` when the peer's limit is reached."""
        try:
            stream_id = self._live_transport().open_stream(unidirectional)
        except t.ConnectionGone as exc:
            exc.connection = self
            raise
        stream = Stream(self, stream_id, unidirectional=unidirectional, local=True)
        self._streams[stream_id] = stream
        return stream

    def send_datagram(self, data: bytes) -> None:
        try:
            self._live_transport().send_datagram(data)
        except t.ConnectionGone as exc:
            exc.connection = self
            raise
        self.bytes_out += len(data)

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close gracefully; ``closed`` follows once the transport is done."""
        if self.state in ("closing", "closed"):
            return
        self.state = "closing"
        self._tconn.close(error_code, reason)

    def abort(self, reason: str = "") -> None:
        """Close at once, dropping unsent data (QUIC: CONNECTION_CLOSE now; SCTP: ABORT)."""
        if self.state == "closed":
            return
        self.state = "closing"
        self._tconn.abort(reason)

    def post(self, msg: Any) -> None:
        """Queue ``msg`` for ``handle_info``, after what is already queued. Dropped once closed."""
        if self.state != "closed":
            self._push(_Info(msg))

    async def call(self, msg: Any, timeout: float | None = 5.0) -> Any:
        """Ask ``handle_call(msg)`` and return its reply; raises what it raised, or ConnectionClosed."""
        if asyncio.current_task() is self._task:
            raise RuntimeError("a connection cannot call itself from its own callback (it would deadlock)")
        if self.state == "closed":
            raise ConnectionClosed(f"connection {self.id} is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._push(_Call(msg, future))
        return await asyncio.wait_for(future, timeout)

    def send_after(self, delay_ms: float, msg: Any) -> asyncio.TimerHandle:
        """Post ``msg`` to ``handle_info`` after ``delay_ms``; cancel with ``cancel_timer``."""
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            assert handle is not None
            if self._timers is not None:
                self._timers.discard(handle)
            self.post(msg)

        handle = loop.call_later(delay_ms / 1000.0, fire)
        if self._timers is None:
            self._timers = set()
        self._timers.add(handle)
        return handle

    def cancel_timer(self, handle: asyncio.TimerHandle) -> None:
        handle.cancel()
        if self._timers is not None:
            self._timers.discard(handle)

    async def wait_closed(self) -> dict[str, Any]:
        """Wait until ``closed`` has been called; returns its props."""
        future = self._closed_future
        if future is None:
            future = self._closed_future = self._loop.create_future()
        return await asyncio.shield(future)

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.transport} {self.state} peer={self.peer_address}>"

    # -- sink API for transports --------------------------------------------------------------

    def handles(self, callback: str) -> bool:
        """Whether the behaviour overrides ``callback`` (``ConnectionSink.handles``)."""
        mine = getattr(type(self.behaviour), callback, None)
        return mine is not None and mine is not getattr(ConnectionBehaviour, callback, None)

    def writable(self) -> None:
        """Wake senders whose stream queue fell back under the high-water mark."""
        waiters = self._writable_waiters
        if not waiters:
            self.blocked = False
            return
        tconn = self._tconn
        for stream_id, future in list(waiters.items()):
            if tconn.send_buffered(stream_id) <= tconn.high_water:
                del waiters[stream_id]
                if not future.done():
                    future.set_result(None)
        self.blocked = bool(waiters)

    # -- internals ----------------------------------------------------------------------------

    def _error(self, message: str) -> t.TransportError:
        return t.TransportError(message)

    def _live_transport(self) -> t.TransportConnection:
        if self._gone():
            exc = ConnectionClosed(f"connection {self.id} is {self.state}")
            exc.connection = self
            raise exc
        return self._tconn

    def _wait_writable(self, stream_id: int) -> asyncio.Future[None]:
        waiters = self._writable_waiters
        if waiters is None:
            waiters = self._writable_waiters = {}
        future = waiters.get(stream_id)
        if future is None:
            future = waiters[stream_id] = self._loop.create_future()
        self.blocked = True
        return future

    def _on_transport_closed(self, event: t.Closed) -> None:
        """Immediate effects of the end; the ``closed`` callback itself runs in order later."""
        if self.state == "closed":
            return
        self.state = "closed"
        self.close_props = event.props
        if self._timers is not None:
            for handle in self._timers:
                handle.cancel()
            self._timers = None
        error = ConnectionClosed(f"connection {self.id} closed: {event.props.get('reason', '')}")
        for future in (self._writable_waiters or {}).values():
            if not future.done():
                future.set_exception(error)
                future.exception()  # a plain def may never await its send: that is not an unhandled error
        self._writable_waiters = None
        self.blocked = False
        if self._supervisor is not None:
            self._supervisor._closed(self)
