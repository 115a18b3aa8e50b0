"""RFC 8260 in memory: the I-DATA and I-FORWARD-TSN codec, interleaved reassembly, and the stream schedulers.

The codec is checked by round trips, against the wire layout the RFC draws, and against hostile bytes. Reassembly
is fed fragments of random messages interleaved as a sender would and shuffled as a network would, with and
without abandoned messages, and compared with what was sent; its charges against tracemalloc, and its work under
a hostile peer's I-FORWARD-TSNs against a count of heap operations. The schedulers are checked for the order each
produces, shares by weight, interleaving, and, under random operations, for the invariants they promise; ``rr``
and ``fcfs`` without I-DATA produce exactly what ``SendQueue`` produces today.
"""

from __future__ import annotations

import gc
import heapq
import random
import struct
import tracemalloc
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from legacy_send_queue import SendQueue

from mux.sctp import events as ev
from mux.sctp.chunks import (
    CHUNK_PARSERS,
    FLAG_B,
    FLAG_E,
    FLAG_U,
    DataChunk,
    IDataChunk,
    IForwardTsnChunk,
    SackChunk,
)
from mux.sctp.packet import COMMON_HEADER, ParseError, packet_crc, parse_packet, serialize_packet
from mux.sctp.rx import interleaved as interleaved_module
from mux.sctp.rx.interleaved import CHUNK_COST, MESSAGE_COST, BadFragments, InterleavedReassembly
from mux.sctp.rx.tracker import DUPLICATE, DataTracker
from mux.sctp.tx.scheduler import DATAGRAMS, DEFAULT_PRIORITY, Scheduler, encode_idata
from mux.sctp.tx.schedulers import SCHEDULERS, make_scheduler
from mux.sctp.tx.send_queue import OutChunk

hyp = settings(derandomize=True, deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
MASK = 0xFFFFFFFF
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, MASK)


def _raw_packet(*chunks: bytes) -> bytes:
    buf = bytearray(COMMON_HEADER.pack(1, 2, 7, 0) + b"".join(chunks))
    struct.pack_into("<I", buf, 8, packet_crc(buf))
    return bytes(buf)


def _chunk(type_: int, flags: int, body: bytes) -> bytes:
    raw = struct.pack("!BBH", type_, flags, 4 + len(body)) + body
    return raw + b"\x00" * (-len(raw) % 4)


# -- codec ---------------------------------------------------------------------------------------------------------


@st.composite
def idata_chunks(draw: st.DrawFn) -> IDataChunk:
    """Canonical I-DATA: a first fragment carries a PPID and FSN 0, the others an FSN and PPID 0."""
    beginning = draw(st.booleans())
    return IDataChunk(
        draw(u32),
        draw(u16),
        draw(u32),
        draw(u32) if beginning else 0,
        0 if beginning else draw(u32),
        draw(st.binary(max_size=70)),
        draw(st.booleans()),
        beginning,
        draw(st.booleans()),
        draw(st.booleans()),
    )


iforward_chunks = st.builds(IForwardTsnChunk, u32, st.lists(st.tuples(u16, st.booleans(), u32), max_size=12))
data_chunks = st.builds(
    DataChunk, u32, u16, u16, u32, st.binary(max_size=40), st.booleans(), st.booleans(), st.booleans(), st.booleans()
)


@hyp
@given(st.lists(st.one_of(idata_chunks(), iforward_chunks, data_chunks), min_size=1, max_size=8), u32)
def test_idata_and_iforward_tsn_round_trip_with_data_chunks(chunks: list[Any], vtag: int) -> None:
    wire = serialize_packet(5000, 5001, vtag, chunks)
    assert len(wire) % 4 == 0
    pkt = parse_packet(wire)
    assert pkt.chunks == chunks
    assert serialize_packet(5000, 5001, vtag, pkt.chunks) == wire


@hyp
@given(idata_chunks())
def test_idata_dispatch_parser_matches_the_inlined_path(chunk: IDataChunk) -> None:
    enc = chunk.serialize()
    length = struct.unpack_from("!H", enc, 2)[0]
    assert CHUNK_PARSERS[64](enc[1], memoryview(enc)[4:length]) == chunk == parse_packet(_raw_packet(enc)).chunks[0]


def test_idata_wire_layout_follows_rfc8260_figure_1() -> None:
    first = IDataChunk(0x01020304, 0x0506, 0x0708090A, 51, 0, b"abcde", unordered=True, ending=False, immediate=True)
    enc = first.serialize()
    # type 64, flags I|U|B (E clear), length 20 + 5, TSN, stream, reserved 0, MID, PPID, data, padding to 28
    assert enc == struct.pack("!BBHIHHII", 64, 0x0E, 25, 0x01020304, 0x0506, 0, 0x0708090A, 51) + b"abcde" + b"\0" * 3
    later = IDataChunk(7, 1, 2, 0, 0xFFFFFFFE, b"xyzw", beginning=False)
    assert later.serialize() == struct.pack("!BBHIHHII", 64, 0x01, 24, 7, 1, 0, 2, 0xFFFFFFFE) + b"xyzw"
    # the one field reads as PPID when B is set, as FSN when it is not
    (a, b) = parse_packet(_raw_packet(enc, later.serialize())).chunks
    assert isinstance(a, IDataChunk) and isinstance(b, IDataChunk)
    assert (a.ppid, a.fsn, b.ppid, b.fsn) == (51, 0, 0, 0xFFFFFFFE)


def test_idata_flag_bits_and_ignored_reserved_bits() -> None:
    body = struct.pack("!IHHII", 1, 2, 0xBEEF, 3, 4) + b"x"  # a non-zero reserved field is ignored
    for flags in range(256):
        (c,) = parse_packet(_raw_packet(_chunk(64, flags, body))).chunks
        assert isinstance(c, IDataChunk)
        assert (c.immediate, c.unordered, c.beginning, c.ending) == tuple(bool(flags & b) for b in (8, 4, 2, 1))
        assert (c.tsn, c.stream_id, c.mid, c.data) == (1, 2, 3, b"x")
        assert c.serialize()[1] == flags & 0x0F


