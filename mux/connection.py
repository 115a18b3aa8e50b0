"""A connection: the behaviour's handle and its mailbox, which runs callbacks one at a time in order.

The transport feeds neutral events into ``deliver``; one asyncio task per connection takes them out
in arrival order and calls the behaviour. Nothing here knows which transport is underneath.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
from asyncio.tasks import _enter_task, _leave_task
from asyncio.tasks import current_task as _current_task
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol

from mux import transport as t
from mux.behaviour import ConnectionBehaviour, Reject, Stop
from mux.logs import limited_log, peer_log
from mux.stream import Stream

log = logging.getLogger("mux.connection")

Address = t.Address

_ids = itertools.count(1)

#: datagrams waiting for ``dgram_recv`` may hold this much, each charged its length plus
#: ``DGRAM_COST`` (what a queued datagram costs in objects); beyond it datagrams are dropped and
#: counted: they are unreliable, and a peer must not fill memory by sending them faster than we read
DGRAM_INBOX = 256 * 1024
DGRAM_COST = 256


class ConnectionClosed(t.ConnectionGone):
    """The connection is closed (or closing) and cannot carry out the request."""


class Supervisor(Protocol):
    """Who is told about a connection's life: the server's pool, or nobody for a client."""

    def _connected(self, conn: Connection) -> None: ...

    def _closed(self, conn: Connection) -> None: ...

    def _rejected(self, conn: Connection) -> None: ...


class _Call:
    __slots__ = ("future", "msg")

    def __init__(self, msg: Any, future: asyncio.Future[Any]) -> None:
        self.msg = msg
        self.future = future


class _Info:
    __slots__ = ("msg",)

    def __init__(self, msg: Any) -> None:
        self.msg = msg


class _NewConn:
    __slots__ = ("props",)

    def __init__(self, props: dict[str, Any]) -> None:
        self.props = props


class Connection:
    """The handle a behaviour gets for its connection, whatever the transport.

    States: ``handshaking`` -> ``connected`` -> ``closing`` -> ``closed``.
    """

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
        self._supervisor = supervisor
        self._mailbox: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._streams: dict[int, Stream] = {}
        #: streams done both ways whose ``stream_closed`` has not run yet, by id: a transport that reuses ids
        #: (SCTP) may already deliver the next stream of that id, which must wait for the old one's close
        self._closing: dict[int, _StreamClosed] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._writable_waiters: dict[int, asyncio.Future[None]] = {}
        self._dead = False  # stopped or crashed: only ``closed`` is still called
        loop = self._loop = asyncio.get_running_loop()
        #: loop times: created (the peer admitted), and handshake done (set by the pool)
        self.started = loop.time()
        self.connected_at: float | None = None
        self._closed_future: asyncio.Future[dict[str, Any]] = loop.create_future()
        #: what ``Stream.send`` returns when it need not wait: awaiting a done future costs no frame
        self._sent: asyncio.Future[None] = loop.create_future()
        self._sent.set_result(None)
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
        self._queued_data: dict[int, t.StreamData] = {}
        self._joined: dict[int, bytearray] = {}
        #: notifications a peer can repeat at will (MAX_STREAMS, STREAMS_BLOCKED...): one of each waits
        self._queued_notes: dict[Any, Any] = {}
        behaviour.conn = self
        self._mailbox.append(_Info(_INIT))
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
            "queued": len(self._mailbox),
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
            self._timers.discard(handle)
            self.post(msg)

        handle = loop.call_later(delay_ms / 1000.0, fire)
        self._timers.add(handle)
        return handle

    def cancel_timer(self, handle: asyncio.TimerHandle) -> None:
        handle.cancel()
        self._timers.discard(handle)

    async def wait_closed(self) -> dict[str, Any]:
        """Wait until ``closed`` has been called; returns its props."""
        return await asyncio.shield(self._closed_future)

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.transport} {self.state} peer={self.peer_address}>"

    # -- sink API for transports --------------------------------------------------------------

    def handles(self, callback: str) -> bool:
        """Whether the behaviour overrides ``callback`` (``ConnectionSink.handles``)."""
        mine = getattr(type(self.behaviour), callback, None)
        return mine is not None and mine is not getattr(ConnectionBehaviour, callback, None)

    def deliver(self, event: t.Event) -> None:
        """Queue an event for the behaviour, or, when the mailbox is idle, run its callback now.

        Eager dispatch: the mailbox is idle and the transport is delivering from the driver (no task
        running), so the callback may start at once. It runs with ``asyncio.current_task()`` being
        this connection's task, exactly as if the task had woken up. If it completes without
        suspending (an echo under its high-water mark), one loop step and a task wake-up are saved
        per event. If it suspends, the task takes over the half-run coroutine, first in line, so
        order is kept.

        Data on a stream the behaviour already knows is the hot path: its callback is called here
        directly, without the ``_dispatch`` coroutine around it.
        """
        item: Any = event  # a StreamData on the hot path below; mypy cannot follow that narrowing
        kind = type(item)
        if kind is t.StreamData or kind is t.DatagramReceived:
            self.bytes_in += len(item.data)
        elif kind is t.Closed:
            self._on_transport_closed(item)
            self._push(item)
            return
        loop = self._loop
        if not self.idle or self._dead or _current_task(loop) is not None:
            self._enqueue(item)
            return
        task = self._task
        _enter_task(loop, task)
        try:
            stream = self._streams.get(item.stream_id) if type(item) is t.StreamData and item.data else None
            if stream is None:
                self._start(self._dispatch(item))
                return
            data = item.data
            try:
                props = item.props if item.props is not None else {}
                result = self.behaviour.stream_data(stream, data, item.fin, props)
                # ``_sent``: what a send that need not wait returns (``mux/behaviours/echo.py`` returns it)
                waiting = _awaiting(result) if result is not None and result is not self._sent else None
                if waiting is not None:
                    try:
                        blocker = waiting.send(None)
                    except StopIteration:
                        pass
                    else:
                        self._start(self._stream_data_rest(waiting, blocker, stream, item.fin, len(data)))
                        return
            except Exception as exc:
                self._tconn.consumed(item.stream_id, len(data))
                self._failed(exc, t.StreamData)
                return
            self._tconn.consumed(item.stream_id, len(data))
            if item.fin:
                self._recv_finished(stream)
        finally:
            _leave_task(loop, task)

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` to its first suspension; the task then takes it over, first in line."""
        try:
            blocker = coro.send(None)
        except StopIteration:
            return
        self._push(_Resume(coro, blocker))

    async def _stream_data_rest(self, waiting: Any, blocker: Any, stream: Stream, fin: bool, nbytes: int) -> None:
        """What is left of a hot-path ``stream_data`` that suspended, with ``_dispatch``'s guard."""
        try:
            await _Resume(waiting, blocker)
        except Exception as exc:
            self._tconn.consumed(stream.id, nbytes)
            self._failed(exc, t.StreamData)
            return
        self._tconn.consumed(stream.id, nbytes)
        if fin:
            self._recv_finished(stream)

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

    def _enqueue(self, item: Any) -> None:
        """Queue a transport event, with what bounds the mailbox whatever the peer sends.

        Stream data is bounded by the transport's receive window, because credit returns only through
        ``consumed``; data joining a byte stream's waiting event keeps one event per stream. Datagrams
        have no flow control and are dropped beyond ``DGRAM_INBOX``. Repeatable notifications wait once.
        """
        kind = type(item)
        if kind is t.StreamData:
            data = item.data
            if self._dead:  # only ``closed`` runs now: drop the data, but let the peer finish sending
                if data:
                    self._tconn.consumed(item.stream_id, len(data))
                return
            self.inbox_bytes += len(data)
            if self._queued_notes:
                # what comes after this data is about the stream as it is from now on (SCTP reuses ids: maybe a
                # new stream): a reset or stop-sending waiting from before must not swallow the next one
                sid = item.stream_id
                self._queued_notes.pop((t.StreamReset, sid), None)
                self._queued_notes.pop((t.StopSending, sid), None)
            if item.props is None:  # a byte stream (message transports give props per message)
                sid = item.stream_id
                queued = self._queued_data.get(sid)
                if queued is not None and not queued.fin:
                    if data:
                        joined = self._joined.get(sid)
                        if joined is None:
                            joined = self._joined[sid] = bytearray(queued.data)
                        joined += data
                    queued.fin = item.fin
                    return
                self._queued_data[sid] = item
        elif kind is t.DatagramReceived:
            cost = len(item.data) + DGRAM_COST
            if self._dead or self._dgram_bytes + cost > DGRAM_INBOX:
                self.dgram_dropped += 1
                return
            self._dgram_bytes += cost
        elif kind in _NOTES:
            key = _note_key(item)
            note = self._queued_notes.get(key)
            if note is not None:
                if kind is t.StreamsAvailable:
                    note.bidi, note.unidi = item.bidi, item.unidi
                elif kind is t.AddressChanged:
                    note.address = item.address
                elif kind is t.PathChanged:
                    note.state, note.props = item.state, item.props
                elif kind is t.TicketReceived:
                    note.ticket = item.ticket  # the newest ticket is the one worth keeping
                elif kind is t.DatagramStateChanged:
                    note.props = item.props
                return
            self._queued_notes[key] = item
        self._push(item)

    def _unqueue(self, item: Any) -> None:
        """``item`` leaves the mailbox: it no longer collects joins, and its bytes leave the inbox."""
        kind = type(item)
        if kind is t.StreamData:
            data_item: t.StreamData = item
            sid = data_item.stream_id
            if self._queued_data.get(sid) is item:
                del self._queued_data[sid]
                joined = self._joined.pop(sid, None)
                if joined is not None:
                    data_item.data = bytes(joined)
            self.inbox_bytes -= len(data_item.data)
        elif kind is t.DatagramReceived:
            self._dgram_bytes -= len(item.data) + DGRAM_COST
        elif kind in _NOTES:
            key = _note_key(item)
            if self._queued_notes.get(key) is item:
                del self._queued_notes[key]

    def _push(self, item: Any) -> None:
        self._mailbox.append(item)
        self.idle = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _error(self, message: str) -> t.TransportError:
        return t.TransportError(message)

    def _gone(self) -> bool:
        return self.state in ("closing", "closed") or self._tconn.finished

    def _live_transport(self) -> t.TransportConnection:
        if self._gone():
            exc = ConnectionClosed(f"connection {self.id} is {self.state}")
            exc.connection = self
            raise exc
        return self._tconn

    def _wait_writable(self, stream_id: int) -> asyncio.Future[None]:
        future = self._writable_waiters.get(stream_id)
        if future is None:
            future = self._loop.create_future()
            self._writable_waiters[stream_id] = future
        self.blocked = True
        return future

    def _maybe_stream_closed(self, stream: Stream) -> None:
        if stream.send_done and stream.recv_done and not stream.closed:
            stream.closed = True
            item = _StreamClosed(stream)
            if self._streams.get(stream.id) is stream:
                # forgotten at once: an event for this id from now on belongs to a new stream (``_close_first``)
                del self._streams[stream.id]
                self._closing[stream.id] = item
            self._push(item)

    async def _close_first(self, stream_id: int) -> None:
        """A new stream of ``stream_id`` starts while the previous one's ``stream_closed`` still waits in the
        mailbox: that runs now, so a behaviour keyed by stream id sees the old stream end before the new begins."""
        item = self._closing.pop(stream_id, None)
        if item is not None and not item.done:
            item.done = True
            await self._invoke(self.behaviour.stream_closed, item.stream, {})

    def _recv_finished(self, stream: Stream) -> None:
        stream.recv_done = True
        self._maybe_stream_closed(stream)

    def _on_transport_closed(self, event: t.Closed) -> None:
        """Immediate effects of the end; the ``closed`` callback itself runs in order later."""
        if self.state == "closed":
            return
        self.state = "closed"
        self.close_props = event.props
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        error = ConnectionClosed(f"connection {self.id} closed: {event.props.get('reason', '')}")
        for future in self._writable_waiters.values():
            if not future.done():
                future.set_exception(error)
                future.exception()  # a plain def may never await its send: that is not an unhandled error
        self._writable_waiters.clear()
        self.blocked = False
        if self._supervisor is not None:
            self._supervisor._closed(self)

    def _stream_for(self, stream_id: int, props: dict[str, Any] | None = None) -> tuple[Stream, bool]:
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream, False
        # a message transport may say in the first event's props (SCTP: ids are reused, one use may be one-way)
        unidirectional = props.get("unidirectional") if props else None
        stream = Stream(
            self,
            stream_id,
            unidirectional=self._tconn_stream_unidirectional(stream_id) if unidirectional is None else unidirectional,
            local=False,
        )
        self._streams[stream_id] = stream
        return stream, True

    def _tconn_stream_unidirectional(self, stream_id: int) -> bool:
        probe: Callable[[int], bool] | None = getattr(self._tconn, "stream_is_unidirectional", None)
        return probe(stream_id) if probe is not None else False

    async def _event_stream(self, stream_id: int) -> Stream | None:
        """The stream a reset or stop-sending is about. One the peer opened that the behaviour has not seen
        yet is announced with ``new_stream`` first; one of ours that is already forgotten (``stream_closed``
        ran) gives None: there is nothing left to tell about it."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        if self._closing:
            await self._close_first(stream_id)
        probe: Callable[[int], bool] | None = getattr(self._tconn, "stream_is_local", None)
        if probe is not None and probe(stream_id):
            return None
        stream, _new = self._stream_for(stream_id)
        await self._invoke(self.behaviour.new_stream, stream, {})
        return stream

    async def _run(self) -> None:
        mailbox = self._mailbox
        loop = asyncio.get_running_loop()
        flush: Callable[[], None] | None = getattr(self._tconn, "flush", None)
        while True:
            while mailbox:
                item = mailbox.popleft()
                kind = type(item)
                if kind is _Resume:
                    await item
                    continue
                if kind is t.Closed:
                    await self._finish(item)
                    return
                if kind in _COUNTED:
                    self._unqueue(item)
                if not self._dead:
                    await self._dispatch(item)
                elif kind is _Call and not item.future.done():
                    item.future.set_exception(ConnectionClosed(f"connection {self.id} has stopped"))
                elif kind is t.StreamData and item.data:
                    self._tconn.consumed(item.stream_id, len(item.data))
            if flush is not None:
                flush()  # what the callbacks sent leaves now, not one loop step later
                if mailbox:
                    continue  # flushing can deliver events (an abort's Closed) straight back to us
            self._waiter = loop.create_future()
            self.idle = True
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def _invoke(self, fn: Callable[..., Any], *args: Any) -> Any:
        result = fn(*args)
        if result is not None and (type(result) is _Coroutine or inspect.isawaitable(result)):
            result = await result
        return result

    async def _dispatch(self, item: Any) -> None:
        b = self.behaviour
        kind = type(item)
        try:
            if kind is t.StreamData:
                try:
                    if self._closing and item.stream_id not in self._streams:
                        await self._close_first(item.stream_id)
                    stream, new = self._stream_for(item.stream_id, item.props)
                    props = item.props if item.props is not None else {}
                    if new:
                        await self._invoke(b.new_stream, stream, props)
                    if item.data or item.fin:
                        await self._invoke(b.stream_data, stream, item.data, item.fin, props)
                finally:
                    if item.data:
                        self._tconn.consumed(item.stream_id, len(item.data))
                if item.fin:
                    self._recv_finished(stream)
            elif kind is t.DatagramReceived:
                await self._invoke(b.dgram_recv, self, item.data, item.flags)
            elif kind is _Info:
                if item.msg is _INIT:
                    await self._invoke(b.init, self._opts)
                else:
                    await self._invoke(b.handle_info, item.msg)
            elif kind is _Call:
                try:
                    reply = await self._invoke(b.handle_call, item.msg)
                except Exception as exc:
                    if not item.future.done():
                        item.future.set_exception(exc)
                    raise
                if not item.future.done():
                    item.future.set_result(reply)
            elif kind is t.Connected:
                if self.state == "handshaking":
                    self.state = "connected"
                if self._supervisor is not None:
                    self._supervisor._connected(self)
                await self._invoke(b.connected, self, item.props)
            elif kind is _NewConn:
                await self._invoke(b.new_conn, self, item.props)
                proceed = getattr(self._tconn, "proceed", None)
                if proceed is not None and self.state == "handshaking":
                    proceed()
            elif kind is t.StreamReset:
                reset = await self._event_stream(item.stream_id)
                if reset is not None:
                    reset.recv_done = True
                    await self._invoke(b.peer_send_aborted, reset, item.error_code)
                    self._maybe_stream_closed(reset)
            elif kind is t.StopSending:
                stopped = await self._event_stream(item.stream_id)
                if stopped is not None:
                    # the transport resets our sending side in answer (aioquic copies the code into RESET_STREAM,
                    # SCTP sends its outgoing reset): nothing more can be sent on it
                    stopped.send_done = True
                    await self._invoke(b.peer_receive_aborted, stopped, item.error_code)
                    self._maybe_stream_closed(stopped)
            elif kind is _StreamClosed:
                if not item.done:  # else it ran already, before a new stream of its id (``_close_first``)
                    item.done = True
                    stream = item.stream
                    if self._closing.get(stream.id) is item:
                        del self._closing[stream.id]
                    await self._invoke(b.stream_closed, stream, {})
            elif kind is t.PeerShutdown:
                await self._invoke(b.shutdown, self, item.error_code)
            elif kind is t.TransportShutdown:
                await self._invoke(b.transport_shutdown, self, item.props)
            elif kind is t.StreamsAvailable:
                await self._invoke(b.streams_available, self, item.bidi, item.unidi)
            elif kind is t.PeerNeedsStreams:
                await self._invoke(b.peer_needs_streams, self, item.unidirectional)
            elif kind is t.AddressChanged:
                await self._invoke(b.peer_address_changed, self, item.address)
            elif kind is t.PathChanged:
                await self._invoke(b.path_changed, self, item.address, item.state, item.props)
            elif kind is t.DatagramStateChanged:
                await self._invoke(b.dgram_state_changed, self, item.props)
            elif kind is t.PeerCertificate:
                await self._invoke(b.peer_cert_received, self, item.certificates)
            elif kind is t.Resumed:
                await self._invoke(b.resumed, self, item.data)
            elif kind is t.TicketReceived:
                await self._invoke(b.nst_received, self, item.ticket)
            elif kind is t.LocalAddressChanged:
                await self._invoke(b.local_address_changed, self, item.address)
        except Exception as exc:
            self._failed(exc, kind)

    def _failed(self, exc: Exception, kind: type) -> None:
        """A callback raised: Reject and Stop close as asked, anything else is a crash of this connection."""
        b = self.behaviour
        if isinstance(exc, Reject):
            self._dead = True
            if self._supervisor is not None:
                self._supervisor._rejected(self)
            refuse = getattr(self._tconn, "refuse", None)
            if refuse is not None and self.state == "handshaking":
                self.state = "closing"
                refuse(exc.reason or "refused")
            else:
                self._close_for(exc.code, exc.reason)
        elif isinstance(exc, Stop):
            self._dead = True
            self._close_for(exc.code, exc.reason)
        elif isinstance(exc, t.ConnectionGone) and (
            exc.connection is self or (exc.connection is None and self._gone())
        ):
            # the connection ended while the callback ran (its Closed is queued behind this item); a
            # ConnectionGone about some other connection is the behaviour's own error: a crash, below
            what = f"{type(b).__name__} handled {kind.__name__.lstrip('_')}"
            peer_log(log, "connection.gone", "connection %d ended while %s: %s", self.id, what, exc)
        else:
            self._dead = True
            self.callback_errors += 1
            # a peer may be able to make a buggy behaviour crash on every connection: the traceback matters, but
            # the peer must not be able to fill the log with it
            limited_log(
                log,
                logging.ERROR,
                "behaviour.crash",
                "behaviour %s crashed on connection %d (%s); closing it with an internal error",
                type(b).__name__,
                self.id,
                kind.__name__.lstrip("_"),
                exc_info=exc,
            )
            if self.state not in ("closing", "closed"):
                self.state = "closing"
                self._tconn.abort(f"internal error in {type(b).__name__}")

    def _close_for(self, code: int, reason: str) -> None:
        if self.state not in ("closing", "closed"):
            self.state = "closing"
            self._tconn.close(code, reason)

    async def _finish(self, event: t.Closed) -> None:
        try:
            await self._invoke(self.behaviour.closed, self, event.props)
        except Exception as exc:
            self.callback_errors += 1
            name = type(self.behaviour).__name__
            limited_log(log, logging.ERROR, "behaviour.crash", "behaviour %s crashed in closed()", name, exc_info=exc)
        finally:
            for item in self._mailbox:
                if type(item) is _Call and not item.future.done():
                    item.future.set_exception(ConnectionClosed(f"connection {self.id} closed"))
            self._mailbox.clear()
            if not self._closed_future.done():
                self._closed_future.set_result(event.props)


class _Resume:
    """A callback that started eagerly and suspended: the task drives it to the end."""

    __slots__ = ("blocker", "coro")

    def __init__(self, coro: Coroutine[Any, Any, None], blocker: Any) -> None:
        self.coro = coro
        self.blocker = blocker

    def __await__(self) -> Generator[Any, Any, None]:
        coro, blocker = self.coro, self.blocker
        while True:
            try:
                yield blocker
            except BaseException as exc:  # cancellation and the like go to the callback
                try:
                    blocker = coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                blocker = coro.send(None)
            except StopIteration:
                return


class _StreamClosed:
    __slots__ = ("done", "stream")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.done = False


_INIT = object()

#: notifications a peer can repeat as often as it likes (and whose latest value is all that matters): one of each
#: kind (per stream) waits at a time
_NOTES = frozenset(
    {
        t.StreamsAvailable,
        t.PeerNeedsStreams,
        t.AddressChanged,
        t.PathChanged,
        t.StopSending,
        t.StreamReset,
        t.TicketReceived,
        t.DatagramStateChanged,
    }
)
#: mailbox items with accounting to undo as they leave it
_COUNTED = _NOTES | {t.StreamData, t.DatagramReceived}


def _note_key(item: Any) -> Any:
    kind = type(item)
    if kind is t.PeerNeedsStreams:
        return (kind, item.unidirectional)
    if kind is t.StopSending or kind is t.StreamReset:
        return (kind, item.stream_id)
    if kind is t.PathChanged:
        return (kind, item.address)
    return kind


def _awaiting(result: Any) -> Any:
    """The iterator that drives a callback's awaitable result, or None for a plain value (ignored)."""
    if type(result) is _Coroutine:
        return result
    if inspect.isawaitable(result):
        return result.__await__()
    return None


async def _probe() -> None:
    pass


_coro = _probe()
_Coroutine = type(_coro)
_coro.close()
