"""The four stream schedulers of RFC 8260 §3 on ``tx.scheduler``'s per-stream queues: ``rr`` round robin (§3.2),
``fcfs`` first come first served (§3.1), ``prio`` strict priority (§3.4), ``wfq`` weighted fair queueing (§3.6);
``tx.scheduler``'s docstring says how each chooses and what picking costs. ``make_scheduler`` builds the one
``SctpConfig.scheduler`` names.
"""

from __future__ import annotations

from collections import deque
from heapq import heapify, heappop, heappush, heapreplace
from typing import Any

from mux.sctp.chunks import FLAG_B, FLAG_E, FLAG_U
from mux.sctp.tx.scheduler import MASK32, Scheduler, StreamQueue
from mux.sctp.tx.send_queue import OutChunk

#: WFQ: bytes charged per chunk on top of its payload (its header), so no chunk is free
_WFQ_CHUNK = 16


class RoundRobin(Scheduler):
    """``rr``: the active queues in a ring, the head first; a turn is a message, or a chunk when interleaving."""

    __slots__ = ("active",)
    name = "rr"

    def __init__(self, streams: int, fragmentation_point: int, *, idata: bool = False) -> None:
        #: the queues taking part, the head first; None while none has data (a deque costs 760 bytes even empty)
        self.active: deque[StreamQueue] | None = None
        super().__init__(streams, fragmentation_point, idata=idata)

    def take(self) -> OutChunk:
        q = self.head
        assert q is not None
        chunks = q.chunks
        c = chunks.popleft()
        self.bytes -= c.size
        self.chunks -= 1
        flags = c.flags
        if flags & FLAG_B:
            sid = c.stream_id
            if not flags & FLAG_U:
                mid = self._ssn[sid]
                self._ssn[sid] = (mid + 1) & self._mask
            elif self.idata:
                mid = self._umid[sid]
                self._umid[sid] = (mid + 1) & MASK32
            else:
                mid = 0
            q.mid = mid
        c.ssn = q.mid
        active = self.active
        assert active is not None  # there is a head
        if flags & FLAG_E:
            if not chunks:
                q.active = False
                active.popleft()
                if active:
                    self.head = active[0]
                else:
                    self.head = self.active = None
            elif len(active) > 1:
                active.rotate(-1)  # the next stream's turn
                self.head = active[0]
            if self.gated:
                self._message_done(q)
        elif self.interleave and len(active) > 1:
            active.rotate(-1)
            self.head = active[0]
        return c

    def _activate(self, q: StreamQueue) -> None:
        q.active = True
        active = self.active
        if active is None:
            active = self.active = deque()
        active.append(q)
        if self.head is None:
            self.head = q

    def _deactivate(self, q: StreamQueue) -> None:
        q.active = False
        active = self.active
        assert active is not None  # q was in it
        if active[0] is q:
            active.popleft()
            if active:
                self.head = active[0]
            else:
                self.head = self.active = None
        else:
            active.remove(q)

    def _dropped(self, q: StreamQueue) -> None:
        active = self.active
        if not q.chunks:
            self._deactivate(q)
        elif q is self.head and active is not None and len(active) > 1:
            active.rotate(-1)
            self.head = active[0]

    def _forget_all(self) -> None:
        self.active = None


