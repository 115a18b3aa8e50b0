"""Stream schedulers (RFC 8260 §3): per-stream send queues and the choice of the stream each next chunk comes from.

The association's send queue (``SctpConfig.scheduler`` picks one): ``push``, ``take``, ``peek``, ``drop_message``,
``waiting``, ``message_ssn``, ``last_in``, ``set_streams``, ``clear``, ``bytes``, ``chunks``, for stream resets
``pause``, ``is_paused``, ``paused_on``, ``resume``, ``tail``, ``drop_stream``, ``paused``, and ``set_priority``,
``set_idata`` and ``set_budget``. The packet loop reads the next chunk as ``head.chunks[0]`` (``head`` is None
when nothing may go) and removes it with ``take()``.

* ``fcfs`` (§3.1): whole messages in the order they were queued, whatever their stream.
* ``rr`` (§3.2): the streams with data in turn. Without interleaving a stream's turn is one whole message; with it
  (I-DATA) one chunk, so a large message on one stream delays another stream's small message by one chunk.
* ``prio`` (§3.4): strictly by ``priority`` (0..65535, higher first: quicer's and msquic's stream ``priority``,
  default 0x7FFF), round robin among equals as ``rr``. With interleaving a higher stream's message preempts a lower
  one's between two chunks; without, at the end of the message.
* ``wfq`` (§3.6): weighted fair queueing, each stream's weight ``priority + 1``: backlogged streams share the
  bytes sent in proportion to their weights. A stream's virtual time grows by (chunk bytes + 16) / weight as it
  sends; the stream with the least goes next (ties: the one waiting longest); a stream that was idle starts at
  the virtual time of the stream being served, so idling earns no credit. Without interleaving the choice is
  made between messages, with it between chunks.

Without I-DATA a message's fragments must leave back to back, so every scheduler moves on only at a message's
end; with it they may interleave, and the *budget* (``set_budget``) keeps the messages of more than one chunk that
may be leaving at once within what the receiver can hold whole (a queue whose next message would go over waits,
out of the scheduling, until one ends; one-chunk messages never wait). A chunk gets its stream sequence number
(SSN, or with I-DATA its MID, 32 bits, with a separate counter for unordered messages) as its message's first
fragment leaves, so a message abandoned before it ever left leaves no hole.

**Stream reset** (RFC 6525): a stream being reset is *paused*. What was queued before
stays and leaves first (the reset request waits for its last chunk, ``tail``); what is queued after waits aside,
counted in ``bytes`` and ``chunks`` (and ``paused``) but out of the scheduler's way, until ``resume`` queues it
again, numbered from 0 when the peer performed the reset.

Picking costs O(1) (``fcfs``, ``rr``; ``prio`` per chunk, O(log levels) per message) or O(log streams) (``wfq``),
with no allocation per chunk. Resuming, dropping a stream's messages, reprioritising and dropping a message that
is not at the head cost O(streams): they are rare.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal

from mux.sctp.chunks import FLAG_B, FLAG_E, FLAG_I, FLAG_U, IDATA_HEADER
from mux.sctp.rx.reassembly import CHUNK_COST
from mux.sctp.tx.send_queue import DATAGRAMS, OutChunk

__all__ = [
    "DATAGRAMS",
    "DEFAULT_PRIORITY",
    "Scheduler",
    "SchedulerName",
    "StreamQueue",
    "encode_idata",
]

MASK16 = 0xFFFF
MASK32 = 0xFFFFFFFF
SchedulerName = Literal["fcfs", "rr", "prio", "wfq"]
#: msquic's default stream priority (quicer's ``priority`` stream option): the middle of 0..65535
DEFAULT_PRIORITY = 0x7FFF
#: WFQ: virtual time per byte at weight 1; a stream's cost per byte is this divided by its weight
WFQ_SCALE = 1 << 32
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
_BE = FLAG_B | FLAG_E
#: what a receiver is taken to charge per held fragment on top of its bytes, for the interleaving budget: our own
#: receiver's charge (``rx.reassembly.CHUNK_COST``), the same order as usrsctp's per-chunk buffer overhead
PEER_CHUNK_COST = CHUNK_COST


def encode_idata(c: OutChunk, immediate: bool = False) -> bytes:
    """``c`` as an I-DATA chunk (RFC 8260 §2.1): its ``ssn`` is the MID, and its ``ppid`` holds what the wire field
    holds, the PPID in a first fragment and the FSN in the others (``push`` puts it there under I-DATA)."""
    data = c.data
    n = 20 + len(data)
    flags = c.flags | FLAG_I if immediate else c.flags
    return b"".join((IDATA_HEADER.pack(64, flags, n, c.tsn, c.stream_id, 0, c.ssn, c.ppid), data, _PAD[n & 3]))


class StreamQueue:
    """One stream's chunks waiting to leave (or a lane's, such as ``DATAGRAMS``), and its scheduling state."""

    __slots__ = ("active", "busy", "chunks", "cost", "entry", "id", "mid", "parked", "priority")

    def __init__(self, key: int, priority: int) -> None:
        self.id = key
        self.chunks: deque[OutChunk] = deque()
        #: the SSN or MID of the message whose fragments are leaving
        self.mid = 0
        self.priority = priority
        #: taking part in the scheduling (it has chunks; with ``fcfs``, turns)
        self.active = False
        #: ``wfq``: [virtual finish time, tie-break, self], the heap entry, reused; cost per byte at its weight
        self.entry: list[Any] = [0, 0, self]
        self.cost = WFQ_SCALE // (priority + 1)
        #: interleaving budget: what its message in progress counts in ``Scheduler.started`` (0: none counted)
        self.busy = 0
        #: its next message waits for the budget (it takes no part meanwhile: ``Scheduler._parked``)
        self.parked = False

    def in_progress(self) -> bool:
        """Its next chunk continues a message that has begun to leave."""
        chunks = self.chunks
        return bool(chunks) and not chunks[0].flags & FLAG_B


#: the per-stream numbers of a scheduler that has queued nothing yet: shared, never written (``Scheduler._number``)
_NONE_YET: list[int] = []


class Scheduler:
    """What is common to every scheduler: the queues, cutting messages into chunks, numbering them as they leave,
    stream resets and the bookkeeping; the subclasses keep the queues that take part and pick the next one."""

    __slots__ = (
        "_mask",
        "_parked",
        "_paused",
        "_queues",
        "_ssn",
        "_streams",
        "_umid",
        "budget",
        "bytes",
        "chunks",
        "fragmentation_point",
        "gated",
        "head",
        "idata",
        "interleave",
        "paused",
        "started",
    )

    name: str = ""

    def __init__(self, streams: int, fragmentation_point: int, *, idata: bool = False) -> None:
        self.fragmentation_point = fragmentation_point
        self._streams = max(streams, 1)
        #: next SSN (MID with I-DATA) per stream for ordered messages, and next MID for unordered ones (I-DATA only):
        #: empty until the first message is queued (``_number``), as an idle association never needs them
        self._ssn: list[int] = _NONE_YET
        self._umid: list[int] = _NONE_YET
        self._queues: dict[int, StreamQueue] = {}
        #: the queue whose first chunk goes next, None when nothing may go: the packet loop reads
        #: ``head.chunks[0]`` (a ``peek()`` call costs more) and calls ``take()``
        self.head: StreamQueue | None = None
        #: user bytes and chunks waiting (paused ones included)
        self.bytes = 0
        self.chunks = 0
        #: per stream being reset, the chunks queued since: they wait for the reset to complete
        self._paused: dict[int, list[OutChunk]] = {}
        #: chunks waiting in ``_paused``
        self.paused = 0
        self.idata = False
        self.interleave = False
        self._mask = MASK16
        #: interleaving budget (``set_budget``): what the multi-chunk messages in progress may cost the receiver
        #: together (``started``); a queue whose next message would go over waits in ``_parked``
        self.budget = 0
        self.gated = False
        self.started = 0
        self._parked: list[StreamQueue] = []
        if idata:
            self.set_idata(True)

    def __bool__(self) -> bool:
        """Something may go now."""
        return self.head is not None

    # -- configuration ------------------------------------------------------------------------------------------

    def set_idata(self, on: bool, interleave: bool | None = None) -> None:
        """I-DATA was agreed (call it before anything leaves): 32-bit MIDs, FSNs in the chunks, and interleaving
        unless ``interleave`` says otherwise (``fcfs`` never interleaves). Messages already queued get FSNs now."""
        self.idata = on
        self._mask = MASK32 if on else MASK16
        self.interleave = on if interleave is None else (interleave and on)
        self.gated = self.interleave and self.budget > 0
        if on:
            for chunks in [*(q.chunks for q in self._queues.values()), *self._paused.values()]:
                index = 0
                for c in chunks:  # FSNs count from each message's first fragment
                    index = 0 if c.flags & FLAG_B else index + 1
                    if index:
                        c.ppid = index

    def set_budget(self, budget: int) -> None:
        """With interleaving, a message of more than one chunk starts only while the messages in progress (each
        counted at its bytes plus ``PEER_CHUNK_COST`` per chunk) and it stay within ``budget``, or when it would
        be the only one: the receiver must be able to hold every message it has begun whole, or none completes
        and its window stays full for ever (RFC 8260 leaves this to the sender). One-chunk messages never wait.
        Call it before anything leaves; 0 turns it off."""
        self.budget = max(budget, 0)
        self.gated = self.interleave and self.budget > 0
        if self.gated:  # messages queued before the association was up: count them, or make them wait
            for q in list(self._queues.values()):
                if q.active and q.chunks and not q.busy and not self._reserve(q):
                    self._deactivate(q)
                    q.parked = True
                    self._parked.append(q)

    def set_streams(self, streams: int) -> None:
        """The number of outbound streams was negotiated (or grew, RFC 6525): queued messages keep their numbers."""
        n = self._streams = max(streams, 1)
        if self._ssn is not _NONE_YET:
            self._ssn = (self._ssn + [0] * n)[:n]
            self._umid = (self._umid + [0] * n)[:n]

    def _number(self) -> None:
        """Make the per-stream numbers: a message is about to be queued."""
        n = self._streams
        self._ssn = [0] * n
        self._umid = [0] * n

    def clear(self, streams: int) -> None:
        """The peer restarted: everything queued is gone, numbering starts over (priorities stay)."""
        for q in self._queues.values():
            q.chunks.clear()
            q.active = q.parked = False
            q.entry[0] = q.busy = 0
        self._forget_all()
        self._parked.clear()
        self.started = 0
        self._paused.clear()
        self.head = None
        self.bytes = self.chunks = self.paused = 0
        self._streams = max(streams, 1)
        self._ssn = self._umid = _NONE_YET

    def set_priority(self, key: int, priority: int) -> None:
        """quicer's stream ``priority`` (0..65535, higher first); ``prio`` and ``wfq`` use it."""
        if not 0 <= priority <= 0xFFFF:
            raise ValueError(f"priority must be 0..65535, got {priority}")
        q = self._queue(key)
        if priority != q.priority:
            self._reprioritise(q, priority)

    def priority(self, key: int) -> int:
        q = self._queues.get(key)
        return q.priority if q is not None else DEFAULT_PRIORITY

    # -- queueing -----------------------------------------------------------------------------------------------

    def _queue(self, key: int) -> StreamQueue:
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = StreamQueue(key, DEFAULT_PRIORITY)
        return q

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
        ppid &= MASK32
        if self._ssn is _NONE_YET:
            self._number()
        if self._paused and lane is None and stream_id in self._paused:
            self._push_paused(stream_id, data, ppid, base, max_rexmit, expires)
            return
        key = stream_id if lane is None else lane
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = StreamQueue(key, DEFAULT_PRIORITY)
        n = len(data)
        frag = self.fragmentation_point
        chunks = q.chunks
        if n <= frag:
            chunks.append(OutChunk(stream_id, ppid, data, base | FLAG_B | FLAG_E, max_rexmit, expires))
            self.chunks += 1
        else:
            self.chunks += self._cut(chunks, stream_id, data, ppid, base, max_rexmit, expires)
        self.bytes += n
        if not q.active and not q.parked:
            self._admit(q)

    def _cut(
        self,
        into: deque[OutChunk] | list[OutChunk],
        stream_id: int,
        data: bytes,
        ppid: int,
        base: int,
        max_rexmit: int,
        expires: float,
    ) -> int:
        """Append ``data``'s chunks to ``into``; returns how many."""
        n = len(data)
        frag = self.fragmentation_point
        view = memoryview(data)
        idata = self.idata
        fsn = 0
        for off in range(0, n, frag):
            flags = base | (FLAG_B if off == 0 else 0) | (FLAG_E if off + frag >= n else 0)
            field = fsn if fsn and idata else ppid  # I-DATA: a first fragment's field is the PPID, the others' FSN
            into.append(OutChunk(stream_id, field, bytes(view[off : off + frag]), flags, max_rexmit, expires))
            fsn += 1
        if fsn > 1:
            into[-fsn].total = n + fsn * PEER_CHUNK_COST
        return fsn

    def _push_paused(self, stream_id: int, data: bytes, ppid: int, base: int, max_rexmit: int, expires: float) -> None:
        count = self._cut(self._paused[stream_id], stream_id, data, ppid, base, max_rexmit, expires)
        self.chunks += count
        self.paused += count
        self.bytes += len(data)

    def recut(self, fragmentation_point: int) -> None:
        """The fragmentation point fell (PLPMTUD found a smaller path): chunks still queued that are larger are cut
        again to fit, their messages' FSNs renumbered under I-DATA. Chunks that have left keep their TSNs and
        sizes (RFC 9260 §6.9: a TSN's chunk is never re-fragmented)."""
        self.fragmentation_point = fragmentation_point
        for q in self._queues.values():
            if any(c.size > fragmentation_point for c in q.chunks):
                self.chunks += recut_chunks(q.chunks, fragmentation_point, self.idata)
        for waiting in self._paused.values():
            if any(c.size > fragmentation_point for c in waiting):
                added = recut_chunks(waiting, fragmentation_point, self.idata)
                self.chunks += added
                self.paused += added

    def peek(self) -> OutChunk | None:
        """The chunk that goes next, left in place."""
        head = self.head
        return head.chunks[0] if head is not None else None

    def take(self) -> OutChunk:
        """Remove and return the chunk ``peek`` gave, numbered; the scheduler moves on as its policy says.

        Each subclass inlines the numbering (a chunk's message gets its SSN or MID as its first fragment leaves;
        unordered DATA has none): a method call per chunk would cost ~15% of a take."""
        raise NotImplementedError

    def drop_message(self, key: int | None = None) -> list[OutChunk]:
        """PR-SCTP: remove the rest of the current message of queue ``key`` (by default the head's, whose turn it
        is; with interleaving, name the queue), up to its last fragment, marked abandoned; returns what was
        removed. Its SSN or MID, if its first fragment had left, stays used."""
        q = self.head if key is None else self._queues.get(key)
        if q is None:
            return []
        chunks = q.chunks
        dropped: list[OutChunk] = []
        while chunks:
            c = chunks.popleft()
            c.abandoned = True
            dropped.append(c)
            self.bytes -= c.size
            self.chunks -= 1
            if c.flags & FLAG_E:
                break
        if dropped and q.active:
            self._dropped(q)
        if self.gated:
            self._message_done(q)
        return dropped

    def waiting(self, key: int) -> int:
        """Chunks waiting in a lane (or a stream's queue)."""
        q = self._queues.get(key)
        return len(q.chunks) if q is not None else 0

    def last_in(self, key: int) -> OutChunk | None:
        """The chunk queued last in a lane (or a stream's queue)."""
        q = self._queues.get(key)
        return q.chunks[-1] if q is not None and q.chunks else None

    def message_ssn(self, stream_id: int) -> int:
        """The SSN or MID of the message whose fragments are leaving on ``stream_id``."""
        q = self._queues.get(stream_id)
        return q.mid if q is not None else 0

    def in_progress(self, key: int) -> bool:
        """A message of ``key`` has begun to leave and has more to go."""
        q = self._queues.get(key)
        return q is not None and q.in_progress()

    # -- the interleaving budget ----------------------------------------------------------------------------------

    def _reserve(self, q: StreamQueue) -> bool:
        """Count ``q``'s next message in ``started`` if it has more than one chunk and fits; False when it must
        wait. A message is counted from the moment its queue may send it until its last chunk is taken (or it is
        dropped), so no two queues can both start on the same room."""
        c = q.chunks[0]
        if c.flags & _BE != FLAG_B:
            return True
        started = self.started
        if started and started + c.total > self.budget:
            return False
        q.busy = c.total
        self.started = started + c.total
        return True

    def _admit(self, q: StreamQueue) -> None:
        """``q`` has chunks and takes no part: it does now, or its next message waits for the budget."""
        if not self.gated or self._reserve(q):
            self._activate(q)
        else:
            q.parked = True
            self._parked.append(q)

    def _release(self, q: StreamQueue) -> None:
        """What ``q``'s message counted goes; the queues that waited for room try again."""
        self.started -= q.busy
        q.busy = 0
        if self._parked:
            parked, self._parked = self._parked, []
            for p in parked:
                p.parked = False
                if p.chunks and not p.active:
                    self._admit(p)

    def _message_done(self, q: StreamQueue) -> None:
        """``q``'s current message ended (its last chunk taken, or dropped): what it counted goes, and ``q``'s next
        message is counted or waits."""
        if q.busy:
            self._release(q)
        if q.active and q.chunks and not self._reserve(q):
            self._deactivate(q)
            q.parked = True
            self._parked.append(q)

    # -- stream reset (RFC 6525) --------------------------------------------------------------------------------

    def tail(self, stream_id: int) -> OutChunk | None:
        """The last chunk queued on ``stream_id`` (paused ones aside): a reset of it waits until that one has left
        (it then has a TSN) or was given up (``abandoned``)."""
        return self.last_in(stream_id)

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
        """The reset of ``stream_id`` is over: with ``reset`` (the peer performed it) its SSNs (MIDs, both kinds)
        start again from 0 (RFC 8260 §2.3.2); what waited is queued again, in order."""
        waiting = self._paused.pop(stream_id, None)
        if reset and stream_id < len(self._ssn):
            self._ssn[stream_id] = 0
            self._umid[stream_id] = 0
        if not waiting:
            return
        q = self._queue(stream_id)
        q.chunks.extend(waiting)
        self.paused -= len(waiting)
        self._resumed(q, waiting)

    def drop_stream(self, stream_id: int) -> int:
        """Drop the unsent messages of ``stream_id`` (a stream reset: they will never be wanted), paused ones too,
        marked abandoned; the rest of a message whose first fragments already left stays, so the peer can
        complete it. Returns the user bytes dropped."""
        dropped = 0
        count = 0
        waiting = self._paused.get(stream_id)
        if waiting:
            for c in waiting:
                c.abandoned = True
                dropped += c.size
            count += len(waiting)
            self.paused -= len(waiting)
            waiting.clear()
        q = self._queues.get(stream_id)
        if q is not None and q.chunks:
            chunks = q.chunks
            keep: list[OutChunk] = []
            if q.in_progress():
                while chunks:
                    c = chunks.popleft()
                    keep.append(c)
                    if c.flags & FLAG_E:
                        break
            for c in chunks:
                c.abandoned = True
                dropped += c.size
            removed = len(chunks)
            chunks.clear()
            chunks.extend(keep)
            if removed:
                count += removed
                if q.busy and not keep:
                    self._release(q)  # its next message was counted, and is gone
                if q.active:
                    self._discarded(q, bool(keep))
                elif q.parked and not keep:
                    q.parked = False
                    self._parked.remove(q)
        self.bytes -= dropped
        self.chunks -= count
        return dropped

    # -- the policy: what the subclasses implement ----------------------------------------------------------------

    def _activate(self, q: StreamQueue) -> None:
        """``q`` has chunks now: it takes part (and may become the head, as the policy allows)."""
        raise NotImplementedError

    def _deactivate(self, q: StreamQueue) -> None:
        """``q`` (active, wherever it stands) stops taking part; the head moves on if it was the head."""
        raise NotImplementedError

    def _dropped(self, q: StreamQueue) -> None:
        """Active ``q``'s current message was removed, up to its end, as if its last chunk had been taken."""
        raise NotImplementedError

    def _discarded(self, q: StreamQueue, kept: bool) -> None:
        """Active ``q``'s messages that had not begun were removed (``kept``: the one leaving stays)."""
        if not kept:
            self._deactivate(q)

    def _resumed(self, q: StreamQueue, waiting: list[OutChunk]) -> None:
        """``waiting`` (whole messages) was appended to ``q``'s chunks."""
        if not q.active and not q.parked:
            self._admit(q)

    def _reprioritise(self, q: StreamQueue, priority: int) -> None:
        q.priority = priority
        q.cost = WFQ_SCALE // (priority + 1)

    def _forget_all(self) -> None:
        """Every queue stopped taking part (``clear``)."""
        raise NotImplementedError

    def _may_switch(self) -> bool:
        """The head may change now: interleaving, or its message has ended (or there is no head)."""
        head = self.head
        return head is None or self.interleave or not head.in_progress()


