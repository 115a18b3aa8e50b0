"""Running a connection's callbacks: one at a time, in the order their events came.

The transport hands neutral events to ``deliver``. When nothing is queued the callback runs at once (eager
dispatch); otherwise the event waits in the mailbox (``mux.mailbox``) for the connection's task, which takes the
items out in order and calls the behaviour. A callback that raises is handled here: Reject and Stop close as
asked, anything else is a crash of that connection only.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from asyncio.tasks import _enter_task, _leave_task
from asyncio.tasks import current_task as _current_task
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from mux import transport as t
from mux.behaviour import ConnectionBehaviour, Reject, Stop
from mux.logs import limited_log, peer_log
from mux.mailbox import _COUNTED, _INIT, ConnectionClosed, Mailbox, _Call, _Info, _NewConn, _Resume, _StreamClosed
from mux.stream import Stream

if TYPE_CHECKING:
    from mux.connection import Connection, Supervisor

log = logging.getLogger("mux.connection")


class Dispatcher(Mailbox):
    """The callback-running half of a connection (``mux.connection.Connection`` is one)."""

    __slots__ = (
        "_closed_future",
        "_closing",
        "_loop",
        "_opts",
        "_reply",
        "_sent",
        "_streams",
        "_supervisor",
        "_task",
        "behaviour",
        "bytes_in",
        "callback_errors",
        "id",
        "state",
    )

    id: int
    state: str
    bytes_in: int
    callback_errors: int
    behaviour: ConnectionBehaviour
    _supervisor: Supervisor | None
    _opts: dict[str, Any]
    #: the transport's ``reply_now``, when it has one: called as a hot-path callback returns, so a reply leaves
    #: before the bookkeeping after it
    _reply: Callable[[], None] | None
    _streams: dict[int, Stream]
    _closing: dict[int, _StreamClosed] | None
    _loop: asyncio.AbstractEventLoop
    _task: asyncio.Task[None]
    _sent: asyncio.Future[None]
    _closed_future: asyncio.Future[dict[str, Any]] | None

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
            reply = self._reply
            if reply is not None:
                reply()
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

    def _gone(self) -> bool:
        return self.state in ("closing", "closed") or self._tconn.finished

    def _maybe_stream_closed(self, stream: Stream) -> None:
        if stream.send_done and stream.recv_done and not stream.closed:
            stream.closed = True
            item = _StreamClosed(stream)
            if self._streams.get(stream.id) is stream:
                # forgotten at once: an event for this id from now on belongs to a new stream (``_close_first``)
                del self._streams[stream.id]
                if self._closing is None:
                    self._closing = {}
                self._closing[stream.id] = item
            self._push(item)

    async def _close_first(self, stream_id: int) -> None:
        """A new stream of ``stream_id`` starts while the previous one's ``stream_closed`` still waits in the
        mailbox: that runs now, so a behaviour keyed by stream id sees the old stream end before the new begins."""
        item = self._closing.pop(stream_id, None) if self._closing else None
        if item is not None and not item.done:
            item.done = True
            await self._invoke(self.behaviour.stream_closed, item.stream, {})

    def _recv_finished(self, stream: Stream) -> None:
        stream.recv_done = True
        self._maybe_stream_closed(stream)

    def _on_transport_closed(self, event: t.Closed) -> None:
        """Immediate effects of the end (the connection's own: its timers and waiting senders)."""
        raise NotImplementedError

    def _stream_for(self, stream_id: int, props: dict[str, Any] | None = None) -> tuple[Stream, bool]:
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream, False
        # a message transport may say in the first event's props (SCTP: ids are reused, one use may be one-way)
        unidirectional = props.get("unidirectional") if props else None
        stream = Stream(
            cast("Connection", self),
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
        loop = asyncio.get_running_loop()
        flush: Callable[[], None] | None = getattr(self._tconn, "flush", None)
        while True:
            mailbox = self._mailbox
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
                if self._mailbox:
                    continue  # flushing can deliver events (an abort's Closed) straight back to us
            # empty: an idle connection holds no queue (``_push`` makes the next), nor does this frame, nor the last
            # item (often the new_conn props: later events tend to run eagerly, never through here)
            mailbox = self._mailbox = item = None
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
                    self._supervisor._connected(cast("Connection", self))
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
                    closing = self._closing
                    if closing is not None and closing.get(stream.id) is item:
                        del closing[stream.id]
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
                self._supervisor._rejected(cast("Connection", self))
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
            for item in self._mailbox or ():
                if type(item) is _Call and not item.future.done():
                    item.future.set_exception(ConnectionClosed(f"connection {self.id} closed"))
            self._mailbox = None
            future = self._closed_future
            if future is None:
                future = self._closed_future = self._loop.create_future()
            if not future.done():
                future.set_result(event.props)


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
