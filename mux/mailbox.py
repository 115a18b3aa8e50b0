"""A connection's mailbox: the queue of what waits for the behaviour, and what keeps it bounded.

Whatever a peer sends, the queue stays bounded: stream data by the transport's receive window (credit returns
only as the behaviour consumes it), datagrams by ``DGRAM_INBOX``, and notifications a peer can repeat at will by
keeping one of each waiting. ``mux.dispatch`` takes the items out and calls the behaviour.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

from mux import transport as t

if TYPE_CHECKING:
    from mux.stream import Stream


#: datagrams waiting for ``dgram_recv`` may hold this much, each charged its length plus
#: ``DGRAM_COST`` (what a queued datagram costs in objects); beyond it datagrams are dropped and
#: counted: they are unreliable, and a peer must not fill memory by sending them faster than we read
DGRAM_INBOX = 256 * 1024
DGRAM_COST = 256


class ConnectionClosed(t.ConnectionGone):
    """The connection is closed (or closing) and cannot carry out the request."""


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


class Mailbox:
    """The queue half of a connection (``mux.connection.Connection`` is one)."""

    __slots__ = (
        "_dead",
        "_dgram_bytes",
        "_joined",
        "_mailbox",
        "_queued_data",
        "_queued_notes",
        "_tconn",
        "_waiter",
        "dgram_dropped",
        "idle",
        "inbox_bytes",
    )

    _tconn: t.TransportConnection
    _dead: bool
    _mailbox: deque[Any] | None
    _waiter: asyncio.Future[None] | None
    idle: bool
    inbox_bytes: int
    _dgram_bytes: int
    dgram_dropped: int
    _queued_data: dict[int, t.StreamData] | None
    _joined: dict[int, bytearray] | None
    _queued_notes: dict[Any, Any] | None

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
            notes = self._queued_notes
            if notes:
                # what comes after this data is about the stream as it is from now on (SCTP reuses ids: maybe a
                # new stream): a reset or stop-sending waiting from before must not swallow the next one
                sid = item.stream_id
                notes.pop((t.StreamReset, sid), None)
                notes.pop((t.StopSending, sid), None)
            if item.props is None:  # a byte stream (message transports give props per message)
                sid = item.stream_id
                waiting = self._queued_data
                if waiting is None:
                    waiting = self._queued_data = {}
                queued = waiting.get(sid)
                if queued is not None and not queued.fin:
                    if data:
                        joins = self._joined
                        if joins is None:
                            joins = self._joined = {}
                        joined = joins.get(sid)
                        if joined is None:
                            joined = joins[sid] = bytearray(queued.data)
                        joined += data
                    queued.fin = item.fin
                    return
                waiting[sid] = item
        elif kind is t.DatagramReceived:
            cost = len(item.data) + DGRAM_COST
            if self._dead or self._dgram_bytes + cost > DGRAM_INBOX:
                self.dgram_dropped += 1
                return
            self._dgram_bytes += cost
        elif kind in _NOTES:
            key = _note_key(item)
            notes = self._queued_notes
            if notes is None:
                notes = self._queued_notes = {}
            note = notes.get(key)
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
            notes[key] = item
        self._push(item)

    def _unqueue(self, item: Any) -> None:
        """``item`` leaves the mailbox: it no longer collects joins, and its bytes leave the inbox."""
        kind = type(item)
        if kind is t.StreamData:
            data_item: t.StreamData = item
            sid = data_item.stream_id
            waiting = self._queued_data
            if waiting is not None and waiting.get(sid) is item:
                del waiting[sid]
                joined = self._joined.pop(sid, None) if self._joined else None
                if joined is not None:
                    data_item.data = bytes(joined)
            self.inbox_bytes -= len(data_item.data)
        elif kind is t.DatagramReceived:
            self._dgram_bytes -= len(item.data) + DGRAM_COST
        elif kind in _NOTES:
            key = _note_key(item)
            notes = self._queued_notes
            if notes is not None and notes.get(key) is item:
                del notes[key]
                if not notes:
                    self._queued_notes = None  # a dict keeps its table once grown

    def _push(self, item: Any) -> None:
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = deque()
        mailbox.append(item)
        self.idle = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
