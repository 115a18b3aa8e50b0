"""The SCTP receive side (mux/sctp/rx): TSN tracking, reassembly, what it charges, and hostile senders in memory.

The tracker and the reassembly queue are checked against plain reference models on random, wrapping TSN sequences;
the charges against what tracemalloc says the objects really cost; and the association against peers that send
tiny fragments, tiny messages above a hole, or never let the application read, on the in-memory network.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mux import transport as t
from mux.sctp import events as ev
from mux.sctp.association import OUT_COST, Association
from mux.sctp.chunks import DataChunk, SackChunk
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import Endpoint
from mux.sctp.packet import parse_packet, serialize_packet
from mux.sctp.params import OUT_OF_RESOURCE
from mux.sctp.rx.reassembly import CHUNK_COST, MESSAGE_COST, BadFragments, Reassembly
from mux.sctp.rx.tracker import AHEAD, DUPLICATE, MASK, MAX_AHEAD, NEXT, NO_ROOM, TOO_FAR, DataTracker
from tests.sctp_link import RawPeer, chunks_of, drain, raw_connect

NOW = 1000.0
PEER = ("10.0.0.9", 6000)


# -- the tracker ---------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from([0, 1000, MASK - 40, MASK - 3, 0x7FFFFFF0]),
    offsets=st.lists(st.integers(min_value=-5, max_value=120), max_size=200),
)
def test_tracker_matches_a_set_of_received_tsns(base: int, offsets: list[int]) -> None:
    tracker = DataTracker(base, max_ranges=1 << 30)
    received: set[int] = set()  # unwrapped TSNs, the reference
    cum = base
    for off in offsets:
        wire = (base + 1 + off) & MASK
        u = tracker.unwrap(wire)
        assert u == base + 1 + off  # the unwrapped value is the plain one near the cumulative point
        verdict = tracker.classify(u)
        if u <= cum or u in received:
            assert verdict == DUPLICATE
            continue
        assert verdict == (NEXT if u == cum + 1 else AHEAD)
        tracker.record(u)
        received.add(u)
        while cum + 1 in received:
            cum += 1
        assert tracker.cum == cum and tracker.cum_tsn == cum & MASK
        above = sorted(x for x in received if x > cum)
        blocks: list[tuple[int, int]] = []
        for x in above:
            if blocks and x - cum == blocks[-1][1] + 1:
                blocks[-1] = (blocks[-1][0], x - cum)
            else:
                blocks.append((x - cum, x - cum))
        assert tracker.gap_blocks(10_000) == blocks
        assert tracker.gap_blocks(2) == blocks[:2]
        assert tracker.ranges == len(blocks) and tracker.has_gaps == bool(blocks)
        probe = base + 1 + off + 1
        assert tracker.received(probe) == (probe <= cum or probe in received)


def test_tracker_refuses_tsns_too_far_ahead_and_a_range_too_many() -> None:
    tracker = DataTracker(100, max_ranges=3)
    assert tracker.classify(100 + MAX_AHEAD + 1) == TOO_FAR
    for u in (103, 106, 109):
        assert tracker.classify(u) == AHEAD
        tracker.record(u)
    assert tracker.classify(112) == NO_ROOM  # a fourth range
    assert tracker.classify(104) == AHEAD  # joins one: allowed
    assert tracker.classify(110) == AHEAD
    assert tracker.classify(101) == NEXT  # the cumulative point always moves
    tracker.record(101)
    tracker.record(102)
    assert tracker.cum == 103 and tracker.ranges == 2


def test_tracker_reports_duplicates_boundedly() -> None:
    tracker = DataTracker(5)
    for _ in range(100):
        tracker.duplicate(3)
    assert tracker.take_dups() == [3] * 32
    assert tracker.take_dups() == []


# -- reassembly ----------------------------------------------------------------------------------------------------


Expected = list[tuple[int, int, bytes]]


def _fragments(seed: int, count: int, streams: int, base_tsn: int) -> tuple[list[DataChunk], Expected]:
    """Messages cut into fragments with consecutive TSNs; returns the chunks and (stream, ppid, data) expected."""
    rng = random.Random(seed)
    chunks: list[DataChunk] = []
    expected: Expected = []
    ssn = [0] * streams
    tsn = base_tsn
    for i in range(count):
        sid = rng.randrange(streams)
        unordered = rng.random() < 0.3
        size = rng.choice((1, 2, 5, rng.randint(1, 40)))
        data = bytes(rng.randrange(256) for _ in range(size))
        cuts = sorted(rng.sample(range(1, size), min(size - 1, rng.choice((0, 0, 1, 3, 8))))) if size > 1 else []
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, size], strict=True)]
        s = 0 if unordered else ssn[sid]
        if not unordered:
            ssn[sid] = (ssn[sid] + 1) & 0xFFFF
        for k, piece in enumerate(pieces):
            chunks.append(DataChunk(tsn & MASK, sid, s, i, piece, unordered, k == 0, k == len(pieces) - 1))
            tsn += 1
        expected.append((sid, i, data))
    return chunks, expected


def _feed(chunks: list[DataChunk], base_tsn: int, streams: int) -> tuple[Reassembly, deque[Any]]:
    events: deque[Any] = deque()
    reasm = Reassembly(streams, events, {"messages_received": 0})
    tracker = DataTracker(base_tsn - 1)
    for c in chunks:
        u = tracker.unwrap(c.tsn)
        if tracker.classify(u) == DUPLICATE:
            continue
        tracker.record(u)
        if c.beginning and c.ending:
            reasm.message(c)
        else:
            reasm.fragment(u, c)
    return reasm, events


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), base=st.sampled_from([1, MASK - 30, 0x8000_0000 - 5]), dup=st.booleans())
def test_reassembly_delivers_every_message_once_in_ssn_order_whatever_the_arrival_order(
    seed: int, base: int, dup: bool
) -> None:
    chunks, expected = _fragments(seed, 40, 3, base)
    rng = random.Random(seed)
    arrival = list(chunks) + (rng.sample(chunks, len(chunks) // 3) if dup else [])
    rng.shuffle(arrival)
    reasm, events = _feed(arrival, base, 3)
    got = list(events)
    assert sorted((e.stream_id, e.ppid, e.data) for e in got) == sorted(expected)
    for sid in range(3):  # ordered messages of a stream come in the order they were sent
        ordered = [e.ppid for e in got if e.stream_id == sid and not e.unordered]
        assert ordered == sorted(ordered)
    assert reasm.fragments == 0 and reasm.assembling == 0 and reasm.fragment_bytes == 0
    assert reasm.held == sum(len(e.data) + MESSAGE_COST for e in got)
    for e in got:
        reasm.consumed(len(e.data))
    assert reasm.held == 0


def test_fragments_that_disagree_are_a_protocol_violation() -> None:
    events: deque[Any] = deque()
    reasm = Reassembly(4, events, {"messages_received": 0})
    reasm.fragment(10, DataChunk(10, 1, 0, 0, b"a", False, True, False))
    with pytest.raises(BadFragments):
        reasm.fragment(11, DataChunk(11, 2, 0, 0, b"b", False, False, True))
    assert not events and reasm.held == 0


def test_a_repeated_ssn_is_dropped_not_double_charged() -> None:
    events: deque[Any] = deque()
    stats = {"messages_received": 0}
    reasm = Reassembly(1, events, stats)
    reasm.message(DataChunk(1, 0, 2, 0, b"x"))
    reasm.message(DataChunk(2, 0, 2, 0, b"y"))  # the same SSN again under another TSN
    assert reasm.held == 1 + MESSAGE_COST and stats["duplicate_ssns"] == 1
    reasm.message(DataChunk(3, 0, 0, 0, b"a"))
    reasm.message(DataChunk(4, 0, 1, 0, b"b"))
    assert [e.data for e in events] == [b"a", b"b", b"x"]


# -- what the charges stand for --------------------------------------------------------------------------------------


def _traced(build: Any) -> tuple[int, Any]:
    """Bytes still allocated after ``build()`` (whose result is kept alive), measured by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, kept