class Fcfs(Scheduler):
    """``fcfs``: one turn per message, in the order they were queued (a datagram's too); never interleaves. Here
    ``active`` means the queue has turns. Messages that waited for a stream reset take their turns on ``resume``."""

    __slots__ = ("_order",)
    name = "fcfs"

    def __init__(self, streams: int, fragmentation_point: int, *, idata: bool = False) -> None:
        #: one entry per message waiting, the head's first
        self._order: deque[StreamQueue] = deque()
        super().__init__(streams, fragmentation_point, idata=idata)

    def set_idata(self, on: bool, interleave: bool | None = None) -> None:
        super().set_idata(on, False)

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
        if self._paused and lane is None and stream_id in self._paused:
            Scheduler.push(self, stream_id, data, ppid, unordered, max_rexmit, expires, lane)
            return
        q = self._queue(stream_id if lane is None else lane)
        q.active = True  # so the base class does not call _activate: turns are per message here
        Scheduler.push(self, stream_id, data, ppid, unordered, max_rexmit, expires, lane)
        self._order.append(q)
        if self.head is None:
            self.head = q

    def take(self) -> OutChunk:
        q = self.head
        assert q is not None
        chunks = q.chunks
        c = chunks.popleft()
        self.bytes -= c.size
        self.chunks -= 1
        flags = c.flags
        if flags & FLAG_B:
            sid = c.stream_id
            if not flags & FLAG_U:
                mid = self._ssn[sid]
                self._ssn[sid] = (mid + 1) & self._mask
            elif self.idata:
                mid = self._umid[sid]
                self._umid[sid] = (mid + 1) & MASK32
            else:
                mid = 0
            q.mid = mid
        c.ssn = q.mid
        if flags & FLAG_E:
            order = self._order
            order.popleft()
            if not chunks:
                q.active = False
            self.head = order[0] if order else None
        return c

    def _activate(self, q: StreamQueue) -> None:
        raise AssertionError("fcfs queues take turns per message")  # pragma: no cover

    def _deactivate(self, q: StreamQueue) -> None:
        q.active = False
        self._order = order = deque(x for x in self._order if x is not q)
        if self.head is q:
            self.head = order[0] if order else None

    def _dropped(self, q: StreamQueue) -> None:
        """The message dropped was ``q``'s first: so is its turn, the earliest of ``q``'s in the order."""
        order = self._order
        if order[0] is q:
            order.popleft()
        else:
            order.remove(q)
        if not q.chunks:
            q.active = False
        if self.head is q:
            self.head = order[0] if order else None

    def _discarded(self, q: StreamQueue, kept: bool) -> None:
        """All of ``q``'s turns go but the leaving message's (it is the head's, the first in the order)."""
        if not kept:
            self._deactivate(q)
            return
        order = self._order
        first = order.popleft()
        self._order = order = deque(x for x in order if x is not q)
        order.appendleft(first)

    def _resumed(self, q: StreamQueue, waiting: list[OutChunk]) -> None:
        q.active = True
        order = self._order
        order.extend([q] * sum(1 for c in waiting if c.flags & FLAG_B))
        if self.head is None:
            self.head = order[0]

    def _forget_all(self) -> None:
        self._order.clear()


class Priority(Scheduler):
    """``prio``: a ring per priority level (the queues of one priority, the head first) and a max-heap of the
    levels that may have queues; the head comes from the highest level that has."""

    __slots__ = ("_cur", "_heap", "_in_heap", "_level", "_levels")
    name = "prio"

    def __init__(self, streams: int, fragmentation_point: int, *, idata: bool = False) -> None:
        self._levels: dict[int, deque[StreamQueue]] = {}
        self._heap: list[int] = []  # -priority, one entry per level in ``_in_heap``
        self._in_heap: set[int] = set()
        self._level: deque[StreamQueue] | None = None  # the head's level
        self._cur = -1  # its priority
        super().__init__(streams, fragmentation_point, idata=idata)

    def take(self) -> OutChunk:
        q = self.head
        assert q is not None
        chunks = q.chunks
        c = chunks.popleft()
        self.bytes -= c.size
        self.chunks -= 1
        flags = c.flags
        if flags & FLAG_B:
            sid = c.stream_id
            if not flags & FLAG_U:
                mid = self._ssn[sid]
                self._ssn[sid] = (mid + 1) & self._mask
            elif self.idata:
                mid = self._umid[sid]
                self._umid[sid] = (mid + 1) & MASK32
            else:
                mid = 0
            q.mid = mid
        c.ssn = q.mid
        level = self._level
        assert level is not None
        if flags & FLAG_E:
            if not chunks:
                q.active = False
                level.popleft()
            elif q.priority == self._cur:
                level.rotate(-1)  # round robin among equals
            else:
                level.popleft()
                self._enlist(q)  # reprioritised while its message was leaving
            if level and -self._heap[0] == self._cur:
                self.head = level[0]  # still the highest level: no need to look
            else:
                self._repick()
            if self.gated:
                self._message_done(q)
        elif self.interleave and len(level) > 1:
            level.rotate(-1)
            self.head = level[0]
        return c

    def _enlist(self, q: StreamQueue) -> None:
        p = q.priority
        level = self._levels.get(p)
        if level is None:
            level = self._levels[p] = deque()
        level.append(q)
        if p not in self._in_heap:
            self._in_heap.add(p)
            heappush(self._heap, -p)

    def _repick(self) -> None:
        heap, levels = self._heap, self._levels
        while heap:
            p = -heap[0]
            level = levels[p]
            if level:
                self._level = level
                self._cur = p
                self.head = level[0]
                return
            heappop(heap)
            self._in_heap.discard(p)
        self._level = None
        self._cur = -1
        self.head = None

    def _activate(self, q: StreamQueue) -> None:
        q.active = True
        self._enlist(q)
        if self.head is None or (q.priority > self._cur and self._may_switch()):
            self._repick()

    def _deactivate(self, q: StreamQueue) -> None:
        q.active = False
        if self.head is q:
            level = self._level  # not its priority's if that changed while its message was leaving
            assert level is not None
            level.popleft()
            self._repick()
        else:
            self._levels[q.priority].remove(q)

    def _dropped(self, q: StreamQueue) -> None:
        if not q.chunks:
            self._deactivate(q)
        elif q is self.head:
            level = self._level
            assert level is not None
            level.popleft()
            self._enlist(q)
            self._repick()

    def _reprioritise(self, q: StreamQueue, priority: int) -> None:
        if not q.active or (q is self.head and not self.interleave and q.in_progress()):
            super()._reprioritise(q, priority)  # the head moves to its new level as its message ends (``take``)
            return
        was_head = q is self.head
        self._levels[q.priority].remove(q)
        super()._reprioritise(q, priority)
        self._enlist(q)
        if was_head or self._may_switch():
            self._repick()

    def _forget_all(self) -> None:
        self._levels.clear()
        self._heap.clear()
        self._in_heap.clear()
        self._level = None
        self._cur = -1


