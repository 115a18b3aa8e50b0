"""Whole user messages out of received I-DATA chunks (RFC 8260), and what they cost: the interleaving counterpart of
``reassembly.Reassembly``, with the same interface, so the association holds one or the other.

**Messages, not TSN runs.** With I-DATA the fragments of different messages interleave freely in TSN order, so a
message is found by its key (stream, U bit, MID) and its fragments by FSN: the first (B) is FSN 0, the last (E)
says how many there are. A fragment costs one dict insert; a message is taken out once FSN 0..E are all here,
which its count says in O(1) (FSNs are checked distinct and at most E's), at one step per fragment, once.

**Order.** Ordered messages go up in MID order per stream (32-bit serial numbers, unwrapped here into plain ints
that keep growing); one that completes early waits. Unordered messages go up as they complete.

**I-FORWARD-TSN** (RFC 8260 §2.3.1) names, per stream and U bit, the largest MID abandoned. Fragments are dropped
by that key only, never by TSN: unlike DATA, a live message may hold fragments below the new cumulative TSN. For an
ordered stream, what waited up to the MID goes up and the stream expects the MID after it; partial messages up
to it are dropped. For unordered messages, partial ones up to the MID are dropped and a *floor* remembers the MID,
so a late fragment of an abandoned message cannot start a message that would never complete. Each stream's held
messages sit in a heap by unwrapped MID, so a forward pops exactly what it drops or delivers: O(log n) per
message, O(1) per entry that drops nothing, whatever a peer sends.

**Accounting** is ``Reassembly``'s: ``held`` is everything received and not yet consumed (``consumed``), charged
at its bytes plus ``CHUNK_COST`` per held fragment or ``MESSAGE_COST`` per message waiting or delivered;
``assembling`` the part still here; ``fragment_bytes`` the user bytes in partial messages. The charges are the
measured worst cases (tests/test_sctp_idata.py, tracemalloc), one new message per fragment included.
"""

from __future__ import annotations

from collections.abc import Iterable
from heapq import heapify, heappop, heappush
from typing import Any

from mux.sctp import events as ev
from mux.sctp.chunks import IDataChunk
from mux.sctp.rx.reassembly import CHUNK_COST, MESSAGE_COST, BadFragments

__all__ = ["CHUNK_COST", "MESSAGE_COST", "BadFragments", "InterleavedReassembly", "TooLarge"]

MASK = 0xFFFFFFFF
HALF = 0x80000000
#: an unordered floor this far behind the MIDs arriving is dropped: no sender has that many messages in flight
_FLOOR_EXPIRY = 0x40000000


class TooLarge(BadFragments):
    """One message's fragments hold more than the receive window: it can never complete."""


class _Partial(dict[int, bytes]):
    """One message's fragments so far, by FSN (a dict itself: one object per message, not two); ``end`` is its
    last fragment's FSN once that came (-1 before), ``ppid`` its first fragment's, ``nbytes`` their bytes."""

    __slots__ = ("end", "nbytes", "ppid")

    def __init__(self) -> None:
        super().__init__()
        self.end = -1
        self.ppid = 0
        self.nbytes = 0


class _Lane:
    """What one stream holds for one U bit: partial messages, complete ordered ones waiting for an earlier MID, and
    a heap of their unwrapped MIDs (entries whose message is gone are skipped when they surface)."""

    __slots__ = ("heap", "partial", "ref", "waiting")

    def __init__(self, ref: int) -> None:
        self.partial: dict[int, _Partial] = {}
        self.waiting: dict[int, tuple[bytes, int]] = {}
        self.heap: list[int] = []
        #: unordered lanes unwrap MIDs near this one (the highest seen); ordered ones use the stream's next MID
        self.ref = ref


def _unwrap(mid: int, ref: int) -> int:
    """``mid`` as the plain int nearest ``ref`` (RFC 1982 serial arithmetic, 32 bits)."""
    d = (mid - ref) & MASK
    return ref + d if d < HALF else ref - ((ref - mid) & MASK)