def _wire_chunks(chunks: list[DataChunk]) -> list[bytes]:
    return [serialize_packet(1, 2, 3, [c]) for c in chunks]


@pytest.mark.parametrize("spacing", [1, 2])
@pytest.mark.parametrize("n", [1366, 3000])  # just after and well after the maps grew
def test_a_held_fragment_costs_no_more_than_it_is_charged(spacing: int, n: int) -> None:
    """Middle fragments, adjacent (one run) or each alone (a run each, the worst case), parsed from the wire."""
    wire = _wire_chunks([DataChunk(1000 + spacing * i, 0, 0, 7, b"z", False, False, False) for i in range(n)])

    def build() -> Reassembly:
        reasm = Reassembly(1, deque(), {"messages_received": 0})
        for raw in wire:
            (c,) = parse_packet(raw).chunks
            assert isinstance(c, DataChunk)
            reasm.fragment(c.tsn, c)
        return reasm

    used, reasm = _traced(build)
    assert reasm.held == n * (1 + CHUNK_COST)
    assert used <= reasm.held, f"{used / n:.0f} B per 1-byte fragment, charged {1 + CHUNK_COST}"


def test_a_waiting_or_delivered_message_costs_no_more_than_it_is_charged() -> None:
    n = 3000
    waiting = _wire_chunks([DataChunk(1000 + i, 0, 1 + i, 7, b"m") for i in range(n)])  # SSN 0 never comes

    def build_waiting() -> Reassembly:
        reasm = Reassembly(1, deque(), {"messages_received": 0})
        for raw in waiting:
            (c,) = parse_packet(raw).chunks
            assert isinstance(c, DataChunk)
            reasm.message(c)
        return reasm

    used, reasm = _traced(build_waiting)
    assert reasm.held == n * (1 + MESSAGE_COST) and used <= reasm.held, used / n

    delivered = _wire_chunks([DataChunk(1000 + i, 0, i, 7 + i, b"m") for i in range(n)])

    def build_delivered() -> tuple[Reassembly, deque[t.StreamData]]:
        """What a delivered message holds until consumed: the mailbox's StreamData and its props."""
        events: deque[Any] = deque()
        reasm = Reassembly(1, events, {"messages_received": 0})
        mailbox: deque[t.StreamData] = deque()
        for raw in delivered:
            (c,) = parse_packet(raw).chunks
            assert isinstance(c, DataChunk)
            reasm.message(c)
            e = events.popleft()
            mailbox.append(t.StreamData(e.stream_id, e.data, False, {"ppid": e.ppid, "unordered": e.unordered}))
        return reasm, mailbox

    used, (reasm, mailbox) = _traced(build_delivered)
    assert len(mailbox) == n and reasm.held == n * (1 + MESSAGE_COST)
    assert used <= reasm.held, f"{used / n:.0f} B per delivered 1-byte message, charged {1 + MESSAGE_COST}"


