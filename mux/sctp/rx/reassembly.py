"""Whole user messages out of received DATA chunks, in SSN order per stream where ordered, and what they cost.

**Fragments** (RFC 9260 §6.9) carry consecutive TSNs from their message's B chunk to its E chunk. Held fragments
form *runs*: maximal stretches of consecutive TSNs. Each run knows its first E and its last B. Because a message is
taken out the moment it is complete, every E in a run comes before every B in it, so a fragment arriving at TSN t
can complete one message at most: from the last B of the run ending at t - 1 (or t itself) to the first E of the
run starting at t + 1 (or t). Both are found in O(1) from the two neighbouring runs, never by walking fragments,
and taking a message out costs one step per fragment, once. Whatever order a peer sends fragments in, each costs
O(1) amortised. (A run's first E matters only for a fragment arriving just before it, its last B only for one just
after it; next to a TSN that is gone, neither can happen, so neither needs updating there.)

**Accounting.** ``held`` charges everything received and not yet consumed by the application (``consumed``) at what
it costs in memory: its bytes plus ``CHUNK_COST`` per held fragment, or ``MESSAGE_COST`` per message waiting for an
earlier SSN or delivered and not yet consumed (the chunk, event and mailbox objects around the bytes). The
association advertises ``recbuf - held`` as its window, so tiny fragments or messages exhaust a peer's window when
they exhaust the memory set aside for it, instead of costing eight times what they are charged.

**Stream reset** (RFC 6525): ``reset_streams`` starts a stream over at SSN 0. ``opened`` marks the streams the peer
sent on since it last reset them, when the association announces them (``StreamOpened``).
"""

from __future__ import annotations

from array import array
from typing import Any

from mux.sctp import events as ev
from mux.sctp.chunks import DataChunk

#: bytes charged per held fragment on top of its payload: the parsed DataChunk, its bytes object, its entries in
#: the fragment and run maps and, at worst, a run of its own (measured with tracemalloc, tests/test_sctp_rx.py)
CHUNK_COST = 448
#: bytes charged per complete message on top of its payload, while it waits for an earlier SSN or for the
#: application: its bytes object, the DataReceived event, the mailbox's StreamData and props dict (measured too)
MESSAGE_COST = 384


class _Run:
    """Held fragments with consecutive TSNs ``start``..``end``; ``first_e``/``last_b`` are TSNs or None."""

    __slots__ = ("end", "first_e", "last_b", "start")

    def __init__(self, start: int, end: int, first_e: int | None, last_b: int | None) -> None:
        self.start = start
        self.end = end
        self.first_e = first_e
        self.last_b = last_b


class BadFragments(Exception):
    """The fragments of one message disagree on stream, ordering or SSN: a protocol violation."""


def _ssns(streams: int) -> array[int]:
    """Next SSN per inbound stream, all 0: 16-bit numbers, 2 bytes each (a list of ints costs 8)."""
    return array("H", bytes(2 * max(streams, 1)))