class InterleavedReassembly:
    #: held fragments may belong to many messages at once: their total says nothing of what one message needs
    #: (the association's whole-window rule is ``Reassembly``'s; here ``limit`` is checked per message)
    one_message = False

    __slots__ = (
        "_events",
        "_next",
        "_nfrags",
        "_ordered",
        "_stats",
        "_streams",
        "_ufloor",
        "_unordered",
        "assembling",
        "fragment_bytes",
        "held",
        "limit",
        "opened",
    )

    def __init__(self, inbound_streams: int, events: list[Any], stats: dict[str, int], limit: int = 1 << 62) -> None:
        #: the most one message may hold (the receive window): a fragment taking one past it raises ``TooLarge``
        self.limit = limit
        #: bytes charged for everything received and not yet consumed (the window's complement)
        self.held = 0
        #: the part of ``held`` still here: fragments, and ordered messages waiting for an earlier MID
        self.assembling = 0
        #: user bytes in partial messages
        self.fragment_bytes = 0
        self._nfrags = 0
        n = max(inbound_streams, 1)
        self._streams = n
        #: per stream, the next ordered MID expected, unwrapped
        self._next = [0] * n
        #: per inbound stream, 1 once a chunk arrived on it since its last reset (kept by the association, as with
        #: ``Reassembly``)
        self.opened = bytearray(n)
        self._ordered: dict[int, _Lane] = {}
        self._unordered: dict[int, _Lane] = {}
        #: per stream, the largest unordered MID abandoned (wire value): fragments at or below it are stale
        self._ufloor: dict[int, int] = {}
        self._events = events
        self._stats = stats

    @property
    def fragments(self) -> int:
        return self._nfrags

    def reset(self, inbound_streams: int) -> None:
        """The peer restarted: drop what is held here; what the application holds stays charged until consumed."""
        self.held -= self.assembling
        self.assembling = 0
        self.fragment_bytes = 0
        self._nfrags = 0
        self._ordered.clear()
        self._unordered.clear()
        self._ufloor.clear()
        self.set_streams(inbound_streams)

    def set_streams(self, inbound_streams: int) -> None:
        n = max(inbound_streams, 1)
        self._streams = n
        self._next = [0] * n
        self.opened = bytearray(n)

    def grow(self, inbound_streams: int) -> None:
        """RFC 6525 Add Streams: more inbound streams; the existing ones keep their state."""
        n = max(inbound_streams, 1) - self._streams
        if n > 0:
            self._streams += n
            self._next.extend([0] * n)
            self.opened.extend(bytes(n))

    def used(self, sid: int) -> bool:
        """Whether ``sid`` delivered an ordered message, or holds a message, since it last started over."""
        return self._next[sid] != 0 or sid in self._ordered or sid in self._unordered

    def reset_streams(self, streams: Iterable[int]) -> None:
        """RFC 6525 incoming SSN reset (with I-DATA, RFC 8260 §2.3.2): both MID sequences of each stream start
        over at 0.

        Call it once every TSN up to the request's Sender's Last Assigned TSN has arrived; anything still held on
        those streams then belongs to the old numbering and can never complete or go up, so it is dropped.
        """
        for sid in streams:
            if not 0 <= sid < self._streams:
                continue
            self._next[sid] = 0
            self.opened[sid] = 0
            self._ufloor.pop(sid, None)
            for lanes in (self._ordered, self._unordered):
                lane = lanes.pop(sid, None)
                if lane is not None:
                    for msg in lane.partial.values():
                        self._drop(msg)
                    for data, _ppid in lane.waiting.values():
                        self.held -= len(data) + MESSAGE_COST
                        self.assembling -= len(data) + MESSAGE_COST

    def consumed(self, nbytes: int) -> None:
        """The application is done with one delivered message of ``nbytes``."""
        self.held -= nbytes + MESSAGE_COST

    def _count(self, key: str) -> None:
        self._stats[key] = self._stats.get(key, 0) + 1

    # -- input ------------------------------------------------------------------------------------------------

    def message(self, c: IDataChunk) -> None:
        """A whole message in one chunk (B and E set)."""
        if c.unordered:
            if self._ufloor:
                self._touch_floor(c.stream_id, c.mid)
            self.deliver(c.stream_id, c.data, c.ppid, True)
        else:
            self.ordered(c.stream_id, c.mid, c.data, c.ppid)

    def fragment(self, t: int, c: IDataChunk) -> None:
        """Hold fragment ``c`` (``t``, its unwrapped TSN, is not needed here: the interface is ``Reassembly``'s) and
        take out the message it completes, if any. Raises ``BadFragments`` when its FSN contradicts the message's
        other fragments; a fragment of a message already delivered or abandoned, or one repeated under another
        TSN, is dropped and counted."""
        sid = c.stream_id
        mid = c.mid
        beginning = c.beginning
        fsn = 0 if beginning else c.fsn
        if not beginning and fsn == 0:
            raise BadFragments("a fragment after the first with FSN 0")
        if c.unordered:
            if self._ufloor and self._touch_floor(sid, mid):
                self._count("stale_fragments")
                return
            lane = self._unordered.get(sid)
            if lane is None:
                lane = self._unordered[sid] = _Lane(mid)
            u = _unwrap(mid, lane.ref)
            if u > lane.ref:
                lane.ref = u
        else:
            nxt = self._next[sid]
            d = (mid - nxt) & MASK
            if d >= HALF:
                self._count("stale_fragments")  # its message went up or was skipped already
                return
            u = nxt + d
            lane = self._ordered.get(sid)
            if lane is None:
                lane = self._ordered[sid] = _Lane(0)
            elif u in lane.waiting:
                self._count("duplicate_mids")  # that message is complete already
                return
        msg = lane.partial.get(u)
        if msg is None:
            msg = lane.partial[u] = _Partial()
            heappush(lane.heap, u)
        if fsn in msg:
            self._count("duplicate_fsns")  # the same fragment again under another TSN
            return
        end = msg.end
        if c.ending:
            # once per message (a second E is refused), so looking at every FSN held costs O(1) per fragment
            if end >= 0 or (msg and max(msg) > fsn):
                raise BadFragments("a last fragment before another fragment of its message")
            msg.end = end = fsn
        elif end >= 0 and fsn > end:
            raise BadFragments("a fragment after its message's last one")
        data = c.data
        cost = len(data) + CHUNK_COST
        self.held += cost
        self.assembling += cost
        self.fragment_bytes += len(data)
        self._nfrags += 1
        msg[fsn] = data
        msg.nbytes += len(data)
        if beginning:
            msg.ppid = c.ppid
        if msg.nbytes > self.limit:
            raise TooLarge(f"a message of more than {self.limit} bytes")
        if end < 0 or len(msg) <= end:
            return
        # FSNs 0..end are all here (distinct, none above end): the message is complete
        del lane.partial[u]
        whole = b"".join([msg[i] for i in range(end + 1)])
        self._release_parts(len(msg), len(whole))
        if c.unordered:
            self._tidy_unordered(sid, lane)
            self.deliver(sid, whole, msg.ppid, True)
        else:
            self._complete_ordered(sid, lane, u, whole, msg.ppid)

    def _release_parts(self, n: int, nbytes: int) -> None:
        released = nbytes + n * CHUNK_COST
        self.held -= released
        self.assembling -= released
        self.fragment_bytes -= nbytes
        self._nfrags -= n

    def _drop(self, msg: _Partial) -> None:
        self._release_parts(len(msg), sum(len(p) for p in msg.values()))

    def _complete_ordered(self, sid: int, lane: _Lane, u: int, data: bytes, ppid: int) -> None:
        nxt = self._next[sid]
        if u != nxt:
            cost = len(data) + MESSAGE_COST
            self.held += cost
            self.assembling += cost
            lane.waiting[u] = (data, ppid)  # its heap entry stays: it was pushed with the first fragment
            return
        self.deliver(sid, data, ppid, False)
        self._next[sid] = nxt + 1
        self._release(sid, lane)

    def _release(self, sid: int, lane: _Lane) -> None:
        """Deliver the messages waiting on ``sid`` from its next MID on while they are consecutive; then forget what
        lies below it (a partial message there can never go up: a broken peer sent its MID whole too) and the
        lane itself once it holds nothing."""
        waiting = lane.waiting
        nxt = self._next[sid]
        if waiting:
            events, stats = self._events, self._stats
            while nxt in waiting:
                data, ppid = waiting.pop(nxt)
                self.assembling -= len(data) + MESSAGE_COST  # still held: now by the application
                stats["messages_received"] += 1
                events.append(ev.DataReceived(sid, data, ppid, False))
                nxt += 1
            self._next[sid] = nxt
        heap, partial = lane.heap, lane.partial
        while heap and heap[0] < nxt:
            msg = partial.pop(heappop(heap), None)
            if msg is not None:
                self._count("duplicate_mids")
                self._drop(msg)
        if not waiting and not partial:
            del self._ordered[sid]

    def _tidy_unordered(self, sid: int, lane: _Lane) -> None:
        partial = lane.partial
        if not partial:
            del self._unordered[sid]
            return
        heap = lane.heap
        while heap and heap[0] not in partial:
            heappop(heap)
        if len(heap) > 2 * len(partial) + 16:  # completions below a message that stays: compact
            heap[:] = list(partial)
            heapify(heap)

    def _touch_floor(self, sid: int, mid: int) -> bool:
        """True when unordered ``mid`` on ``sid`` is at or below the stream's floor (a message abandoned already);
        a floor far behind what arrives is forgotten."""
        floor = self._ufloor.get(sid)
        if floor is None:
            return False
        ahead = (mid - floor) & MASK
        if ahead == 0 or ahead >= HALF:
            return True
        if ahead >= _FLOOR_EXPIRY:
            del self._ufloor[sid]
        return False

    def forward(self, cum: int, skips: Iterable[tuple[int, bool, int]]) -> None:
        """I-FORWARD-TSN (RFC 8260 §2.3.1): for each (stream, unordered, MID) the peer abandoned every message of
        that kind up to MID. ``cum`` (the new cumulative TSN, unwrapped) is not needed: nothing is dropped by TSN.
        Streams we do not have are ignored."""
        streams = self._streams
        for sid, unordered, mid in skips:
            if not 0 <= sid < streams:
                continue
            if unordered:
                self._forward_unordered(sid, mid)
            else:
                self._forward_ordered(sid, mid)

    def _forward_ordered(self, sid: int, mid: int) -> None:
        nxt = self._next[sid]
        d = (mid - nxt) & MASK
        if d >= HALF:
            return  # already past it
        target = nxt + d
        lane = self._ordered.get(sid)
        if lane is not None:
            heap, waiting, partial = lane.heap, lane.waiting, lane.partial
            events, stats = self._events, self._stats
            while heap and heap[0] <= target:
                u = heappop(heap)
                w = waiting.pop(u, None)
                if w is not None:  # complete before the gap: goes up now, in MID order
                    data, ppid = w
                    self.assembling -= len(data) + MESSAGE_COST
                    stats["messages_received"] += 1
                    events.append(ev.DataReceived(sid, data, ppid, False))
                    continue
                msg = partial.pop(u, None)
                if msg is not None:
                    self._drop(msg)
        self._next[sid] = target + 1
        if lane is not None:
            self._release(sid, lane)

    def _forward_unordered(self, sid: int, mid: int) -> None:
        floor = self._ufloor.get(sid)
        if floor is not None and ((mid - floor) & MASK == 0 or (mid - floor) & MASK >= HALF):
            return  # not beyond what was forwarded already
        self._ufloor[sid] = mid
        lane = self._unordered.get(sid)
        if lane is None:
            return
        target = _unwrap(mid, lane.ref)
        heap, partial = lane.heap, lane.partial
        while heap and heap[0] <= target:
            msg = partial.pop(heappop(heap), None)
            if msg is not None:
                self._drop(msg)
        if not partial:
            del self._unordered[sid]

    # -- output -----------------------------------------------------------------------------------------------

    def deliver(self, sid: int, data: bytes, ppid: int, unordered: bool) -> None:
        self.held += len(data) + MESSAGE_COST
        self._stats["messages_received"] += 1
        self._events.append(ev.DataReceived(sid, data, ppid, unordered))

    def ordered(self, sid: int, mid: int, data: bytes, ppid: int) -> None:
        """Deliver a complete ordered message in MID order, or keep it until the ones before it have come."""
        nxt = self._next[sid]
        if mid == nxt & MASK and (not self._ordered or sid not in self._ordered):  # the common case, inlined
            self._next[sid] = nxt + 1
            self.held += len(data) + MESSAGE_COST
            self._stats["messages_received"] += 1
            self._events.append(ev.DataReceived(sid, data, ppid, False))
            return
        d = (mid - nxt) & MASK
        if d >= HALF:
            self._count("duplicate_mids")  # delivered or skipped already: a broken peer repeated it
            return
        lane = self._ordered.get(sid)
        if d == 0:
            self.deliver(sid, data, ppid, False)
            self._next[sid] = nxt + 1
            if lane is not None:
                self._release(sid, lane)
            return
        u = nxt + d
        if lane is None:
            lane = self._ordered[sid] = _Lane(0)
        elif u in lane.waiting or u in lane.partial:
            self._count("duplicate_mids")
            return
        cost = len(data) + MESSAGE_COST
        self.held += cost
        self.assembling += cost
        lane.waiting[u] = (data, ppid)
        heappush(lane.heap, u)