def test_a_queued_outbound_chunk_costs_no_more_than_it_is_charged() -> None:
    assoc, _peer, _ = raw_connect(Endpoint(SctpConfig(sndbuf=1 << 30), local_port=5000), PEER, NOW)
    drain(assoc)
    n = 3000

    def build() -> int:
        for i in range(n):
            assoc.send(0, bytes([i & 0xFF]))
        return assoc.buffered_amount()

    used, buffered = _traced(build)
    assert buffered == n * (1 + OUT_COST) and used <= buffered, used / n
    assoc.datagrams_to_send(NOW)  # once sent, each also holds its encoding
    assert assoc.buffered_amount() == buffered


# -- hostile senders against an association ---------------------------------------------------------------------


def _server(recbuf: int = 64 * 1024) -> tuple[Association, RawPeer]:
    assoc, peer, _ = raw_connect(Endpoint(SctpConfig(recbuf=recbuf), local_port=5000), PEER, NOW)
    drain(assoc)
    return assoc, peer


def _send(assoc: Association, peer: RawPeer, chunks: list[DataChunk], per_packet: int = 50) -> list[Any]:
    """Deliver the chunks in packets; returns every chunk the association sent back."""
    replies: list[Any] = []
    for i in range(0, len(chunks), per_packet):
        assoc.receive_datagram(peer.packet(*chunks[i : i + per_packet]), peer.addr, NOW)
        replies.extend(chunks_of(assoc.datagrams_to_send(NOW)))
    return replies