class Reassembly:
    #: without interleaving the fragments held belong to one message at a time (a sender sends a message's
    #: fragments back to back): their total is what that message needs
    one_message = True

    __slots__ = (
        "_by_end",
        "_by_start",
        "_events",
        "_frags",
        "_ssn",
        "_stats",
        "_waiting",
        "assembling",
        "fragment_bytes",
        "held",
        "opened",
    )

    def __init__(self, inbound_streams: int, events: list[Any], stats: dict[str, int]) -> None:
        #: bytes charged for everything received and not yet consumed (the window's complement)
        self.held = 0
        #: the part of ``held`` still here: fragments and ordered messages waiting for an earlier SSN
        self.assembling = 0
        #: user bytes in held fragments (a message bigger than the window can never complete)
        self.fragment_bytes = 0
        self._frags: dict[int, DataChunk] = {}  # by unwrapped TSN
        self._by_start: dict[int, _Run] = {}
        self._by_end: dict[int, _Run] = {}
        self._ssn = _ssns(inbound_streams)
        #: per inbound stream, 1 once a chunk arrived on it since its last reset (kept by the association when it
        #: announces streams)
        self.opened = bytearray(max(inbound_streams, 1))
        self._waiting: dict[int, dict[int, tuple[bytes, int]]] = {}
        self._events = events
        self._stats = stats

    @property
    def fragments(self) -> int:
        return len(self._frags)

    def reset(self, inbound_streams: int) -> None:
        """The peer restarted: drop what is held here; what the application holds stays charged until consumed."""
        self.held -= self.assembling
        self.assembling = 0
        self.fragment_bytes = 0
        self._frags.clear()
        self._by_start.clear()
        self._by_end.clear()
        self._waiting.clear()
        self._ssn = _ssns(inbound_streams)
        self.opened = bytearray(max(inbound_streams, 1))

    def set_streams(self, inbound_streams: int) -> None:
        self._ssn = _ssns(inbound_streams)
        self.opened = bytearray(max(inbound_streams, 1))

    def grow(self, inbound_streams: int) -> None:
        """RFC 6525 Add Streams: more inbound streams; the existing ones keep their state."""
        n = max(inbound_streams, 1) - len(self._ssn)
        if n > 0:
            self._ssn.extend(_ssns(n))
            self.opened.extend(bytes(n))

    def used(self, sid: int) -> bool:
        """Whether ``sid`` delivered an ordered message, or holds one, since it last started over."""
        return self._ssn[sid] != 0 or sid in self._waiting

    def reset_streams(self, stream_ids: list[int]) -> None:
        """The peer reset these streams and everything it sent before has been delivered: they start over at SSN 0.
        A message still waiting for an earlier SSN can never be delivered now (the peer skipped an SSN): dropped."""
        for sid in stream_ids:
            waiting = self._waiting.pop(sid, None)
            if waiting:
                cost = sum(len(data) + MESSAGE_COST for data, _ppid in waiting.values())
                self.held -= cost
                self.assembling -= cost
            self._ssn[sid] = 0
            self.opened[sid] = 0

    def consumed(self, nbytes: int) -> None:
        """The application is done with one delivered message of ``nbytes``."""
        self.held -= nbytes + MESSAGE_COST

    # -- input ------------------------------------------------------------------------------------------------

    def message(self, c: DataChunk) -> None:
        """A whole message in one chunk (B and E set)."""
        if c.unordered:
            self.deliver(c.stream_id, c.data, c.ppid, True)
        else:
            self.ordered(c.stream_id, c.ssn, c.data, c.ppid)

    def fragment(self, t: int, c: DataChunk) -> None:
        """Hold fragment ``c`` at unwrapped TSN ``t`` and take out the message it completes, if any.

        Raises ``BadFragments`` when that message's fragments disagree.
        """
        data = c.data
        cost = len(data) + CHUNK_COST
        self.held += cost
        self.assembling += cost
        self.fragment_bytes += len(data)
        self._frags[t] = c
        left = self._by_end.pop(t - 1, None)
        right = self._by_start.pop(t + 1, None)
        if right is None and left is not None and not c.ending:
            # the common case, a message's next fragment in order: its run grows in place (still incomplete)
            left.end = t
            self._by_end[t] = left
            if c.beginning:
                left.last_b = t
            return
        if left is not None:
            del self._by_start[left.start]
        if right is not None:
            del self._by_end[right.end]
        b = t if c.beginning else (left.last_b if left is not None else None)
        e = t if c.ending else (right.first_e if right is not None else None)
        start = left.start if left is not None else t
        end = right.end if right is not None else t
        if b is None or e is None:
            first_e: int | None
            last_b: int | None
            if left is not None and left.first_e is not None:
                first_e = left.first_e
            elif c.ending:
                first_e = t
            else:
                first_e = right.first_e if right is not None else None
            if right is not None and right.last_b is not None:
                last_b = right.last_b
            elif c.beginning:
                last_b = t
            else:
                last_b = left.last_b if left is not None else None
            self._add_run(_Run(start, end, first_e, last_b))
            return
        # the message b..e is complete; what remains on either side cannot grow across it
        if b > start:
            assert left is not None
            self._add_run(_Run(start, b - 1, left.first_e, None))
        if e < end:
            assert right is not None
            self._add_run(_Run(e + 1, end, None, right.last_b))
        self._take(b, e)

    def _add_run(self, run: _Run) -> None:
        self._by_start[run.start] = run
        self._by_end[run.end] = run

    def _take(self, b: int, e: int) -> None:
        pop = self._frags.pop
        pieces = [pop(t) for t in range(b, e + 1)]
        first = pieces[0]
        parts = [p.data for p in pieces]
        nbytes = sum(map(len, parts))
        released = nbytes + CHUNK_COST * len(pieces)
        self.held -= released
        self.assembling -= released
        self.fragment_bytes -= nbytes
        sid, unordered, ssn = first.stream_id, first.unordered, first.ssn
        for piece in pieces:
            if piece.stream_id != sid or piece.unordered != unordered or (not unordered and piece.ssn != ssn):
                raise BadFragments("fragments of one message disagree")
        data = b"".join(parts)
        if unordered:
            self.deliver(sid, data, first.ppid, True)
        else:
            self.ordered(sid, ssn, data, first.ppid)

    def forward(self, cum: int, skips: dict[int, int]) -> None:
        """FORWARD-TSN (RFC 3758 §3.6): drop held fragments at or below the new cumulative TSN ``cum`` (their
        messages were abandoned), and for each stream in ``skips`` deliver what waited up to the skipped SSN and
        expect the one after it."""
        if self._frags:
            frags = self._frags
            for start in [s for s in self._by_start if s <= cum]:
                run = self._by_start.pop(start)
                del self._by_end[run.end]
                stop = min(run.end, cum)
                released = 0
                for t in range(start, stop + 1):
                    piece = frags.pop(t)
                    released += len(piece.data) + CHUNK_COST
                    self.fragment_bytes -= len(piece.data)
                self.held -= released
                self.assembling -= released
                if run.end > cum:  # what remains cannot join anything below it any more
                    self._add_run(_Run(cum + 1, run.end, None, run.last_b))
            self._drop_orphans(cum + 1)
        for sid, ssn in skips.items():
            expected = self._ssn[sid]
            if ((ssn - expected) & 0xFFFF) >= 0x8000:
                continue  # already past it
            waiting = self._waiting.get(sid)
            if waiting:
                # what waited at or below the skipped SSN goes up now, in SSN order
                ready = sorted(
                    (s for s in waiting if ((ssn - s) & 0xFFFF) < 0x8000), key=lambda s: (s - expected) & 0xFFFF
                )
                for s in ready:
                    data, ppid = waiting.pop(s)
                    self.assembling -= len(data) + MESSAGE_COST
                    self._stats["messages_received"] += 1
                    self._events.append(ev.DataReceived(sid, data, ppid, False))
                if not waiting:
                    del self._waiting[sid]
            self._ssn[sid] = (ssn + 1) & 0xFFFF
            waiting = self._waiting.get(sid)
            if waiting:
                self._release(sid)

    def _drop_orphans(self, start: int) -> None:
        """Fragments right after an abandoned message's TSNs, up to the next B, belong to messages whose start was
        abandoned (a fragment the sender gave up but the peer had already received): they can never complete."""
        run = self._by_start.get(start)
        if run is None:
            return
        frags = self._frags
        t = start
        released = 0
        while t <= run.end and not frags[t].beginning:
            piece = frags.pop(t)
            released += len(piece.data) + CHUNK_COST
            self.fragment_bytes -= len(piece.data)
            t += 1
        if not released:
            return
        self.held -= released
        self.assembling -= released
        del self._by_start[start]
        if t > run.end:
            del self._by_end[run.end]
        else:
            run.start = t
            run.first_e = None
            self._by_start[t] = run

    def _release(self, sid: int) -> None:
        """Deliver the messages waiting on ``sid`` from its expected SSN on, while they are consecutive."""
        waiting = self._waiting[sid]
        expected = self._ssn[sid]
        events, stats = self._events, self._stats
        while expected in waiting:
            wdata, wppid = waiting.pop(expected)
            self.assembling -= len(wdata) + MESSAGE_COST  # still held: now by the application
            stats["messages_received"] += 1
            events.append(ev.DataReceived(sid, wdata, wppid, False))
            expected = (expected + 1) & 0xFFFF
        self._ssn[sid] = expected
        if not waiting:
            del self._waiting[sid]

    # -- output -----------------------------------------------------------------------------------------------

    def deliver(self, sid: int, data: bytes, ppid: int, unordered: bool) -> None:
        self.held += len(data) + MESSAGE_COST
        self._stats["messages_received"] += 1
        self._events.append(ev.DataReceived(sid, data, ppid, unordered))

    def ordered(self, sid: int, ssn: int, data: bytes, ppid: int) -> None:
        """Deliver a complete ordered message in SSN order, or keep it until the ones before it have come."""
        expected = self._ssn[sid]
        if ssn == expected and not self._waiting:  # the common case, inlined
            self._ssn[sid] = (expected + 1) & 0xFFFF
            self.held += len(data) + MESSAGE_COST
            self._stats["messages_received"] += 1
            self._events.append(ev.DataReceived(sid, data, ppid, False))
            return
        if ssn == expected:
            self.deliver(sid, data, ppid, False)
            self._ssn[sid] = (expected + 1) & 0xFFFF
            if sid in self._waiting:
                self._release(sid)
            return
        waiting = self._waiting.setdefault(sid, {})
        if ((ssn - expected) & 0xFFFF) >= 0x8000 or ssn in waiting:
            # an SSN already delivered or already waiting: a broken peer repeated a message under a new TSN
            self._stats["duplicate_ssns"] = self._stats.get("duplicate_ssns", 0) + 1
            if not waiting:
                del self._waiting[sid]
            return
        cost = len(data) + MESSAGE_COST
        self.held += cost
        self.assembling += cost
        waiting[ssn] = (data, ppid)