def recut_chunks(chunks: deque[OutChunk] | list[OutChunk], frag: int, idata: bool) -> int:
    """Cut the chunks of ``chunks`` larger than ``frag`` in place; returns how many chunks were added. A first
    fragment keeps B and the PPID, a last one E; a multi-chunk message's first chunk (if queued) gets its
    receiver cost (``total``) again; under I-DATA every fragment after the first is renumbered (its FSN), from the
    FSN of the first one queued when its message had begun to leave."""
    out: list[OutChunk] = []
    first: OutChunk | None = None  # the queued first chunk of the current message
    fsn = 0
    for c in chunks:
        flags = c.flags
        if flags & FLAG_B:
            first, fsn = None, 0
        elif idata and fsn == 0:  # a message that had begun to leave: go on from its FSN
            fsn = c.ppid
        n = c.size
        if n <= frag:
            pieces = [c]
        else:
            data = memoryview(c.data)
            pieces = []
            for off in range(0, n, frag):
                f = flags & ~_BE
                if off == 0:
                    f |= flags & FLAG_B
                if off + frag >= n:
                    f |= flags & FLAG_E
                pieces.append(OutChunk(c.stream_id, c.ppid, bytes(data[off : off + frag]), f, c.max_rexmit, c.expires))
        for piece in pieces:
            if piece.flags & FLAG_B:
                first = piece
                piece.total = 0
            elif idata:
                piece.ppid = fsn
            fsn += 1
            if first is not None:
                first.total += piece.size + PEER_CHUNK_COST
            out.append(piece)
    added = len(out) - len(chunks)
    chunks.clear()
    chunks.extend(out)
    return added
