"""The send queue as it was before ``mux.sctp.tx.scheduler`` replaced it: per-stream queues with a round-robin or
FCFS scheduler, one whole message per turn. Kept as the reference the schedulers must reproduce without I-DATA
(tests/test_sctp_idata.py) and as the baseline of bench/sctp_scheduler.py.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from mux.sctp.chunks import FLAG_B, FLAG_E, FLAG_U
from mux.sctp.tx.send_queue import OutChunk

MASK = 0xFFFFFFFF

Scheduler = Literal["fcfs", "rr"]


class _Queue:
    """One stream's chunks waiting to leave (for ``fcfs``, one queue holds every stream's)."""

    __slots__ = ("chunks", "id", "ssn")

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.chunks: deque[OutChunk] = deque()
        self.ssn = 0  # the SSN of the message whose fragments are leaving


def _own(stream_id: int) -> int:
    return stream_id


def _shared(stream_id: int) -> int:
    return -1


class SendQueue:
    __slots__ = (
        "_key",
        "_paused",
        "_queues",
        "_ssn",
        "active",
        "bytes",
        "chunks",
        "fragmentation_point",
        "paused",
        "scheduler",
    )

    def __init__(self, streams: int, fragmentation_point: int, scheduler: Scheduler = "rr") -> None:
        self.fragmentation_point = fragmentation_point
        self.scheduler: Scheduler = scheduler
        #: the queue a stream's messages go to: its own, or with ``fcfs`` the one shared queue
        self._key = _shared if scheduler == "fcfs" else _own
        self._ssn = [0] * max(streams, 1)
        self._queues: dict[int, _Queue] = {}
        #: streams with chunks waiting, the one sending now first; with ``rr`` it moves to the back at a message's
        #: end. The next chunk is ``active[0].chunks[0]``: the packet loop reads it there (``peek`` costs a call)
        self.active: deque[_Queue] = deque()
        #: user bytes and chunks waiting (paused ones included)
        self.bytes = 0
        self.chunks = 0
        #: per stream being reset, the chunks queued since: they wait for the reset to complete
        self._paused: dict[int, list[OutChunk]] = {}
        #: chunks waiting in ``_paused``
        self.paused = 0

    def __bool__(self) -> bool:
        return bool(self.active)

    def set_streams(self, streams: int) -> None:
        """The number of outbound streams was negotiated (or grew, RFC 6525): queued messages keep their SSNs."""
        n = max(streams, 1)
        self._ssn = (self._ssn + [0] * n)[:n]

    def clear(self, streams: int) -> None:
        """The peer restarted: everything queued is gone, SSNs start over."""
        self._queues.clear()
        self.active.clear()
        self._paused.clear()
        self.bytes = self.chunks = self.paused = 0
        self._ssn = [0] * max(streams, 1)

    def push(
        self,
        stream_id: int,
        data: bytes,
        ppid: int,
        unordered: bool,
        max_rexmit: int = -1,
        expires: float = 0.0,
        lane: int | None = None,
    ) -> None:
        """Queue one message on ``stream_id`` (already checked to exist), cut into chunks.

        ``max_rexmit`` (-1: no limit) and ``expires`` (0: never) are its PR-SCTP policy. ``lane`` queues it apart
        from its stream's messages (``DATAGRAMS``): it takes its turn with the streams, not behind them.
        """
        base = FLAG_U if unordered else 0
        if self._paused and lane is None and stream_id in self._paused:
            self._push_paused(stream_id, data, ppid & MASK, base, max_rexmit, expires)
            return
        key = self._key(stream_id) if lane is None else lane
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(key)
        chunks = queue.chunks
        if not chunks:
            self.active.append(queue)
        n = len(data)
        frag = self.fragmentation_point
        if n <= frag:
            chunks.append(OutChunk(stream_id, ppid & MASK, data, base | FLAG_B | FLAG_E, max_rexmit, expires))
            self.chunks += 1
        else:
            view = memoryview(data)
            ppid &= MASK
            for off in range(0, n, frag):
                flags = base | (FLAG_B if off == 0 else 0) | (FLAG_E if off + frag >= n else 0)
                piece = bytes(view[off : off + frag])
                chunks.append(OutChunk(stream_id, ppid, piece, flags, max_rexmit, expires))
            self.chunks += -(-n // frag)
        self.bytes += n

    def _push_paused(self, stream_id: int, data: bytes, ppid: int, base: int, max_rexmit: int, expires: float) -> None:
        paused = self._paused[stream_id]
        n = len(data)
        frag = self.fragmentation_point
        view = memoryview(data)
        for off in range(0, n, frag):
            flags = base | (FLAG_B if off == 0 else 0) | (FLAG_E if off + frag >= n else 0)
            paused.append(OutChunk(stream_id, ppid, bytes(view[off : off + frag]), flags, max_rexmit, expires))
        count = -(-n // frag)
        self.chunks += count
        self.paused += count
        self.bytes += n

    def peek(self) -> OutChunk | None:
        """The chunk that goes next, left in place."""
        active = self.active
        return active[0].chunks[0] if active else None

    def take(self) -> OutChunk:
        """Remove and return the chunk ``peek`` gave; at a message's end the scheduler moves on."""
        active = self.active
        queue = active[0]
        chunks = queue.chunks
        c = chunks.popleft()
        self.bytes -= c.size
        self.chunks -= 1
        flags = c.flags
        if not flags & FLAG_U:
            if flags & FLAG_B:
                sid = c.stream_id
                ssn = queue.ssn = self._ssn[sid]
                self._ssn[sid] = (ssn + 1) & 0xFFFF
            c.ssn = queue.ssn
        if not chunks:
            active.popleft()
        elif flags & FLAG_E and len(active) > 1:
            active.rotate(-1)  # round robin: the next stream's turn (fcfs has a single queue)
        return c

    def drop_message(self) -> list[OutChunk]:
        """PR-SCTP: remove the rest of the message at the head of the queue (whose turn it is), up to its last
        fragment; returns what was removed. Its SSN, if its first fragment had left, stays used."""
        active = self.active
        queue = active[0]
        chunks = queue.chunks
        dropped: list[OutChunk] = []
        while chunks:
            c = chunks.popleft()
            c.abandoned = True
            dropped.append(c)
            self.bytes -= c.size
            self.chunks -= 1
            if c.flags & FLAG_E:
                break
        if not chunks:
            active.popleft()
        elif len(active) > 1:
            active.rotate(-1)
        return dropped

    def last_in(self, lane: int) -> OutChunk | None:
        """The chunk queued last in a lane."""
        queue = self._queues.get(lane)
        return queue.chunks[-1] if queue is not None and queue.chunks else None

    def waiting(self, lane: int) -> int:
        """Chunks waiting in a lane (or a stream's queue)."""
        queue = self._queues.get(lane)
        return len(queue.chunks) if queue is not None else 0

    def message_ssn(self, stream_id: int) -> int:
        """The SSN of the message whose fragments are leaving on ``stream_id``."""
        return self._queues[self._key(stream_id)].ssn

    # -- stream reset (RFC 6525) --------------------------------------------------------------------------------

    def tail(self, stream_id: int) -> OutChunk | None:
        """The last chunk queued on ``stream_id`` (paused ones aside): a reset of it waits until that one has left
        (it then has a TSN) or was given up (``abandoned``)."""
        queue = self._queues.get(self._key(stream_id))
        if queue is None:
            return None
        for c in reversed(queue.chunks):
            if c.stream_id == stream_id:
                return c
        return None

    def pause(self, stream_id: int) -> None:
        """Messages queued on ``stream_id`` from now on wait for ``resume``."""
        self._paused.setdefault(stream_id, [])

    def is_paused(self, stream_id: int) -> bool:
        return stream_id in self._paused

    def paused_on(self, stream_id: int) -> int:
        """Chunks waiting for the reset of ``stream_id``."""
        waiting = self._paused.get(stream_id)
        return len(waiting) if waiting else 0

    def resume(self, stream_id: int, reset: bool) -> None:
        """The reset of ``stream_id`` is over: with ``reset`` (the peer performed it) its SSNs start again from 0;
        what waited is queued again, in order."""
        waiting = self._paused.pop(stream_id, None)
        if reset and stream_id < len(self._ssn):
            self._ssn[stream_id] = 0
        if not waiting:
            return
        key = self._key(stream_id)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(key)
        if not queue.chunks:
            self.active.append(queue)
        queue.chunks.extend(waiting)
        self.paused -= len(waiting)

    def drop_stream(self, stream_id: int) -> int:
        """Drop the unsent messages of ``stream_id`` (a stream reset: they will never be wanted), paused ones too;
        the rest of a message whose first fragments already left stays, so the peer can complete it. Returns the
        user bytes dropped."""
        dropped = 0
        count = 0
        waiting = self._paused.get(stream_id)
        if waiting:
            dropped += sum(c.size for c in waiting)
            count += len(waiting)
            self.paused -= len(waiting)
            for c in waiting:
                c.abandoned = True
            waiting.clear()
        queue = self._queues.get(self._key(stream_id))
        if queue is not None and queue.chunks:
            chunks = queue.chunks
            kept: deque[OutChunk] = deque()
            finishing = True  # the head may be the rest of a message that has begun to leave
            for c in chunks:
                if c.stream_id != stream_id:
                    kept.append(c)
                    finishing = False
                    continue
                if finishing and not c.flags & FLAG_B:
                    kept.append(c)
                    if c.flags & FLAG_E:
                        finishing = False
                    continue
                finishing = False
                c.abandoned = True
                dropped += c.size
                count += 1
            if count:
                queue.chunks = kept
                if not kept:
                    try:
                        self.active.remove(queue)
                    except ValueError:
                        pass
        self.bytes -= dropped
        self.chunks -= count
        return dropped