def test_one_byte_fragments_fill_the_window_by_what_they_cost_then_abort_when_they_can_never_complete() -> None:
    recbuf = 64 * 1024
    assoc, peer = _server(recbuf)
    # in-sequence middle fragments of a message that never ends: nothing is missing, nothing can complete
    frags = [peer.data(b"f", beginning=False, ending=False) for _ in range(2 * recbuf // CHUNK_COST + 100)]
    replies = _send(assoc, peer, frags)
    held = assoc.status()["held_bytes"]
    assert isinstance(held, int) and held <= 2 * recbuf
    sacks = [c for c in replies if isinstance(c, SackChunk)]
    assert sacks and min(s.a_rwnd for s in sacks) == 0  # the window closed long before 2 * recbuf one-byte chunks
    aborted = [e for e in drain(assoc) if isinstance(e, ev.AssociationAborted)]
    assert aborted and aborted[0].causes[0].code == OUT_OF_RESOURCE


def test_tiny_messages_above_a_hole_are_held_within_the_window() -> None:
    recbuf = 64 * 1024
    assoc, peer = _server(recbuf)
    hole = peer.data(b"first")  # never sent: everything ordered behind it waits
    msgs = [peer.data(b"m") for _ in range(4 * recbuf // MESSAGE_COST)]
    replies = _send(assoc, peer, msgs)
    status = assoc.status()
    held = status["held_bytes"]
    assert isinstance(held, int) and held <= recbuf
    assert status["rwnd_drops"] and not [e for e in drain(assoc) if isinstance(e, ev.DataReceived)]
    assert [c for c in replies if isinstance(c, SackChunk)][-1].a_rwnd < MESSAGE_COST
    # the hole fills: everything that waited is delivered in order and the window reopens as it is read
    _send(assoc, peer, [hole])
    got = [e for e in drain(assoc) if isinstance(e, ev.DataReceived)]
    assert got[0].data == b"first" and len(got) > 1 and all(e.data == b"m" for e in got[1:])
    assert assoc.status()["held_bytes"] == 0


def test_an_application_that_does_not_read_closes_the_window_and_reading_reopens_it() -> None:
    recbuf = 64 * 1024
    assoc, peer = _server(recbuf)
    msgs = [peer.data(bytes(1000)) for _ in range(200)]
    replies = _send(assoc, peer, msgs, per_packet=1)
    unread = [e for e in drain(assoc, consume=False) if isinstance(e, ev.DataReceived)]
    assert len(unread) < 200 and assoc.rwnd < 2000  # the rest were dropped: no window
    assert [c for c in replies if isinstance(c, SackChunk)][-1].a_rwnd < 2000
    assert not assoc.datagrams_to_send(NOW)
    window_updates = 0
    advertised = [c for c in replies if isinstance(c, SackChunk)][-1].a_rwnd
    for e in unread:
        window_updates += assoc.consumed(len(e.data))
        for c in chunks_of(assoc.datagrams_to_send(NOW)):
            # a window update offers the peer at least another full packet
            assert isinstance(c, SackChunk) and c.a_rwnd >= advertised + 1200
            advertised = c.a_rwnd
    # a SACK or two tells the peer the window opened; the rest ride on the SACKs its next data draws
    assert 1 <= window_updates <= 2
    assert assoc.rwnd == recbuf


def test_fragments_in_order_grow_their_run_and_a_late_first_fragment_still_completes_its_message() -> None:
    """A message's next fragment in order grows the run it joins in place (the receive path's common case). That
    run keeps the E and B it needs: here the first fragment of message 0 is late, message 1 arrives whole and in
    order behind message 0's tail, and both come out intact, in SSN order, with nothing left charged."""
    events: deque[Any] = deque()
    reasm = Reassembly(1, events, {"messages_received": 0})
    m0 = [DataChunk(10, 0, 0, 7, b"a0", False, True, False), DataChunk(11, 0, 0, 7, b"a1", False, False, False)]
    m0.append(DataChunk(12, 0, 0, 7, b"a2", False, False, True))
    m1 = [DataChunk(13 + i, 0, 1, 8, b"b%d" % i, False, i == 0, i == 3) for i in range(4)]
    for c in [*m0[1:], *m1[:3]]:  # 11..15 in order: one run, E at 12, B at 13, message 1 still open
        reasm.fragment(c.tsn, c)
    assert reasm.fragments == 5 and not events
    reasm.fragment(16, m1[3])  # message 1 completes, but SSN 1 waits for SSN 0
    assert reasm.fragments == 2 and not events
    reasm.fragment(10, m0[0])  # the late first fragment: message 0, then message 1
    assert [(e.ppid, e.data) for e in events] == [(7, b"a0a1a2"), (8, b"b0b1b2b3")]
    assert reasm.fragments == 0 and reasm.assembling == 0 and reasm.fragment_bytes == 0
    for e in events:
        reasm.consumed(len(e.data))
    assert reasm.held == 0


def test_an_in_order_sack_says_what_the_window_holds_and_a_duplicate_is_still_reported() -> None:
    """The in-order SACK is packed in one step; it must say what the full encoder would (cumulative TSN, the
    window left after what is held), and a duplicate must still take the full path and be reported."""
    assoc, peer = _server(64 * 1024)
    first = peer.data(bytes(3000), ending=False)
    replies = _send(assoc, peer, [first], per_packet=1)
    sack = [c for c in replies if isinstance(c, SackChunk)][-1]
    assert sack == SackChunk(first.tsn, 64 * 1024 - 3000 - CHUNK_COST, [], [])
    assert parse_packet(serialize_packet(1, 2, 3, [sack])).chunks == [sack]
    replies = _send(assoc, peer, [first], per_packet=1)  # the same TSN again
    sack = [c for c in replies if isinstance(c, SackChunk)][-1]
    assert sack.duplicates == [first.tsn] and sack.cum_tsn == first.tsn
