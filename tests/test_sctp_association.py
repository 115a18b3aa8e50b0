"""SCTP association (sans-IO) over the in-memory network: data transfer on clean and lossy links, fragmentation,
bundling, SACKs, flow and congestion control, retransmission limits, heartbeats, shutdown and abort (RFC 9260).

Everything runs on a simulated clock with seeded randomness; assertions on simulated times are exact and
deterministic, never wall-clock timing.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest

from mux.sctp import events as ev
from mux.sctp.association import CLOSED, ESTABLISHED, Association, BufferFull, SctpError
from mux.sctp.chunks import (
    AbortChunk,
    DataChunk,
    ErrorChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    IDataChunk,
    InitChunk,
    SackChunk,
    ShutdownChunk,
    UnknownChunk,
)
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import Endpoint
from mux.sctp.packet import parse_packet
from mux.sctp.params import INVALID_STREAM, NO_USER_DATA, UNRECOGNIZED_CHUNK, USER_INITIATED_ABORT
from tests.sctp_link import Network, Node, RawPeer, Sent, chunks_of, drain, handshake, raw_accept, raw_connect

A = ("10.0.0.1", 40001)
B = ("10.0.0.2", 40002)
NOW = 1000.0
#: a user data chunk: DATA, or I-DATA between two mux peers (RFC 8260, agreed by default)
DATA = (DataChunk, IDataChunk)
LOSSY = {"loss": 0.05, "reorder": 0.05, "dup": 0.02, "delay": 0.01, "reorder_delay": 0.03}


def setup(
    seed: int = 1,
    client: SctpConfig | None = None,
    server: SctpConfig | None = None,
    path: dict[str, float] | None = None,
) -> tuple[Network, Node, Node, Association, Association]:
    net = Network(seed, **(path or {}))
    a = net.add(A, client)
    b = net.add(B, server or client)
    ca, sa = handshake(net, a, b)
    return net, a, b, ca, sa


def primary(assoc: Association) -> dict[str, Any]:
    p = assoc.status()["primary"]
    assert isinstance(p, dict)
    return p


# -- workloads -----------------------------------------------------------------------------------------------------


@dataclass
class Msg:
    ppid: int
    stream: int
    unordered: bool
    data: bytes


def workload(seed: int, count: int, streams: int, sizes: list[int], base: int) -> list[Msg]:
    """``count`` messages with random sizes plus the given ``sizes``; each carries a unique ppid as its identity."""
    rng = random.Random(seed)
    all_sizes = [*sizes, *(rng.choice((rng.randint(1, 64), rng.randint(1, 3000))) for _ in range(count))]
    rng.shuffle(all_sizes)
    return [
        Msg(base + i, rng.randrange(streams), rng.random() < 0.25, random.Random(base + i).randbytes(n))
        for i, n in enumerate(all_sizes)
    ]


@dataclass
class Feeder:
    """An application that sends its messages as fast as ``sndbuf`` lets it."""

    assoc: Association
    msgs: list[Msg]
    queue: deque[Msg] = field(init=False)
    full: int = 0

    def __post_init__(self) -> None:
        self.queue = deque(self.msgs)

    def __call__(self) -> None:
        while self.queue and self.assoc.state == ESTABLISHED:
            m = self.queue[0]
            try:
                self.assoc.send(m.stream, m.data, ppid=m.ppid, unordered=m.unordered)
            except BufferFull:
                self.full += 1
                return
            self.queue.popleft()


def received(node: Node, assoc: Association) -> list[ev.DataReceived]:
    return node.of(assoc, ev.DataReceived)


def check_delivery(msgs: list[Msg], got: list[ev.DataReceived]) -> None:
    """Every message exactly once, intact, with its ppid, stream and flag; ordered ones in order per stream."""
    counts = Counter(e.ppid for e in got)
    assert set(counts) == {m.ppid for m in msgs}, "lost or invented messages"
    assert all(n == 1 for n in counts.values()), "a message was delivered twice"
    by_ppid = {m.ppid: m for m in msgs}
    for e in got:
        m = by_ppid[e.ppid]
        assert (e.stream_id, e.unordered, len(e.data)) == (m.stream, m.unordered, len(m.data))
        assert e.data == m.data
    streams = {m.stream for m in msgs}
    for s in streams:
        sent_order = [m.ppid for m in msgs if m.stream == s and not m.unordered]
        got_order = [e.ppid for e in got if e.stream_id == s and not e.unordered]
        assert got_order == sent_order, f"stream {s} out of order"


def transfer(net: Network, a: Node, b: Node, ca: Association, sa: Association, mab: list[Msg], mba: list[Msg]) -> None:
    fa, fb = Feeder(ca, mab), Feeder(sa, mba)

    def feed() -> None:
        fa()
        fb()

    done = net.run_until(
        lambda: len(received(b, sa)) >= len(mab) and len(received(a, ca)) >= len(mba), 300, on_step=feed
    )
    assert done, (len(received(b, sa)), len(mab), len(received(a, ca)), len(mba), ca.status(), sa.status())
    check_delivery(mab, received(b, sa))
    check_delivery(mba, received(a, ca))
    # and everything gets acknowledged, so nothing stays queued for retransmission
    assert net.run_until(lambda: ca.buffered_amount() == 0 and sa.buffered_amount() == 0, 60)
    assert not a.of(ca, ev.AssociationAborted) and not b.of(sa, ev.AssociationAborted)


# -- data transfer ---------------------------------------------------------------------------------------------------


def test_many_streams_and_sizes_over_a_clean_link() -> None:
    net, a, b, ca, sa = setup(2)
    frag = ca.fragmentation_point
    sizes = [1, 2, 3, frag - 1, frag, frag + 1, 2 * frag, 65_536, 200_000]
    mab = workload(10, 400, 16, sizes, base=1)
    mba = workload(11, 100, 16, [200_000, frag + 1], base=100_000)
    transfer(net, a, b, ca, sa, mab, mba)
    assert {m.stream for m in mab} == set(range(16))
    assert any(m.unordered for m in mab) and any(len(m.data) == 200_000 for m in mab)
    assert ca.stats["retransmitted_chunks"] == 0 and ca.stats["t3_expiries"] == 0
    assert net.oversize == 0


@pytest.mark.parametrize("seed", range(5))
def test_every_message_exactly_once_over_a_lossy_link(seed: int) -> None:
    net, a, b, ca, sa = setup(100 + seed, path=LOSSY)
    frag = ca.fragmentation_point
    mab = workload(seed, 150, 12, [1, frag, frag + 1, 30_000, 200_000], base=1)
    mba = workload(seed + 50, 80, 12, [1, 50_000], base=100_000)
    transfer(net, a, b, ca, sa, mab, mba)
    # the link did lose, reorder and duplicate, so recovery was exercised
    assert ca.stats["retransmitted_chunks"] > 0
    assert sa.stats["duplicate_tsns"] + ca.stats["duplicate_tsns"] > 0


HARSH = {"loss": 0.2, "reorder": 0.2, "dup": 0.05, "delay": 0.01, "reorder_delay": 0.05}
SHUFFLE = {"loss": 0.0, "reorder": 0.5, "dup": 0.0, "delay": 0.005, "reorder_delay": 0.1}


@pytest.mark.parametrize("kind", ["harsh", "shuffle", "asymmetric"])
@pytest.mark.parametrize("seed", [1, 2])
def test_transfer_survives_harsh_and_asymmetric_paths(kind: str, seed: int) -> None:
    net = Network(300 + seed, **(HARSH if kind == "harsh" else SHUFFLE if kind == "shuffle" else {}))
    if kind == "asymmetric":  # a fast clean way out, a slow lossy way back (SACKs get lost)
        net.path(A, B).delay = 0.005
        back = net.path(B, A)
        back.delay, back.loss, back.reorder, back.reorder_delay = 0.08, 0.1, 0.1, 0.04
    a = net.add(A)
    b = net.add(B)
    ca, sa = handshake(net, a, b, 60)
    mab = workload(seed, 150, 8, [1, 100_000], base=1)
    mba = workload(seed + 70, 60, 8, [20_000], base=100_000)
    transfer(net, a, b, ca, sa, mab, mba)


class NearWrap(random.Random):
    """Draws every initial TSN just below 2**32, so a transfer crosses the wrap at once."""

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        if start == 0 and stop == 1 << 32:
            return 0xFFFF_FF80
        return super().randrange(start, stop, step)


@pytest.mark.parametrize("seed", [1, 2])
def test_tsn_wraps_around_on_a_lossy_link(seed: int) -> None:
    net = Network(400 + seed, **LOSSY)
    a = net.add(A, rng=NearWrap(seed))
    b = net.add(B, rng=NearWrap(seed + 10))
    ca, sa = handshake(net, a, b)
    mab = workload(seed, 300, 4, [100_000], base=1)
    mba = workload(seed + 3, 300, 4, [100_000], base=100_000)
    transfer(net, a, b, ca, sa, mab, mba)
    for x in (ca, sa):
        assert x.stats["tx_data_chunks"] > 0x80  # so the TSNs did wrap


def test_ssn_wraps_around_after_65536_messages() -> None:
    net, a, b, ca, sa = setup(24, path={"loss": 0.01, "reorder": 0.02, "delay": 0.01})
    msgs = [Msg(i + 1, 3, False, i.to_bytes(3, "big")) for i in range(66_000)]
    transfer(net, a, b, ca, sa, msgs, [])


def test_tsn_wraps_around_on_the_receive_side() -> None:
    server = Endpoint(SctpConfig(), local_port=5000, rng=random.Random(3))
    assoc, peer, _ = raw_connect(server, A, NOW, tsn=0xFFFF_FFF0)
    chunks = [peer.data(bytes([i]) * 10, stream_id=1, ppid=i) for i in range(40)]
    order = list(range(40))
    random.Random(4).shuffle(order)
    for i in order:
        server.receive_datagram(peer.packet(chunks[i]), A, NOW)
    got = [e for e in drain(assoc) if isinstance(e, ev.DataReceived)]
    assert [e.ppid for e in got] == list(range(40))
    sacks = [c for c in chunks_of(assoc.datagrams_to_send(NOW)) if isinstance(c, SackChunk)]
    assert sacks[-1].cum_tsn == (0xFFFF_FFF0 + 39) & 0xFFFF_FFFF and sacks[-1].gaps == []


def test_messages_queued_before_the_association_is_up_keep_their_order() -> None:
    net = Network(18)
    a = net.add(A)
    b = net.add(B)
    ca = a.connect(b)
    ca.send(0, b"early-1")
    ca.send(0, b"early-2")
    assert net.run_until(lambda: a.up(ca), 5)
    ca.send(0, b"after-up")
    assert net.run_until(lambda: bool(b.new_associations) and len(received(b, b.new_associations[0])) == 3, 5)
    assert [e.data for e in received(b, b.new_associations[0])] == [b"early-1", b"early-2", b"after-up"]


def test_a_message_smaller_than_the_receive_buffer_is_delivered() -> None:
    net, _a, b, ca, sa = setup(19, client=SctpConfig(), server=SctpConfig(recbuf=65_536))
    ca.send(0, bytes(65_000))
    assert net.run_until(lambda: bool(received(b, sa)) or b.closed(sa), 30)
    assert not b.of(sa, ev.AssociationAborted)
    assert [len(e.data) for e in received(b, sa)] == [65_000]


# -- bundling and the path MTU --------------------------------------------------------------------------------------


def data_sent(net: Network, src: tuple[str, int]) -> list[Sent]:
    return [s for s in net.sent_by(src) if any(isinstance(c, DATA) for c in s.chunks())]


def test_small_messages_are_bundled_within_the_mtu() -> None:
    net, _a, b, ca, sa = setup(3, path={"mtu": 1280})
    msgs = [Msg(i + 1, i % 4, False, bytes([i % 251]) * 20) for i in range(300)]
    for m in msgs:
        ca.send(m.stream, m.data, ppid=m.ppid)
    assert net.run_until(lambda: len(received(b, sa)) == 300, 10)
    check_delivery(msgs, received(b, sa))
    sent = data_sent(net, A)
    per_packet = [sum(isinstance(c, DATA) for c in s.chunks()) for s in sent]
    assert max(per_packet) >= 30  # 20-byte messages: dozens per 1280-byte packet
    assert len(sent) < 30
    assert max(len(s.data) for s in net.sent) <= 1280 - 20 - 8
    assert net.oversize == 0


@pytest.mark.parametrize(
    "host_a,host_b,pmtu,overhead",
    [
        ("10.0.0.1", "10.0.0.2", 1500, 28),
        ("fd00::1", "fd00::2", 1280, 48),
    ],
)
def test_packets_fill_but_never_exceed_the_path_mtu(host_a: str, host_b: str, pmtu: int, overhead: int) -> None:
    net = Network(4)
    cfg = SctpConfig(pmtu=pmtu)
    a = net.add((host_a, 1), cfg)
    b = net.add((host_b, 2), cfg)
    ca, sa = handshake(net, a, b)
    msgs = workload(5, 200, 4, [100_000], base=1)
    transfer(net, a, b, ca, sa, msgs, [])
    sizes = [len(s.data) for s in net.sent]
    assert max(sizes) <= pmtu - overhead
    assert max(sizes) > pmtu - overhead - 64  # and the room is used
    assert ca.fragmentation_point <= pmtu - overhead - 12 - 16


def test_sack_comes_first_when_bundled_with_data() -> None:
    net, a, b, ca, sa = setup(5)
    mab = workload(6, 150, 4, [], base=1)
    mba = workload(7, 150, 4, [], base=10_000)
    transfer(net, a, b, ca, sa, mab, mba)
    mixed = 0
    for s in net.sent:
        kinds = [type(c) for c in s.chunks()]
        data_at = [i for i, k in enumerate(kinds) if k in DATA]
        if SackChunk in kinds and data_at:
            mixed += 1
            assert kinds.index(SackChunk) < data_at[0], kinds
    assert mixed > 0


# -- SACK ------------------------------------------------------------------------------------------------------------


def tsns(s: Sent) -> list[int]:
    return [c.tsn for c in s.chunks() if isinstance(c, DATA)]


def sacks_from(net: Network, src: tuple[str, int]) -> list[tuple[Sent, SackChunk]]:
    return [(s, c) for s in net.sent_by(src) for c in s.chunks() if isinstance(c, SackChunk)]


def test_a_dropped_packet_shows_as_gap_and_is_fast_retransmitted() -> None:
    net, _a, b, ca, sa = setup(6, client=SctpConfig(nodelay=True))
    dropped: list[Sent] = []

    def drop_first_data(s: Sent) -> bool | None:
        if not dropped and s.src == A and tsns(s):
            dropped.append(s)
            return False
        return None

    net.intercept = drop_first_data
    msgs = [Msg(i + 1, 0, False, bytes([i]) * 1000) for i in range(12)]
    for m in msgs:
        ca.send(0, m.data, ppid=m.ppid)
    assert net.run_until(lambda: len(received(b, sa)) == 12, 10)
    check_delivery(msgs, received(b, sa))
    lost = tsns(dropped[0])
    gapped = [c for _s, c in sacks_from(net, B) if c.gaps]
    assert gapped, "no SACK reported the hole"
    first = gapped[0]
    assert (first.cum_tsn + 1) & 0xFFFFFFFF == lost[0]
    assert first.gaps[0][0] == len(lost) + 1  # the block starts right after the lost TSNs
    assert ca.stats["fast_retransmits"] >= 1 and ca.stats["t3_expiries"] == 0


def test_duplicated_packet_is_reported_as_duplicate_tsns() -> None:
    net, _a, b, ca, sa = setup(7, client=SctpConfig(nodelay=True))
    doubled: list[Sent] = []

    def duplicate_second_data(s: Sent) -> list[float] | None:
        if s.src == A and tsns(s):
            doubled.append(s)
            if len(doubled) == 2:
                return [0.01, 0.015]
        return None

    net.intercept = duplicate_second_data
    for i in range(6):
        ca.send(0, bytes([i]) * 1000)
    assert net.run_until(lambda: len(received(b, sa)) == 6, 10)
    net.run_for(1)
    assert len(received(b, sa)) == 6  # delivered once
    dups = [c.duplicates for _s, c in sacks_from(net, B) if c.duplicates]
    assert dups == [tsns(doubled[1])]
    assert sa.stats["duplicate_tsns"] == len(tsns(doubled[1]))


def test_immediate_bit_set_when_the_queue_drains_and_honoured_at_once() -> None:
    net, _a, b, ca, sa = setup(8, client=SctpConfig(sackdelay=200, sack_freq=2))
    ca.send(0, b"lonely message")
    assert net.run_until(lambda: bool(received(b, sa)), 5)
    (sent,) = data_sent(net, A)
    (chunk,) = [c for c in sent.chunks() if isinstance(c, DATA)]
    assert chunk.immediate
    arrival = next(t for t, src, d in b.received if d == sent.data)
    (sack_sent, _sack) = sacks_from(net, B)[-1]
    assert sack_sent.time == arrival  # not after the 200 ms delayed-SACK timer


def test_immediate_bit_only_on_the_chunk_that_empties_the_queue() -> None:
    net, _a, b, ca, sa = setup(9)
    ca.send(0, bytes(30_000))  # ~25 fragments, more than the initial cwnd lets out at once
    assert net.run_until(lambda: bool(received(b, sa)), 10)
    firsts: dict[int, DataChunk | IDataChunk] = {}
    for s in data_sent(net, A):
        for c in s.chunks():
            if isinstance(c, DATA) and c.tsn not in firsts:
                firsts[c.tsn] = c
    ordered = sorted(firsts.values(), key=lambda c: (c.tsn - min(firsts)) & 0xFFFFFFFF)
    flagged = [c.tsn for c in ordered if c.immediate]
    assert flagged == [ordered[-1].tsn] and ordered[-1].ending
    assert len(ordered) > 4


def sacks_now(assoc: Association, now: float) -> list[SackChunk]:
    return [c for c in chunks_of(assoc.datagrams_to_send(now)) if isinstance(c, SackChunk)]


def test_first_data_chunk_is_sacked_at_once() -> None:
    server = Endpoint(SctpConfig(sackdelay=200, sack_freq=2), local_port=5000, rng=random.Random(3))
    assoc, peer, _ = raw_connect(server, A, NOW)
    c = peer.data(b"first")
    server.receive_datagram(peer.packet(c), A, NOW)
    (sack,) = sacks_now(assoc, NOW)
    assert sack.cum_tsn == c.tsn


def test_delayed_sack_without_i_bit_and_at_once_with_it() -> None:
    server = Endpoint(SctpConfig(sackdelay=200, sack_freq=2), local_port=5000, rng=random.Random(3))
    assoc, peer, _ = raw_connect(server, A, NOW)
    server.receive_datagram(peer.packet(peer.data(b"zero")), A, NOW)
    if not sacks_now(assoc, NOW):  # (the first DATA's SACK: see the test above)
        t = assoc.get_timer()
        assert t is not None
        assoc.handle_timer(t)
        assert sacks_now(assoc, t)
    now = NOW + 1
    server.receive_datagram(peer.packet(peer.data(b"one")), A, now)
    assert assoc.datagrams_to_send(now) == []  # delayed
    assert assoc.get_timer() == pytest.approx(now + 0.2)
    server.receive_datagram(peer.packet(peer.data(b"two")), A, now + 0.01)
    (sack,) = sacks_now(assoc, now + 0.01)
    assert sack.cum_tsn == peer.next_tsn - 1  # the second packet: sack_freq reached
    server.receive_datagram(peer.packet(peer.data(b"three", immediate=True)), A, now + 0.02)
    (sack,) = sacks_now(assoc, now + 0.02)
    assert sack.cum_tsn == peer.next_tsn - 1
    server.receive_datagram(peer.packet(peer.data(b"four")), A, now + 0.03)
    assert sacks_now(assoc, now + 0.03) == []
    t = assoc.get_timer()
    assert t is not None and t == pytest.approx(now + 0.03 + 0.2)
    assoc.handle_timer(t)
    (sack,) = sacks_now(assoc, t)  # the delayed-SACK timer fires
    assert sack.cum_tsn == peer.next_tsn - 1


# -- receive window: a hostile peer cannot grow our buffers ---------------------------------------------------------


RECBUF = 64 * 1024


def held(assoc: Association) -> int:
    n = assoc.status()["held_bytes"]
    assert isinstance(n, int)
    return n


def hostile_server() -> tuple[Endpoint, Association, RawPeer]:
    server = Endpoint(SctpConfig(recbuf=RECBUF), local_port=5000, rng=random.Random(3))
    assoc, peer, _ = raw_connect(server, A, NOW)
    drain(assoc)
    return server, assoc, peer


def last_sack(assoc: Association, now: float) -> SackChunk:
    sacks = [c for c in chunks_of(assoc.datagrams_to_send(now)) if isinstance(c, SackChunk)]
    assert sacks
    return sacks[-1]


def test_out_of_order_flood_is_bounded_by_the_receive_window() -> None:
    server, assoc, peer = hostile_server()
    hole = peer.data(b"first", ssn=0)  # never sent until the end
    peer.ssn[0] = 1
    flood = [peer.data(bytes(1000)) for _ in range(400)]  # 400 KB, six times our window
    peak = 0
    for c in flood:
        server.receive_datagram(peer.packet(c), A, NOW)
        peak = max(peak, held(assoc))
    assert peak <= RECBUF
    assert assoc.stats["rwnd_drops"] > 0
    assert drain(assoc) == []  # all wait for SSN 0
    sack = last_sack(assoc, NOW)
    assert sack.a_rwnd == assoc.status()["rwnd"] and sack.a_rwnd < 1100  # the window is shut
    accepted = sum(e - s + 1 for s, e in sack.gaps)
    assert 0 < accepted < len(flood)
    # the hole is filled: everything accepted is delivered in order and the buffer empties
    server.receive_datagram(peer.packet(hole), A, NOW + 0.1)
    got = drain(assoc)
    assert [e.data for e in got if isinstance(e, ev.DataReceived)] == [b"first"] + [bytes(1000)] * accepted
    assert assoc.status()["held_bytes"] == 0 and assoc.status()["rwnd"] == RECBUF
    sack = last_sack(assoc, NOW + 0.1)  # filling the hole is acknowledged at once
    assert sack.cum_tsn == (hole.tsn + accepted) & 0xFFFFFFFF  # the dropped ones were not acknowledged
    assert sack.a_rwnd == RECBUF


def test_endless_fragmented_message_cannot_outgrow_the_window() -> None:
    server, assoc, peer = hostile_server()
    peak = 0
    for i in range(400):
        c = peer.data(bytes(1000), beginning=i == 0, ending=False)
        server.receive_datagram(peer.packet(c), A, NOW)
        peak = max(peak, held(assoc))
        if assoc.state == CLOSED:
            break
    assert peak <= 2 * RECBUF  # one window, plus at most one more while the chunk at the ack point comes in
    # either the chunks are refused, or the association gives up on the message and says why
    evs = drain(assoc)
    aborted = [e for e in evs if isinstance(e, ev.AssociationAborted)]
    assert aborted or assoc.stats["rwnd_drops"] > 0
    assert not [e for e in evs if isinstance(e, ev.DataReceived)]


def test_duplicate_and_gap_floods_keep_sacks_within_the_mtu() -> None:
    server, assoc, peer = hostile_server()
    first = peer.data(b"x")
    for _ in range(1000):
        server.receive_datagram(peer.packet(first), A, NOW)
    sacks = [
        (d, c) for d, _a in assoc.datagrams_to_send(NOW) for c in parse_packet(d).chunks if isinstance(c, SackChunk)
    ]
    assert sacks and all(len(c.duplicates) <= 64 for _d, c in sacks)
    base = peer.next_tsn
    for i in range(0, 8000, 2):  # every other TSN: thousands of gap blocks
        server.receive_datagram(peer.packet(peer.data(b"y", tsn=(base + 1 + i) & 0xFFFFFFFF, unordered=True)), A, NOW)
    out = assoc.datagrams_to_send(NOW)
    assert out and all(len(d) <= 1280 - 28 for d, _a in out)
    assert assoc.stats["rwnd_drops"] > 0  # the gap bookkeeping itself is bounded


def test_data_far_beyond_the_window_is_dropped_not_reported() -> None:
    server, assoc, peer = hostile_server()
    server.receive_datagram(peer.packet(peer.data(b"far", tsn=(peer.next_tsn + 70_000) & 0xFFFFFFFF)), A, NOW)
    out = assoc.datagrams_to_send(NOW)  # must not raise
    for c in chunks_of(out):
        if isinstance(c, SackChunk):
            assert all(e <= 0xFFFF for _s, e in c.gaps)
    assert drain(assoc) == []


# -- sending within the peer's window ---------------------------------------------------------------------------------


def data_chunks(out: list[tuple[bytes, Any]]) -> list[DataChunk]:
    return [c for c in chunks_of(out) if isinstance(c, DataChunk)]


def sack(peer: RawPeer, cum: int, a_rwnd: int) -> bytes:
    return peer.packet(SackChunk(cum & 0xFFFFFFFF, a_rwnd, [], []))


def test_sender_never_exceeds_the_peer_window() -> None:
    client = Endpoint(SctpConfig(nodelay=True), local_port=5000, rng=random.Random(1))
    assoc, peer = raw_accept(client, B, NOW, a_rwnd=5000)
    for _ in range(20):
        assoc.send(0, bytes(1000))
    first: list[DataChunk] = []
    for _ in range(10):  # however often the driver asks (each call may release one more burst)
        first += data_chunks(assoc.datagrams_to_send(NOW))
    assert 0 < sum(len(c.data) for c in first) <= 5000
    acked = first[1].tsn
    client.receive_datagram(sack(peer, acked, 5000), B, NOW + 0.05)
    more = data_chunks(assoc.datagrams_to_send(NOW + 0.05))
    in_flight = sum(len(c.data) for c in first[2:] + more)
    assert more and in_flight <= 5000


def test_zero_window_probe_one_chunk_at_a_time() -> None:
    client = Endpoint(SctpConfig(nodelay=True), local_port=5000, rng=random.Random(1))
    assoc, peer = raw_accept(client, B, NOW, a_rwnd=0)
    for _ in range(5):
        assoc.send(0, bytes(3000))
    (probe,) = data_chunks(assoc.datagrams_to_send(NOW))
    assert probe.tsn == peer.peer_initial_tsn
    assert data_chunks(assoc.datagrams_to_send(NOW)) == []
    t3 = assoc.get_timer()
    assert t3 is not None
    assoc.handle_timer(t3)
    (again,) = data_chunks(assoc.datagrams_to_send(t3))  # the probe is retransmitted, nothing new
    assert again.tsn == probe.tsn
    client.receive_datagram(sack(peer, probe.tsn, 0), B, t3 + 0.05)  # acked, window still shut
    (probe2,) = data_chunks(assoc.datagrams_to_send(t3 + 0.05))
    assert probe2.tsn == (probe.tsn + 1) & 0xFFFFFFFF
    client.receive_datagram(sack(peer, probe2.tsn, 1 << 20), B, t3 + 0.1)  # the window opens
    assert len(data_chunks(assoc.datagrams_to_send(t3 + 0.1))) > 1


def test_send_queue_backpressure() -> None:
    net, a, b, ca, sa = setup(10, client=SctpConfig(sndbuf=20_000))
    sent = 0
    with pytest.raises(BufferFull):
        for _ in range(100):
            ca.send(0, bytes(5000))
            sent += 1
    assert 4 <= sent <= 5
    assert net.run_until(lambda: bool(a.of(ca, ev.SendQueueDrained)), 10)
    assert ca.buffered_amount() <= 10_000
    ca.send(0, bytes(5000))  # accepted again
    assert net.run_until(lambda: len(received(b, sa)) == sent + 1, 10)


def test_user_command_errors() -> None:
    _net, _a, _b, ca, _sa = setup(11)
    with pytest.raises(SctpError):
        ca.send(16, b"x")  # 16 streams: 0..15
    with pytest.raises(SctpError):
        ca.send(-1, b"x")
    with pytest.raises(SctpError):
        ca.send(0, b"")
    ca.abort("done")
    with pytest.raises(SctpError):
        ca.send(0, b"x")


# -- retransmission limits --------------------------------------------------------------------------------------------


def test_link_cut_ends_in_communication_lost_with_rto_backoff() -> None:
    cfg = SctpConfig(asocmaxrxt=5, rto_max=3000, hbinterval=0)
    net, a, _b, ca, _sa = setup(12, client=cfg, server=cfg)
    rto0 = float(primary(ca)["rto"]) / 1000
    mtu = int(primary(ca)["mtu"])
    cwnds: list[int] = []

    def record(s: Sent) -> None:
        if s.src == A and tsns(s):
            cwnds.append(int(primary(ca)["cwnd"]))

    net.intercept = record
    net.cut(A, B)
    ca.send(0, b"into the void")
    assert net.run_until(lambda: a.closed(ca), 120)
    sends = data_sent(net, A)
    # the original, tail loss probes before the first T3 expiry (not counted as one, cwnd untouched), and one
    # retransmission per tolerated expiry
    probes = ca.stats["tlp_probes"]
    assert len(sends) == 1 + probes + cfg.asocmaxrxt and 1 <= probes <= 2
    assert all(s.time < sends[0].time + rto0 for s in sends[1 : 1 + probes])
    assert len(set(cwnds[: 1 + probes])) == 1
    sends, cwnds = sends[:1] + sends[1 + probes :], cwnds[:1] + cwnds[1 + probes :]
    times = [s.time for s in sends]
    gaps = [t1 - t0 for t0, t1 in pairwise(times)]
    expected = [rto0]
    for _ in range(len(gaps) - 1):
        expected.append(min(2 * expected[-1], cfg.rto_max / 1000))
    assert gaps == pytest.approx(expected)
    assert expected[-1] == cfg.rto_max / 1000  # the cap was reached
    closed_at = next(t for t, x, e in a.log if x is ca and isinstance(e, ev.AssociationClosed))
    assert closed_at - times[-1] == pytest.approx(min(2 * expected[-1], cfg.rto_max / 1000))
    assert ca.stats["t3_expiries"] == cfg.asocmaxrxt + 1
    assert all(c == mtu for c in cwnds[1:])  # cwnd collapses to one MTU after a T3 expiry (§7.2.3)
    evs = a.events[ca]
    assert isinstance(evs[-1], ev.AssociationClosed) and isinstance(evs[-2], ev.AssociationAborted)
    assert "communication lost" in evs[-2].reason


def test_init_retransmission_backs_off_and_gives_up() -> None:
    net = Network(13)
    a = net.add(A, SctpConfig(max_attempts=5, rto_initial=1000, max_init_timeo=3000))
    b = net.add(B)
    net.cut(A, B)
    ca = a.connect(b)
    assert net.run_until(lambda: a.closed(ca), 60)
    inits = [s.time for s in net.sent_by(A) if isinstance(s.chunks()[0], InitChunk)]
    assert len(inits) == 5
    assert [t1 - t0 for t0, t1 in pairwise(inits)] == pytest.approx([1.0, 2.0, 3.0, 3.0])
    (aborted,) = a.of(ca, ev.AssociationAborted)
    assert "INIT" in aborted.reason
    assert isinstance(a.events[ca][-1], ev.AssociationClosed)


# -- heartbeats and unknown chunks -------------------------------------------------------------------------------------


def test_idle_association_heartbeats_and_peer_answers() -> None:
    cfg = SctpConfig(hbinterval=1000)
    net, _a, _b, ca, sa = setup(14, client=cfg, server=SctpConfig(hbinterval=0))
    start = net.now
    net.run_for(20)
    hbs = [(s.time, c.info) for s in net.sent_by(A) for c in s.chunks() if isinstance(c, HeartbeatChunk)]
    acks = [c.info for s in net.sent_by(B) for c in s.chunks() if isinstance(c, HeartbeatAckChunk)]
    assert len(hbs) >= 10
    assert acks == [info for _t, info in hbs]  # each echoed verbatim
    rto = float(primary(ca)["rto"]) / 1000
    gaps = [t1 - t0 for (t0, _), (t1, _) in pairwise(hbs)]
    assert hbs[0][0] - start >= 1.0
    rtt = 2 * 0.01  # the next HEARTBEAT is timed from the HEARTBEAT-ACK
    assert all(1.0 <= g <= rtt + 1.0 + 1.5 * rto + 1e-9 for g in gaps)
    assert len({round(g, 6) for g in gaps}) > 1  # jittered
    assert ca.state == sa.state == ESTABLISHED
    assert primary(ca)["srtt"] is not None


def test_heartbeats_unanswered_end_in_communication_lost() -> None:
    cfg = SctpConfig(hbinterval=500, asocmaxrxt=3)
    net, a, _b, ca, _sa = setup(15, client=cfg, server=SctpConfig(hbinterval=0))
    net.cut(A, B)
    assert net.run_until(lambda: a.closed(ca), 120)
    hbs = [s for s in net.sent_by(A) if any(isinstance(c, HeartbeatChunk) for c in s.chunks())]
    assert len(hbs) == cfg.asocmaxrxt + 1
    (aborted,) = a.of(ca, ev.AssociationAborted)
    assert "communication lost" in aborted.reason


@pytest.mark.parametrize(
    "ctype,report,rest_processed",
    [
        (0x3F, False, False),  # 00: discard the rest of the packet silently
        (0x41, True, False),  # 01: discard the rest and report (0x40 is I-DATA)
        (0x81, False, True),  # 10: skip this chunk
        (0xC1 + 2, True, True),  # 11: skip this chunk and report
    ],
)
def test_unknown_chunk_upper_bits(ctype: int, report: bool, rest_processed: bool) -> None:
    server, assoc, peer = hostile_server()
    unknown = UnknownChunk(ctype, 0x5A, b"mystery!")
    server.receive_datagram(peer.packet(unknown, HeartbeatChunk(b"still there?")), A, NOW)
    out = chunks_of(assoc.datagrams_to_send(NOW))
    errors = [c for c in out if isinstance(c, ErrorChunk)]
    hb_acks = [c for c in out if isinstance(c, HeartbeatAckChunk)]
    if report:
        ((cause,),) = [e.causes for e in errors]
        assert cause.code == UNRECOGNIZED_CHUNK and cause.info == unknown.serialize()
    else:
        assert errors == []
    assert hb_acks == ([HeartbeatAckChunk(b"still there?")] if rest_processed else [])
    assert assoc.state == ESTABLISHED


def test_data_on_an_invalid_stream_gets_error_and_is_acked() -> None:
    server, assoc, peer = hostile_server()
    c = peer.data(b"nowhere", stream_id=200, immediate=True)
    server.receive_datagram(peer.packet(c), A, NOW)
    out = chunks_of(assoc.datagrams_to_send(NOW))
    (err,) = [x for x in out if isinstance(x, ErrorChunk)]
    assert err.causes[0].code == INVALID_STREAM and err.causes[0].info[:2] == (200).to_bytes(2, "big")
    (s,) = [x for x in out if isinstance(x, SackChunk)]
    assert s.cum_tsn == c.tsn
    assert [e for e in drain(assoc) if isinstance(e, ev.DataReceived)] == []


def test_data_without_user_data_aborts_with_no_user_data() -> None:
    server, assoc, peer = hostile_server()
    c = peer.data(b"")
    server.receive_datagram(peer.packet(c), A, NOW)
    out = chunks_of(assoc.datagrams_to_send(NOW))
    (abort,) = [x for x in out if isinstance(x, AbortChunk)]
    assert abort.causes[0].code == NO_USER_DATA and abort.causes[0].info == c.tsn.to_bytes(4, "big")
    evs = drain(assoc)
    assert isinstance(evs[-1], ev.AssociationClosed) and isinstance(evs[-2], ev.AssociationAborted)


# -- closing -----------------------------------------------------------------------------------------------------------


def closed_at(node: Node, assoc: Association) -> float:
    return next(t for t, x, e in node.log if x is assoc and isinstance(e, ev.AssociationClosed))


@pytest.mark.parametrize("initiator", ["client", "server", "both"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_graceful_shutdown_delivers_everything_first(initiator: str, seed: int) -> None:
    net, a, b, ca, sa = setup(200 + seed, path=LOSSY)
    mab = workload(seed, 80, 6, [40_000], base=1)
    mba = workload(seed + 9, 80, 6, [40_000], base=100_000)
    for x, msgs in ((ca, mab), (sa, mba)):
        for m in msgs:
            x.send(m.stream, m.data, ppid=m.ppid, unordered=m.unordered)
    closers = {"client": [ca], "server": [sa], "both": [ca, sa]}[initiator]
    for x in closers:
        x.shutdown(net.now)
        with pytest.raises(SctpError):
            x.send(0, b"too late")
    assert net.run_until(lambda: a.closed(ca) and b.closed(sa), 120), (ca.status(), sa.status())
    check_delivery(mab, received(b, sa))
    check_delivery(mba, received(a, ca))
    if initiator != "both":
        (closer,) = closers
        other, onode, cnode = (sa, b, a) if closer is ca else (ca, a, b)
        assert len(onode.of(other, ev.ShutdownReceived)) == 1
        assert cnode.of(closer, ev.ShutdownReceived) == []
        assert any(isinstance(c, ShutdownChunk) for s in net.sent_by(cnode.addr) for c in s.chunks())
    for node, x, peer_node, peer in ((a, ca, b, sa), (b, sa, a, ca)):
        aborted = node.of(x, ev.AssociationAborted)
        # RFC 9260 keeps no TIME-WAIT: once one side has closed, a late duplicate reaching it draws an
        # out-of-the-blue ABORT that can still hit the other side in SHUTDOWN-ACK-SENT. That, and only that, is
        # tolerated: the peer must already have closed cleanly and the ABORT carries no cause.
        for e in aborted:
            assert e.causes == [] and closed_at(peer_node, peer) < closed_at(node, x), node.events[x][-3:]
        assert isinstance(node.events[x][-1], ev.AssociationClosed)
        assert sum(isinstance(e, ev.AssociationClosed) for e in node.events[x]) == 1
    assert list(a.endpoint.associations) == [] and list(b.endpoint.associations) == []


@pytest.mark.parametrize("initiator", ["client", "server"])
def test_abort_reaches_the_peer_with_its_cause(initiator: str) -> None:
    net, a, b, ca, sa = setup(16)
    ca.send(0, bytes(50_000))  # data in flight does not matter
    net.flush()
    aborter, other = (ca, sa) if initiator == "client" else (sa, ca)
    anode, onode = (a, b) if initiator == "client" else (b, a)
    aborter.abort("going away now")
    assert net.run_until(lambda: onode.closed(other), 5)
    evs = onode.events[other]
    assert isinstance(evs[-1], ev.AssociationClosed) and isinstance(evs[-2], ev.AssociationAborted)
    aborted = evs[-2]
    assert [c.code for c in aborted.causes] == [USER_INITIATED_ABORT]
    assert aborted.causes[0].info == b"going away now" and "going away now" in aborted.reason
    assert anode.events[aborter][-1] == ev.AssociationClosed()
    assert anode.of(aborter, ev.AssociationAborted) == []
    assert aborter.state == other.state == CLOSED
    assert aborter.get_timer() is None and other.get_timer() is None


def test_autoclose_closes_an_idle_association_gracefully() -> None:
    cfg = SctpConfig(autoclose=2)
    net, a, b, ca, sa = setup(17, client=cfg, server=SctpConfig())
    ca.send(0, b"then silence")
    assert net.run_until(lambda: a.closed(ca) and b.closed(sa), 30)
    assert not a.of(ca, ev.AssociationAborted) and len(b.of(sa, ev.ShutdownReceived)) == 1


# -- helpers must be honest too ----------------------------------------------------------------------------------------


def test_link_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[tuple[float, bytes]]:
        net, _a, b, ca, sa = setup(seed, path=LOSSY)
        for i in range(50):
            ca.send(i % 4, bytes([i]) * 700)
        net.run_until(lambda: len(received(b, sa)) == 50, 30)
        return [(s.time, s.data) for s in net.sent]

    assert run(21) == run(21)
    assert run(21) != run(22)