class Wfq(Scheduler):
    """``wfq``: a heap of the active queues' entries by virtual finish time. Without interleaving the head keeps
    its turn to its message's end: queues that become active meanwhile wait in ``_pending``, off the heap."""

    __slots__ = ("_heap", "_pending", "_seq", "_vnow")
    name = "wfq"

    def __init__(self, streams: int, fragmentation_point: int, *, idata: bool = False) -> None:
        self._heap: list[list[Any]] = []
        self._pending: list[StreamQueue] = []
        self._seq = 0
        self._vnow = 0  # the virtual time of the queue being served
        super().__init__(streams, fragmentation_point, idata=idata)

    def take(self) -> OutChunk:
        q = self.head
        assert q is not None
        chunks = q.chunks
        c = chunks.popleft()
        self.bytes -= c.size
        self.chunks -= 1
        flags = c.flags
        if flags & FLAG_B:
            sid = c.stream_id
            if not flags & FLAG_U:
                mid = self._ssn[sid]
                self._ssn[sid] = (mid + 1) & self._mask
            elif self.idata:
                mid = self._umid[sid]
                self._umid[sid] = (mid + 1) & MASK32
            else:
                mid = 0
            q.mid = mid
        c.ssn = q.mid
        e = q.entry
        e[0] += (c.size + _WFQ_CHUNK) * q.cost
        heap = self._heap
        if flags & FLAG_E:
            if not chunks:
                q.active = False
                if heap[0] is e:
                    heappop(heap)
                else:
                    self._unheap(e)
            elif heap[0] is e:
                heapreplace(heap, e)  # sift its grown time down
            else:
                heapify(heap)
            if self._pending:
                self._retop()
            elif heap:
                top = heap[0]
                self._vnow = top[0]
                self.head = top[2]
            else:
                self.head = None
            if self.gated:
                self._message_done(q)
        elif self.interleave:
            heapreplace(heap, e)
            top = heap[0]
            self._vnow = top[0]
            self.head = top[2]
        return c  # without interleaving the heap is put right at the message's end

    def _unheap(self, e: list[Any]) -> None:
        heap = self._heap
        for i, x in enumerate(heap):
            if x is e:
                heap[i] = heap[-1]
                heap.pop()
                heapify(heap)
                return

    def _retop(self) -> None:
        heap = self._heap
        pending = self._pending
        while pending:
            heappush(heap, pending.pop().entry)
        if heap:
            top = heap[0]
            self._vnow = top[0]
            self.head = top[2]
        else:
            self.head = None

    def _activate(self, q: StreamQueue) -> None:
        q.active = True
        e = q.entry
        if e[0] < self._vnow:
            e[0] = self._vnow  # no credit for having been idle
        e[1] = self._seq
        self._seq += 1
        if not self._may_switch():
            self._pending.append(q)
            return
        heappush(self._heap, e)
        self._retop()

    def _deactivate(self, q: StreamQueue) -> None:
        q.active = False
        if q in self._pending:
            self._pending.remove(q)
            return
        self._unheap(q.entry)
        if self.head is q:
            self._retop()

    def _dropped(self, q: StreamQueue) -> None:
        if not q.chunks:
            self._deactivate(q)
        elif q is self.head:
            heapify(self._heap)
            self._retop()

    def _forget_all(self) -> None:
        self._heap.clear()
        self._pending.clear()
        self._vnow = 0
        self._seq = 0


SCHEDULERS: dict[str, type[Scheduler]] = {"fcfs": Fcfs, "rr": RoundRobin, "prio": Priority, "wfq": Wfq}


def make_scheduler(name: str, streams: int, fragmentation_point: int, *, idata: bool = False) -> Scheduler:
    """The scheduler called ``name`` (``SctpConfig.scheduler``); ValueError for an unknown name."""
    cls = SCHEDULERS.get(name)
    if cls is None:
        raise ValueError(f"unknown stream scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}")
    return cls(streams, fragmentation_point, idata=idata)