def test_iforward_tsn_wire_layout_u_bit_and_reserved_bits() -> None:
    chunk = IForwardTsnChunk(0xA0B0C0D0, [(3, False, 9), (4, True, 0xFFFFFFFF)])
    enc = chunk.serialize()
    assert enc == struct.pack("!BBHI", 194, 0, 24, 0xA0B0C0D0) + struct.pack("!HHIHHI", 3, 0, 9, 4, 1, 0xFFFFFFFF)
    # reserved bits around U are ignored on receipt (RFC 8260 §2.3.1)
    body = struct.pack("!I", 5) + struct.pack("!HHIHHI", 1, 0xFFFE, 10, 2, 0x8001, 11)
    (c,) = parse_packet(_raw_packet(_chunk(194, 0xFF, body))).chunks
    assert c == IForwardTsnChunk(5, [(1, False, 10), (2, True, 11)])


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (_raw_packet(_chunk(64, 3, b"\x00" * 15)), "i-data chunk too short"),
        (_raw_packet(_chunk(64, 3, b"")), "i-data chunk too short"),
        (_raw_packet(_chunk(194, 0, b"\x00" * 3)), "i-forward tsn length"),
        (_raw_packet(_chunk(194, 0, b"\x00" * 11)), "i-forward tsn length"),
        (_raw_packet(_chunk(194, 0, b"\x00" * 16)), "i-forward tsn length"),
    ],
)
def test_malformed_idata_and_iforward_tsn_raise_parse_error(wire: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_packet(wire)


@hyp
@given(st.sampled_from([64, 194]), st.integers(0, 255), st.binary(max_size=64), st.integers(-8, 8))
def test_arbitrary_idata_and_iforward_tsn_bodies_only_raise_parse_error(
    ctype: int, flags: int, body: bytes, skew: int
) -> None:
    raw = bytearray(_chunk(ctype, flags, body))
    struct.pack_into("!H", raw, 2, max(0, 4 + len(body) + skew) & 0xFFFF)  # lengths that lie, too
    try:
        pkt = parse_packet(_raw_packet(bytes(raw)))
    except ParseError:
        return
    serialize_packet(1, 2, 3, pkt.chunks)  # whatever parses re-encodes


def test_empty_idata_is_returned_not_rejected() -> None:
    (c,) = parse_packet(serialize_packet(1, 2, 3, [IDataChunk(5, 0, 0, 0, 0, b"")])).chunks
    assert isinstance(c, IDataChunk) and c.data == b"" and c.tsn == 5


# -- interleaved reassembly ----------------------------------------------------------------------------------------

Sent = list[tuple[int, int, bytes, bool, int]]  # per message: stream, ppid (its index), data, unordered, MID


def _messages(
    seed: int, count: int, streams: int, mid_base: int, base_tsn: int
) -> tuple[list[list[IDataChunk]], list[IDataChunk], Sent]:
    """Random messages cut into I-DATA fragments, sent as an interleaving sender does: each stream's chunks in
    order, the streams' chunks merged at random. Returns the fragments per message, all chunks in TSN order, and
    what was sent."""
    rng = random.Random(seed)
    mids: dict[tuple[int, bool], int] = {}
    per_stream: dict[int, deque[IDataChunk]] = {s: deque() for s in range(streams)}
    frags: list[list[IDataChunk]] = []
    sent: Sent = []
    for i in range(count):
        sid = rng.randrange(streams)
        unordered = rng.random() < 0.3
        size = rng.choice((1, 2, 5, rng.randint(1, 60)))
        data = rng.randbytes(size)
        cuts = sorted(rng.sample(range(1, size), min(size - 1, rng.choice((0, 0, 1, 3, 8))))) if size > 1 else []
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, size], strict=True)]
        mid = mids.get((sid, unordered), mid_base)
        mids[(sid, unordered)] = (mid + 1) & MASK
        chunks = [
            IDataChunk(0, sid, mid, i if k == 0 else 0, k, piece, unordered, k == 0, k == len(pieces) - 1)
            for k, piece in enumerate(pieces)
        ]
        frags.append(chunks)
        per_stream[sid].extend(chunks)
        sent.append((sid, i, data, unordered, mid))
    order: list[IDataChunk] = []
    tsn = base_tsn
    live = [s for s in per_stream if per_stream[s]]
    while live:
        s = rng.choice(live)
        c = per_stream[s].popleft()
        c.tsn = tsn & MASK
        tsn += 1
        order.append(c)
        if not per_stream[s]:
            live.remove(s)
    return frags, order, sent


def _reasm(streams: int, mid_base: int = 0) -> tuple[InterleavedReassembly, deque[Any], dict[str, int]]:
    """A reassembly queue whose streams expect ordered MID ``mid_base`` next, as if that many had gone before."""
    events: deque[Any] = deque()
    stats = {"messages_received": 0}
    reasm = InterleavedReassembly(streams, events, stats)
    reasm._next = [mid_base] * streams
    return reasm, events, stats


def _feed(reasm: InterleavedReassembly, tracker: DataTracker, c: IDataChunk) -> None:
    """What the association does with an I-DATA chunk: drop duplicate TSNs, then a whole message or a fragment."""
    u = tracker.unwrap(c.tsn)
    if tracker.classify(u) == DUPLICATE:
        return
    tracker.record(u)
    if c.beginning and c.ending:
        reasm.message(c)
    else:
        reasm.fragment(u, c)


def _check_order(got: list[ev.DataReceived], sent: Sent, streams: int) -> None:
    """Ordered messages of a stream went up in the order they were sent (their index is their PPID)."""
    for sid in range(streams):
        ordered = [e.ppid for e in got if e.stream_id == sid and not e.unordered]
        assert ordered == sorted(ordered)


@hyp
@given(
    seed=st.integers(0, 10_000),
    mid_base=st.sampled_from([0, 1000, MASK - 5, 0x7FFFFFFE]),
    base=st.sampled_from([1, MASK - 30]),
    dup=st.booleans(),
)
def test_interleaved_reassembly_delivers_every_message_once_in_mid_order_whatever_the_arrival(
    seed: int, mid_base: int, base: int, dup: bool
) -> None:
    _frags, order, sent = _messages(seed, 40, 3, mid_base, base)
    rng = random.Random(seed)
    arrival = list(order) + (rng.sample(order, len(order) // 3) if dup else [])
    rng.shuffle(arrival)
    reasm, events, stats = _reasm(3, mid_base)
    tracker = DataTracker(base - 1)
    for c in arrival:
        _feed(reasm, tracker, c)
    got = list(events)
    assert sorted((e.stream_id, e.ppid, e.data, e.unordered) for e in got) == sorted(
        (s, i, d, u) for s, i, d, u, _m in sent
    )
    _check_order(got, sent, 3)
    assert stats["messages_received"] == len(sent)
    assert reasm.fragments == 0 and reasm.assembling == 0 and reasm.fragment_bytes == 0
    assert reasm.held == sum(len(e.data) + MESSAGE_COST for e in got)
    for e in got:
        reasm.consumed(len(e.data))
    assert reasm.held == 0


def test_fragments_of_different_messages_interleave_and_a_small_message_is_not_held_behind_a_large_one() -> None:
    reasm, events, _ = _reasm(4)
    # a large ordered message on stream 0, MID 0, of which FSN 0..9 come and 10 (E) is still missing
    for fsn in range(10):
        reasm.fragment(fsn, IDataChunk(fsn, 0, 0, 7 if fsn == 0 else 0, fsn, b"L" * 100, False, fsn == 0, False))
        # between its fragments, small whole messages on streams 1..3 and a two-fragment message on stream 1
        reasm.message(IDataChunk(100 + fsn, 1 + fsn % 3, fsn // 3, 64, 0, b"s" * 64))
    reasm.fragment(50, IDataChunk(50, 1, 4, 9, 0, b"ab", False, True, False))
    reasm.fragment(51, IDataChunk(51, 1, 4, 0, 1, b"cd", False, False, True))
    small = list(events)
    assert len(small) == 11 and all(e.stream_id != 0 for e in small)
    assert small[-1].data == b"abcd" and small[-1].ppid == 9
    assert reasm.fragments == 10 and reasm.fragment_bytes == 1000
    reasm.fragment(60, IDataChunk(60, 0, 0, 0, 10, b"E", False, False, True))
    assert events[-1].data == b"L" * 1000 + b"E" and events[-1].ppid == 7 and reasm.fragments == 0


def test_an_ordered_message_that_completes_early_waits_for_the_mids_before_it() -> None:
    reasm, events, _ = _reasm(1)
    reasm.fragment(1, IDataChunk(1, 0, 2, 5, 0, b"x", False, True, False))
    reasm.fragment(2, IDataChunk(2, 0, 2, 0, 1, b"y", False, False, True))  # MID 2 complete, waits
    reasm.message(IDataChunk(3, 0, 1, 4, 0, b"b"))  # MID 1 whole, waits
    assert not events and reasm.assembling == 2 + 1 + 2 * MESSAGE_COST
    reasm.message(IDataChunk(4, 0, 0, 3, 0, b"a"))
    assert [e.data for e in events] == [b"a", b"b", b"xy"] and reasm.assembling == 0


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((0, True, False), (0, False, False)),  # FSN 0 without B
        ((3, False, True), (5, False, False)),  # a fragment after the last one
        ((5, False, False), (3, False, True)),  # a last fragment before a fragment already here
        ((3, False, True), (4, False, True)),  # two last fragments
    ],
)
def test_fragments_that_contradict_each_other_are_a_protocol_violation(
    first: tuple[int, bool, bool], second: tuple[int, bool, bool]
) -> None:
    reasm, events, _ = _reasm(2)
    fsn, b, e = first
    if not (fsn == 0 and not b):
        reasm.fragment(1, IDataChunk(1, 1, 0, 0, fsn if not b else 0, b"a", False, b, e))
    fsn, b, e = second
    with pytest.raises(BadFragments):
        reasm.fragment(2, IDataChunk(2, 1, 0, 0, fsn, b"b", False, b, e))
    assert not events


def test_a_repeated_fragment_under_another_tsn_is_dropped_not_double_charged() -> None:
    reasm, events, stats = _reasm(1)
    reasm.fragment(1, IDataChunk(1, 0, 0, 1, 0, b"ab", False, True, False))
    held = reasm.held
    reasm.fragment(2, IDataChunk(2, 0, 0, 1, 0, b"ab", False, True, False))
    assert reasm.held == held and reasm.fragments == 1 and stats["duplicate_fsns"] == 1
    reasm.fragment(3, IDataChunk(3, 0, 0, 0, 1, b"c", False, False, True))
    assert [e.data for e in events] == [b"abc"]
    reasm.message(IDataChunk(4, 0, 0, 1, 0, b"again"))  # MID 0 went up already
    reasm.fragment(5, IDataChunk(5, 0, 0, 0, 1, b"late", False, False, False))
    assert len(events) == 1 and stats["duplicate_mids"] == 1 and stats["stale_fragments"] == 1
    assert reasm.held == 3 + MESSAGE_COST


def test_a_partial_message_whose_mid_then_came_whole_is_dropped_not_held_for_ever() -> None:
    reasm, events, stats = _reasm(2)
    reasm.fragment(1, IDataChunk(1, 1, 0, 0, 0, b"part", False, True, False))
    reasm.fragment(2, IDataChunk(2, 1, 1, 0, 0, b"next", False, True, False))  # MID 1 waits behind it
    reasm.message(IDataChunk(3, 1, 0, 5, 0, b"whole"))  # a broken peer sends MID 0 again, whole
    assert [e.data for e in events] == [b"whole"] and stats["duplicate_mids"] == 1
    assert reasm.fragments == 1 and reasm.assembling == 4 + CHUNK_COST  # only MID 1's fragment is left
    reasm.fragment(4, IDataChunk(4, 1, 1, 0, 1, b"!", False, False, True))
    assert [e.data for e in events] == [b"whole", b"next!"] and reasm.assembling == 0


@hyp
@given(
    seed=st.integers(0, 10_000),
    mid_base=st.sampled_from([0, MASK - 3]),
    forward_at=st.floats(0.0, 1.0),
)
def test_i_forward_tsn_never_delivers_part_of_an_abandoned_message_and_leaves_nothing_behind(
    seed: int, mid_base: int, forward_at: float
) -> None:
    """Per stream and U bit a prefix of the messages is abandoned: some of their fragments never come; the
    I-FORWARD-TSN comes at any point of the arrival. Every other message goes up, each whole and once, ordered
    ones in order; an abandoned one goes up only whole; and once all has arrived nothing is held."""
    streams = 3
    frags, _order, sent = _messages(seed, 40, streams, mid_base, 1)
    rng = random.Random(seed)
    lanes: dict[tuple[int, bool], list[int]] = {}
    for i, (sid, _ppid, _data, unordered, _mid) in enumerate(sent):
        lanes.setdefault((sid, unordered), []).append(i)
    skips: list[tuple[int, bool, int]] = []
    abandoned: set[int] = set()
    for (sid, unordered), idx in lanes.items():
        k = rng.randrange(len(idx) + 1)  # how many of this lane's first messages are abandoned
        if k:
            abandoned.update(idx[:k])
            skips.append((sid, unordered, sent[idx[k - 1]][4]))
    arrival: list[IDataChunk] = []
    for i, chunks in enumerate(frags):
        arrival += [c for c in chunks if rng.random() < 0.6] if i in abandoned else chunks
    rng.shuffle(arrival)
    reasm, events, _ = _reasm(streams, mid_base)
    at = int(forward_at * len(arrival))
    for n, c in enumerate(arrival):
        if n == at:
            reasm.forward(0, skips)
        if c.beginning and c.ending:
            reasm.message(c)
        else:
            reasm.fragment(c.tsn, c)
    if at >= len(arrival):
        reasm.forward(0, skips)
    got = list(events)
    by_index = {i: (s, d, u) for s, i, d, u, _m in sent}
    seen = Counter(e.ppid for e in got)
    assert all(v == 1 for v in seen.values())
    for e in got:
        assert by_index[e.ppid] == (e.stream_id, e.data, e.unordered)  # whole, never a part
    assert {i for i in by_index if i not in abandoned} <= set(seen)
    _check_order(got, sent, streams)
    for e in got:
        reasm.consumed(len(e.data))
    assert reasm.held == 0 and reasm.fragments == 0 and reasm.fragment_bytes == 0


def test_a_late_fragment_of_an_abandoned_unordered_message_does_not_start_a_message_that_never_completes() -> None:
    reasm, events, stats = _reasm(2)
    reasm.fragment(1, IDataChunk(1, 1, 7, 0, 0, b"a", True, True, False))
    reasm.forward(0, [(1, True, 7)])
    assert reasm.held == 0
    reasm.fragment(9, IDataChunk(9, 1, 7, 0, 1, b"b", True, False, False))  # its TSN was above the forward's
    reasm.fragment(8, IDataChunk(8, 1, 5, 0, 1, b"c", True, False, True))  # an older one, also abandoned
    assert reasm.held == 0 and stats["stale_fragments"] == 2
    reasm.fragment(10, IDataChunk(10, 1, 8, 3, 0, b"d", True, True, False))  # the next one goes on
    reasm.fragment(11, IDataChunk(11, 1, 8, 0, 1, b"e", True, False, True))
    assert [e.data for e in events] == [b"de"]


def test_forward_on_an_ordered_stream_releases_what_waited_and_skips_to_the_next_mid() -> None:
    reasm, events, _ = _reasm(2)
    reasm.message(IDataChunk(2, 0, 1, 11, 0, b"one"))  # MID 0 missing: waits
    reasm.fragment(3, IDataChunk(3, 0, 2, 12, 0, b"tw", False, True, False))  # MID 2 partial, abandoned
    reasm.message(IDataChunk(4, 0, 3, 13, 0, b"three"))  # MID 3 waits
    reasm.message(IDataChunk(5, 0, 5, 15, 0, b"five"))  # MID 5 waits for 4
    reasm.forward(0, [(0, False, 2), (1, False, 0x7FFFFFF0), (7, False, 3)])  # stream 7 does not exist
    assert [e.ppid for e in events] == [11, 13]
    reasm.message(IDataChunk(6, 0, 4, 14, 0, b"four"))
    assert [e.ppid for e in events] == [11, 13, 14, 15]
    # stream 1 skipped far ahead (serially, less than half the MID space) expects the MID after the one named
    reasm.message(IDataChunk(7, 1, 0x7FFFFFF1, 21, 0, b"x"))
    assert events[-1].ppid == 21
    reasm.forward(0, [(0, False, 1)])  # behind where stream 0 is: nothing happens
    assert len(events) == 5 and reasm.assembling == 0


def test_reset_streams_start_mids_over_and_drop_what_the_old_numbering_held() -> None:
    reasm, events, _ = _reasm(2)
    reasm.message(IDataChunk(1, 0, 0, 1, 0, b"a"))
    reasm.message(IDataChunk(2, 0, 5, 2, 0, b"orphan"))  # waits for MIDs that never come
    reasm.fragment(3, IDataChunk(3, 0, 9, 3, 0, b"p", True, True, False))
    reasm.fragment(4, IDataChunk(4, 1, 0, 4, 0, b"q", False, True, False))  # stream 1 is not reset
    reasm.opened[0] = reasm.opened[1] = 1  # as the association marks them
    reasm.reset_streams([0, 9])
    assert reasm.assembling == 1 + CHUNK_COST and reasm.fragments == 1
    assert list(reasm.opened) == [0, 1]
    reasm.message(IDataChunk(5, 0, 0, 5, 0, b"b"))
    assert [e.data for e in events] == [b"a", b"b"]


def test_added_streams_start_at_mid_0_and_the_old_ones_keep_their_place() -> None:
    reasm, events, _ = _reasm(1)
    reasm.message(IDataChunk(1, 0, 0, 1, 0, b"a"))
    reasm.grow(3)
    reasm.grow(2)  # never shrinks
    assert len(reasm.opened) == 3
    reasm.message(IDataChunk(2, 2, 0, 2, 0, b"new"))
    reasm.message(IDataChunk(3, 0, 1, 3, 0, b"b"))
    reasm.forward(0, [(2, False, 5)])  # the added stream takes part in forwards too
    reasm.message(IDataChunk(4, 2, 6, 4, 0, b"after"))
    assert [e.data for e in events] == [b"a", b"new", b"b", b"after"]


# -- what reassembly charges against what it costs -------------------------------------------------------------


def _traced(build: Callable[[], Any]) -> tuple[int, Any]:
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


def _from_wire(chunks: list[IDataChunk]) -> Callable[[], InterleavedReassembly]:
    wire = [serialize_packet(1, 2, 3, [c]) for c in chunks]

    def build() -> InterleavedReassembly:
        reasm = InterleavedReassembly(4, deque(), {"messages_received": 0})
        for raw in wire:
            (c,) = parse_packet(raw).chunks
            assert isinstance(c, IDataChunk)
            if c.beginning and c.ending:
                reasm.message(c)
            else:
                reasm.fragment(c.tsn, c)
        return reasm

    return build


WORST_FRAGMENTS = {
    # each fragment a message of its own (the worst case): large MIDs and FSNs, so none is a cached small int
    "ordered": lambda i: IDataChunk(1000 + i, 1, 1 + i, 0, 100_000 + i, b"z", False, False, False),
    "unordered": lambda i: IDataChunk(1000 + i, 2, 0x7000_0000 + i, 0, 100_000 + i, b"z", True, False, False),
    "first fragments": lambda i: IDataChunk(1000 + i, 1, 1 + i, 7, 0, b"z", False, True, False),
    "one message": lambda i: IDataChunk(1000 + i, 1, 3, 0, 1 + i, b"z", False, False, False),
}


@pytest.mark.parametrize("kind", list(WORST_FRAGMENTS))
@pytest.mark.parametrize("n", [1366, 2731, 5000])  # just after the maps grew, and between
def test_a_held_i_data_fragment_costs_no_more_than_it_is_charged(kind: str, n: int) -> None:
    used, reasm = _traced(_from_wire([WORST_FRAGMENTS[kind](i) for i in range(n)]))
    assert reasm.fragments == n and reasm.held == n * (1 + CHUNK_COST)
    assert used <= reasm.held, f"{used / n:.0f} B per 1-byte fragment, charged {1 + CHUNK_COST}"


def test_a_waiting_message_costs_no_more_than_it_is_charged() -> None:
    n = 3000
    used, reasm = _traced(_from_wire([IDataChunk(1000 + i, 1, 1 + i, 7, 0, b"m") for i in range(n)]))  # 0 missing
    assert reasm.held == n * (1 + MESSAGE_COST) and used <= reasm.held, used / n


def test_unordered_completions_below_a_message_that_never_completes_do_not_grow_memory() -> None:
    reasm, events, _ = _reasm(2)
    reasm.fragment(0, IDataChunk(0, 1, 0, 0, 0, b"stuck", True, True, False))  # MID 0 never completes

    def complete_many() -> int:
        for m in range(1, 20_001):
            reasm.fragment(2 * m, IDataChunk(2 * m, 1, m, 0, 0, b"a", True, True, False))
            reasm.fragment(2 * m + 1, IDataChunk(2 * m + 1, 1, m, 0, 1, b"b", True, False, True))
            events.popleft()
            reasm.consumed(2)
        return 0

    used, _ = _traced(complete_many)
    assert used < 20_000, f"{used} bytes left after 20,000 messages came and went"
    assert reasm.held == 5 + CHUNK_COST


def test_i_forward_tsn_entries_cost_nothing_per_held_message_they_do_not_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile peer keeps many partial messages far ahead and sends forwards that creep towards them: each
    entry must not look at them (counted: heap pops), and the one that reaches them drops each exactly once."""
    pops = 0
    real = heapq.heappop

    def counting(heap: list[int]) -> int:
        nonlocal pops
        pops += 1
        return real(heap)

    monkeypatch.setattr(interleaved_module, "heappop", counting)
    reasm, _, _ = _reasm(2)
    k = 500
    for i in range(k):
        reasm.fragment(i, IDataChunk(i, 0, 100_000 + i, 0, 0, b"o", False, True, False))
        reasm.fragment(i, IDataChunk(i, 1, 100_000 + i, 0, 0, b"u", True, True, False))
    for m in range(5000):
        reasm.forward(0, [(0, False, m), (1, True, m)])
    assert pops == 0 and reasm.fragments == 2 * k
    reasm.forward(0, [(0, False, 200_000), (1, True, 200_000)])
    assert pops == 2 * k and reasm.fragments == 0 and reasm.held == 0


# -- schedulers ----------------------------------------------------------------------------------------------------

FRAG = 100


def _drain(s: Scheduler, limit: int = 1_000_000) -> list[OutChunk]:
    out: list[OutChunk] = []
    while s and len(out) < limit:
        head = s.head
        assert head is not None and s.peek() is head.chunks[0]
        out.append(s.take())
    return out


def _tag(c: OutChunk) -> str:
    """Stream, message letter (its first data byte) and B/E: "1A" for a whole message, "1A<" first, "1A>" last."""
    mark = {FLAG_B | FLAG_E: "", FLAG_B: "<", FLAG_E: ">", 0: "-"}[c.flags & (FLAG_B | FLAG_E)]
    return f"{c.stream_id}{chr(c.data[0])}{mark}"


def _push(s: Scheduler, sid: int, letter: str, chunks: int = 1, **kw: Any) -> None:
    s.push(sid, letter.encode() * (FRAG * chunks), 0, kw.pop("unordered", False), **kw)


def _scenario(s: Scheduler) -> list[str]:
    _push(s, 1, "A", 3)
    _push(s, 2, "C")
    _push(s, 1, "B")
    _push(s, 2, "D", 2)
    _push(s, 3, "E")
    return [_tag(c) for c in _drain(s)]


def test_fcfs_sends_whole_messages_in_the_order_they_were_queued() -> None:
    for idata in (False, True):
        s = make_scheduler("fcfs", 4, FRAG, idata=idata)
        assert not s.interleave
        assert _scenario(s) == ["1A<", "1A-", "1A>", "2C", "1B", "2D<", "2D>", "3E"]


def test_rr_without_i_data_takes_the_streams_in_turn_a_whole_message_each() -> None:
    assert _scenario(make_scheduler("rr", 4, FRAG)) == ["1A<", "1A-", "1A>", "2C", "3E", "1B", "2D<", "2D>"]


def test_rr_with_i_data_interleaves_one_chunk_per_stream_per_turn() -> None:
    s = make_scheduler("rr", 4, FRAG, idata=True)
    assert _scenario(s) == ["1A<", "2C", "3E", "1A-", "2D<", "1A>", "2D>", "1B"]


def test_prio_goes_strictly_by_priority_round_robin_among_equals() -> None:
    s = make_scheduler("prio", 8, FRAG)
    s.set_priority(1, 10)
    s.set_priority(2, 300)
    s.set_priority(3, 300)
    assert s.priority(4) == DEFAULT_PRIORITY
    for letter in "ab":
        _push(s, 1, letter.upper())
        _push(s, 2, letter.upper(), 2)
        _push(s, 3, letter.upper())
    _push(s, 4, "Z")  # the default, 0x7FFF, is above them all
    assert [_tag(c) for c in _drain(s)] == ["4Z", "2A<", "2A>", "3A", "2B<", "2B>", "3B", "1A", "1B"]


@pytest.mark.parametrize("idata", [False, True])
def test_a_higher_priority_message_preempts_between_chunks_only_with_i_data(idata: bool) -> None:
    s = make_scheduler("prio", 4, FRAG, idata=idata)
    s.set_priority(1, 1)
    s.set_priority(2, 2)
    _push(s, 1, "L", 4)
    first = [_tag(s.take())]
    _push(s, 2, "H")
    rest = [_tag(c) for c in _drain(s)]
    if idata:
        assert first + rest == ["1L<", "2H", "1L-", "1L-", "1L>"]
    else:
        assert first + rest == ["1L<", "1L-", "1L-", "1L>", "2H"]


def test_set_priority_while_queued_moves_a_stream_between_levels() -> None:
    for idata in (False, True):
        s = make_scheduler("prio", 4, FRAG, idata=idata)
        _push(s, 1, "A", 2)
        _push(s, 2, "B")
        _push(s, 3, "C")
        assert _tag(s.take()) == "1A<"
        s.set_priority(3, 40_000)  # above the default: next, as soon as the policy allows
        s.set_priority(1, 1)  # the head: moves down once its message has ended (or at once with I-DATA)
        out = [_tag(c) for c in _drain(s)]
        assert out == (["3C", "2B", "1A>"] if idata else ["1A>", "3C", "2B"])


def _backlog(s: Scheduler, streams: dict[int, int], messages: int, size: int) -> None:
    for sid, priority in streams.items():
        s.set_priority(sid, priority)
    for _ in range(messages):
        for sid in streams:
            s.push(sid, bytes(size), 0, False)


@pytest.mark.parametrize("idata", [False, True])
def test_wfq_shares_the_bytes_in_proportion_to_the_weights(idata: bool) -> None:
    s = make_scheduler("wfq", 4, FRAG, idata=idata)
    _backlog(s, {1: 0, 2: 1, 3: 3}, 400, FRAG)  # weights 1, 2, 4
    counts = Counter(c.stream_id for c in _drain(s, 700))
    assert abs(counts[1] - 100) <= 1 and abs(counts[2] - 200) <= 1 and abs(counts[3] - 400) <= 1, counts


def test_wfq_with_equal_weights_shares_bytes_not_messages() -> None:
    s = make_scheduler("wfq", 4, 1000)
    for _ in range(200):
        s.push(1, bytes(984), 0, False)  # 1000 bytes a chunk with its header
    for _ in range(2000):
        s.push(2, bytes(84), 0, False)  # 100
    sent = Counter[int]()
    for c in _drain(s, 1100):
        sent[c.stream_id] += c.size + 16
    assert abs(sent[1] - sent[2]) <= 1000, sent


def test_wfq_gives_no_credit_for_idle_time() -> None:
    s = make_scheduler("wfq", 4, FRAG)
    for _ in range(500):
        s.push(1, bytes(FRAG), 0, False)
    _drain(s, 300)  # stream 1 alone for a while
    for _ in range(500):
        s.push(2, bytes(FRAG), 0, False)
    counts = Counter(c.stream_id for c in _drain(s, 100))
    assert counts[1] == counts[2] == 50, counts


@pytest.mark.parametrize("name", ["rr", "prio", "wfq"])
def test_with_i_data_a_1mb_message_delays_small_messages_by_about_one_chunk_per_stream(name: str) -> None:
    """The head-of-line blocking RFC 8260 removes: 64-byte messages queued behind a 1 MB one on another stream."""
    frag = 1200 - 12 - 20
    for idata in (False, True):
        s = make_scheduler(name, 8, frag, idata=idata)
        s.push(0, bytes(1_000_000), 1, False)
        s.take()
        for sid in (1, 2, 3):
            s.push(sid, bytes(64), 2, False)
        out = _drain(s)
        small_at = [i for i, c in enumerate(out) if c.stream_id != 0]
        if idata:
            assert small_at == [1, 2, 3], small_at  # one more chunk of the large message, then each in turn
        else:
            assert small_at[0] == 1_000_000 // frag  # the rest of the large message first


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_numbers_ssn_per_stream_and_with_i_data_32_bit_mids_with_a_counter_for_unordered(name: str) -> None:
    s = make_scheduler(name, 4, FRAG)
    s._number()  # made by the first message; here before it, to start stream 1 where it is about to wrap
    s._ssn[1] = 0xFFFF  # about to wrap
    for _ in range(3):
        _push(s, 1, "o")
        _push(s, 1, "u", unordered=True)
    out = _drain(s)
    assert [c.ssn for c in out if not c.flags & FLAG_U] == [0xFFFF, 0, 1]
    assert [c.ssn for c in out if c.flags & FLAG_U] == [0, 0, 0]  # unordered DATA has no SSN
    s = make_scheduler(name, 4, FRAG, idata=True)
    s._number()
    s._ssn[1] = 0xFFFF
    s._umid[1] = MASK
    for _ in range(3):
        _push(s, 1, "o", 2)
        _push(s, 1, "u", 2, unordered=True)
    out = _drain(s)
    assert [c.ssn for c in out if not c.flags & FLAG_U] == [0xFFFF, 0xFFFF, 0x10000, 0x10000, 0x10001, 0x10001]
    assert [c.ssn for c in out if c.flags & FLAG_U] == [MASK, MASK, 0, 0, 1, 1]


def test_i_data_chunks_carry_their_fsn_and_encode_as_rfc8260_says() -> None:
    s = make_scheduler("rr", 4, 4)
    s.push(2, b"abcdefghij", 99, False)  # queued before I-DATA was agreed: FSNs are stamped then
    s.set_idata(True)
    s.push(2, b"klmnopq", 98, True)
    out = _drain(s)
    for tsn, c in enumerate(out):
        c.tsn = tsn
    parsed = parse_packet(serialize_packet(1, 2, 3, [encode_idata(c, immediate=i == 0) for i, c in enumerate(out)]))
    assert parsed.chunks == [
        IDataChunk(0, 2, 0, 99, 0, b"abcd", False, True, False, True),
        IDataChunk(1, 2, 0, 0, 1, b"efgh", False, False, False),
        IDataChunk(2, 2, 0, 0, 2, b"ij", False, False, True),
        IDataChunk(3, 2, 0, 98, 0, b"klmn", True, True, False),
        IDataChunk(4, 2, 0, 0, 1, b"opq", True, False, True),
    ]


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("idata", [False, True])
def test_drop_message_removes_the_rest_of_a_message_the_head_s_or_a_named_stream_s(name: str, idata: bool) -> None:
    s = make_scheduler(name, 4, FRAG, idata=idata)
    _push(s, 1, "A", 3)
    _push(s, 2, "B", 2)
    _push(s, 1, "C")
    first = s.take()
    assert _tag(first) == "1A<"
    key = 1 if s.interleave else None
    if s.interleave:
        s.take()  # stream 2's first chunk, maybe: the head moved on
    dropped = s.drop_message(key)
    assert [_tag(c) for c in dropped][-1] == "1A>" and all(c.abandoned for c in dropped)
    rest = [_tag(c) for c in _drain(s)]
    assert "1C" in rest and not any(t.startswith("1A") for t in rest)
    assert s.bytes == s.chunks == 0


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_a_paused_stream_sends_what_was_queued_before_and_holds_what_came_after_until_resumed(name: str) -> None:
    s = make_scheduler(name, 4, FRAG)
    _push(s, 1, "A", 2)
    _push(s, 2, "B")
    s.pause(1)
    assert s.is_paused(1) and not s.is_paused(2)
    _push(s, 1, "C", 2)
    _push(s, 2, "D")
    tail = s.tail(1)
    assert tail is not None and _tag(tail) == "1A>"
    assert s.chunks == 6 and s.paused == 2
    before = [_tag(c) for c in _drain(s)]
    assert sorted(before) == sorted(["1A<", "1A>", "2B", "2D"]) and tail.ssn == 0
    s.resume(1, reset=True)
    assert s.paused == 0
    after = _drain(s)
    assert [_tag(c) for c in after] == ["1C<", "1C>"] and after[0].ssn == 0  # numbered from 0 again
    assert s.bytes == s.chunks == 0


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_a_reset_stream_starts_both_mid_counters_over_and_others_keep_theirs(name: str) -> None:
    s = make_scheduler(name, 4, FRAG, idata=True)
    for sid in (1, 2):
        _push(s, sid, "o")
        _push(s, sid, "u", unordered=True)
    _drain(s)
    s.pause(1)
    for sid in (1, 2):
        _push(s, sid, "o")
        _push(s, sid, "u", unordered=True)
    s.resume(1, reset=True)
    numbers = {(c.stream_id, bool(c.flags & FLAG_U)): c.ssn for c in _drain(s)}
    assert numbers == {(1, False): 0, (1, True): 0, (2, False): 1, (2, True): 1}


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("idata", [False, True])
def test_drop_stream_keeps_only_the_rest_of_a_message_that_has_begun(name: str, idata: bool) -> None:
    s = make_scheduler(name, 4, FRAG, idata=idata)
    _push(s, 1, "A", 3)
    _push(s, 1, "B")
    _push(s, 2, "C")
    assert _tag(s.take()) == "1A<"
    s.pause(1)
    _push(s, 1, "D", 2)
    assert s.drop_stream(1) == FRAG * 3  # B and the paused D
    out = [_tag(c) for c in _drain(s)]
    assert sorted(out) == sorted(["1A-", "1A>", "2C"])
    assert s.bytes == s.chunks == s.paused == 0


def test_unknown_scheduler_names_and_priorities_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown stream scheduler 'lifo'"):
        make_scheduler("lifo", 1, FRAG)
    with pytest.raises(ValueError, match=r"priority must be 0\.\.65535"):
        make_scheduler("prio", 1, FRAG).set_priority(0, 70_000)


@pytest.mark.parametrize("name", ["rr", "fcfs"])
@pytest.mark.parametrize("seed", range(40))
def test_rr_and_fcfs_without_i_data_produce_exactly_what_send_queue_produces(name: str, seed: int) -> None:
    rng = random.Random(seed)
    old = SendQueue(8, 10, name)  # type: ignore[arg-type]
    new = make_scheduler(name, 8, 10)
    got_old: list[tuple[Any, ...]] = []
    got_new: list[tuple[Any, ...]] = []
    for step in range(80):
        if rng.random() < 0.5:
            sid, n, u = rng.randrange(8), rng.randint(1, 35), rng.random() < 0.3
            lane = DATAGRAMS if name == "rr" and rng.random() < 0.1 else None  # fcfs: see Fcfs's docstring
            for q in (old, new):
                q.push(sid, bytes([step]) * n, step, u, lane=lane)
        for _ in range(rng.randint(0, 3)):
            assert bool(old) == bool(new)
            if not old:
                break
            if rng.random() < 0.05:
                for q, got in ((old, got_old), (new, got_new)):
                    got.append(tuple((c.stream_id, c.data) for c in q.drop_message()))
                continue
            for q, got in ((old, got_old), (new, got_new)):
                c = q.take()
                got.append((c.stream_id, c.ssn, c.flags, c.data, c.ppid))
        assert (old.bytes, old.chunks) == (new.bytes, new.chunks)
    assert got_old == got_new


_push_op = st.tuples(
    # stream, chunks, bytes in the last chunk (at least 9: every chunk's bytes are unique), unordered, datagram
    st.just("push"),
    st.integers(0, 2),
    st.integers(1, 3),
    st.integers(9, FRAG),
    st.booleans(),
    st.booleans(),
)
ops_st = st.lists(
    st.one_of(
        _push_op,
        _push_op,
        _push_op,
        st.tuples(st.just("take"), st.integers(1, 4)),
        st.tuples(st.just("take"), st.integers(1, 4)),
        st.tuples(st.just("drop"), st.integers(0, 2)),
        st.tuples(st.just("pause"), st.integers(0, 2)),
        st.tuples(st.just("resume"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("drop_stream"), st.integers(0, 2)),
        st.tuples(st.just("priority"), st.integers(0, 2), st.sampled_from([0, 1, 100, DEFAULT_PRIORITY, 0xFFFF])),
    ),
    min_size=30,
    max_size=100,
)


@settings(derandomize=True, deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(list(SCHEDULERS)), idata=st.booleans(), budget=st.sampled_from([0, 1, 4 * FRAG]), ops=ops_st
)
def test_schedulers_keep_their_promises_under_random_operations(
    name: str, idata: bool, budget: int, ops: list[tuple[Any, ...]]
) -> None:
    """Every chunk leaves once or is dropped, a stream's in the order queued; without interleaving a message's
    fragments leave back to back; a paused stream's later messages wait; numbers run on per stream and kind,
    from 0 after a reset; the counters add up; and there is a head exactly when something may go. With an
    interleaving budget, the messages of more than one chunk that may be leaving (counted from when their queue
    may send them to their last chunk) stay within it, or are one alone; no message is ever stuck behind it."""
    s = make_scheduler(name, 5, FRAG, idata=idata)
    s.set_budget(budget)
    pushed: dict[int, list[bytes]] = {}  # per queue key, the chunks' data in push order (each unique)
    left: list[OutChunk] = []
    paused_data: set[bytes] = set()
    open_msg: int | None = None  # without interleaving, the queue key whose message is leaving
    serial = 0
    next_number: dict[tuple[int, bool], int] = {}
    current: dict[int, int] = {}  # per queue key, the number of its message leaving
    mask = MASK if idata else 0xFFFF

    def check_take(c: OutChunk) -> None:
        nonlocal open_msg
        key = c.stream_id if c.data[:1] != b"D" else DATAGRAMS
        assert c.data not in paused_data
        expected = pushed[key].pop(0)
        assert c.data == expected  # a queue's chunks leave in push order, none twice
        if not s.interleave:
            assert open_msg in (None, key)
            open_msg = None if c.flags & FLAG_E else key
        unordered = bool(c.flags & FLAG_U)
        if not idata and unordered:
            assert c.ssn == 0  # unordered DATA has no SSN
        elif c.flags & FLAG_B:
            k = (c.stream_id, unordered)
            assert c.ssn == next_number.get(k, 0)  # numbers run on per stream and kind, as messages begin
            next_number[k] = (c.ssn + 1) & mask
            current[key] = c.ssn
        else:
            assert c.ssn == current[key]  # a fragment carries its message's number
        if idata and not c.flags & FLAG_B:
            assert c.ppid > 0  # its FSN
        left.append(c)

    for op in ops:
        kind = op[0]
        if kind == "push":
            _k, sid, nchunks, last, unordered, datagram = op
            n = (nchunks - 1) * FRAG + last
            tag = b"D" if datagram else b"S"
            chunks_before = s.chunks
            data = bytearray(n)
            lane = DATAGRAMS if datagram else None
            # unique bytes per chunk so each is recognised: tag, serial, offset
            for off in range(0, n, FRAG):
                piece = (tag + serial.to_bytes(4, "big") + off.to_bytes(4, "big"))[: min(FRAG, n - off)]
                data[off : off + len(piece)] = piece
            serial += 1
            s.push(sid, bytes(data), 7, unordered or datagram, lane=lane)
            pieces = [bytes(data[o : o + FRAG]) for o in range(0, n, FRAG)]
            if s.is_paused(sid) and not datagram:
                paused_data.update(pieces)
                assert s.chunks - chunks_before == len(pieces)
                pushed.setdefault(-100 - sid, []).extend(pieces)  # waiting aside
            else:
                pushed.setdefault(DATAGRAMS if datagram else sid, []).extend(pieces)
        elif kind == "take":
            for _ in range(op[1]):
                if not s:
                    break
                check_take(s.take())
        elif kind == "drop":
            key = op[1] if s.interleave else None
            dropped = s.drop_message(key)
            for c in dropped:
                k = c.stream_id if c.data[:1] != b"D" else DATAGRAMS
                assert pushed[k].pop(0) == c.data and c.abandoned
            if dropped and not s.interleave:
                open_msg = None
        elif kind == "pause":
            s.pause(op[1])
        elif kind == "resume":
            sid = op[1]
            was = s.is_paused(sid)
            s.resume(sid, op[2])
            if was:
                waiting = pushed.pop(-100 - sid, [])
                paused_data.difference_update(waiting)
                pushed.setdefault(sid, []).extend(waiting)
            if op[2]:
                next_number[(sid, False)] = next_number[(sid, True)] = 0
        elif kind == "drop_stream":
            sid = op[1]
            in_flight = s.in_progress(sid)
            q = pushed.get(sid, [])
            keep = 0
            if in_flight:  # the rest of the message leaving stays
                for i, piece in enumerate(q):
                    keep = i + 1
                    if _last_piece(piece, q, i):
                        break
            removed = q[keep:] + pushed.pop(-100 - sid, [])
            before = s.bytes
            assert s.drop_stream(sid) == sum(len(d) for d in removed) == before - s.bytes
            paused_data.difference_update(removed)
            del q[keep:]
            if s.is_paused(sid):
                pushed[-100 - sid] = []
        elif kind == "priority":
            s.set_priority(op[1], op[2])
        counted = [q.busy for q in s._queues.values() if q.busy]
        assert s.started == sum(counted) and (s.started <= budget or len(counted) == 1)
        assert not s.gated or all(q.busy for q in s._queues.values() if q.in_progress())  # leaving: counted
        assert not counted or s.gated
        total = sum(len(v) for v in pushed.values())
        assert s.chunks == total and s.bytes == sum(len(d) for v in pushed.values() for d in v)
        assert s.paused == sum(len(v) for k, v in pushed.items() if k <= -100)
        sendable = sum(len(v) for k, v in pushed.items() if k > -100)
        assert bool(s) == (sendable > 0)
    for k in list(pushed):
        if k <= -100:
            s.resume(-100 - k, False)
            pushed.setdefault(-100 - k, []).extend(pushed.pop(k))
            paused_data.clear()
    while s:
        check_take(s.take())
    assert all(not v for v in pushed.values()) and s.bytes == s.chunks == 0 and s.head is None
    assert s.started == 0 and not s._parked


def _last_piece(data: bytes, q: list[bytes], i: int) -> bool:
    """``q[i]`` is the last chunk of its message: the next one (if any) starts another (offset 0)."""
    if i + 1 >= len(q):
        return True
    nxt = q[i + 1]
    return nxt[1:5] != data[1:5] or nxt[5:9] == b"\x00\x00\x00\x00"


def test_sack_chunks_are_untouched_by_the_new_parsers() -> None:
    s = SackChunk(5, 6, [(2, 3)], [4])
    assert parse_packet(serialize_packet(1, 2, 3, [s])).chunks == [s]
