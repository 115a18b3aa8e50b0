"""Sender-side loss recovery beyond RFC 9260's minimum (``mux/sctp/tx/rack.py``): RACK's time-based loss detection,
the tail loss probe, and undoing spurious fast recoveries, in memory on the seeded link (``tests/sctp_link.py``).

Each loss here is one fast retransmit cannot repair: a lost tail, a lost retransmission, a lone lost request. Without
RACK-TLP each waits for T3-rtx (``rto_min``, 200 ms); with it each is repaired within a few round trips and T3 never
fires. Times are simulated (20 ms round trips), never wall-clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from mux.sctp import events as ev
from mux.sctp.association import Association
from mux.sctp.chunks import DataChunk, IDataChunk, SackChunk
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import Endpoint
from mux.sctp.packet import parse_packet, serialize_packet
from mux.sctp.tx.rack import IBIT_DOUBT, PTO_MIN, WC_DELACK
from tests.sctp_link import Network, Node, Sent, chunks_of, handshake, raw_accept

A = ("10.0.0.1", 40001)
B = ("10.0.0.2", 40002)
NOW = 1000.0
RTT = 0.02  # the link's default: 10 ms each way
RTO_MIN = 0.2
DATA = (DataChunk, IDataChunk)


def pair(
    seed: int = 1, path: dict[str, float] | None = None, **config: object
) -> tuple[Network, Node, Node, Association, Association]:
    net = Network(seed, **(path or {}))
    a = net.add(A, SctpConfig(**config))  # type: ignore[arg-type]
    b = net.add(B, SctpConfig(**config))  # type: ignore[arg-type]
    ca, sa = handshake(net, a, b)
    return net, a, b, ca, sa


def tsns(s: Sent) -> list[int]:
    return [c.tsn for c in s.chunks() if isinstance(c, DATA)]


def received(node: Node, assoc: Association) -> list[ev.DataReceived]:
    return node.of(assoc, ev.DataReceived)


class Dropper:
    """Drops ``src``'s packets carrying chosen TSNs, given as offsets from the first TSN it sees: offset -> how many
    transmissions of it to drop (the first, and with 2 its first retransmission too)."""

    def __init__(self, src: tuple[str, int], drops: dict[int, int]) -> None:
        self.src = src
        self.drops = drops
        self.base: int | None = None
        self.dropped: list[Sent] = []
        self.sends: dict[int, list[float]] = {}  # offset -> when each transmission left

    def __call__(self, s: Sent) -> bool | None:
        if s.src != self.src:
            return None
        ts = tsns(s)
        if not ts:
            return None
        if self.base is None:
            self.base = ts[0]
        offsets = [(t - self.base) & 0xFFFFFFFF for t in ts]
        for o in offsets:
            self.sends.setdefault(o, []).append(s.time)
        if any(self.drops.get(o, 0) > 0 for o in offsets):
            for o in offsets:
                if self.drops.get(o, 0) > 0:
                    self.drops[o] -= 1
            self.dropped.append(s)
            return False
        return None


def send_all(ca: Association, n: int, size: int = 1000) -> list[bytes]:
    msgs = [i.to_bytes(4, "big") * (size // 4) for i in range(n)]
    for i, m in enumerate(msgs):
        ca.send(0, m, ppid=i)
    return msgs


def exchange(
    net: Network, a: Node, b: Node, ca: Association, sa: Association, n: int, *, size: int = 64, pause: float = 0.0
) -> list[float]:
    """``n`` requests from ``ca``, one at a time, each echoed by ``sa`` as it arrives; their round-trip times."""
    latencies = []
    for i in range(n):
        t0 = net.now
        ca.send(0, i.to_bytes(4, "big") * (size // 4), ppid=i)
        assert net.run_until(lambda i=i: len(received(b, sa)) > i, 10), (i, ca.status(), sa.status())
        req = received(b, sa)[i]
        sa.send(0, req.data, ppid=req.ppid)
        assert net.run_until(lambda i=i: len(received(a, ca)) > i, 10), (i, ca.status(), sa.status())
        latencies.append(net.now - t0)
        if pause:
            net.run_for(pause)
    assert [e.ppid for e in received(b, sa)] == list(range(n))
    assert [e.data for e in received(a, ca)] == [e.data for e in received(b, sa)]
    return latencies


# -- a lost tail ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tail", [1, 3])
def test_a_lost_tail_is_repaired_in_a_few_round_trips_without_t3(tail: int) -> None:
    """The last ``tail`` packets of a transfer are lost: nothing comes after them to count misses, and the SACK for
    what did arrive says nothing is missing. The probe (the highest TSN again) brings a SACK that shows the hole and
    RACK repairs the rest; T3 (200 ms) never fires."""
    n = 30
    net, _a, b, ca, sa = pair(1, nodelay=True)
    dropper = Dropper(A, {n - 1 - k: 1 for k in range(tail)})
    net.intercept = dropper
    msgs = send_all(ca, n)
    assert net.run_until(lambda: len(received(b, sa)) == n and ca.buffered_amount() == 0, 5)
    assert [e.data for e in received(b, sa)] == msgs
    last_original = max(dropper.sends[o][0] for o in range(n))
    repaired = max(dropper.sends[n - 1 - k][-1] for k in range(tail))
    assert len(dropper.dropped) == tail
    assert ca.stats["t3_expiries"] == 0
    assert ca.stats["tlp_probes"] >= 1
    # the SACK for the rest (an RTT), the probe timer (2 SRTT), the probe's SACK (an RTT): a few round trips
    assert repaired - last_original <= 4 * RTT + 1e-9 < RTO_MIN
    if tail > 1:
        # the rest of the tail, found from the probe's SACK (Early Retransmit here: fewer than four outstanding)
        assert ca.stats["fast_retransmits"] + ca.stats["rack_retransmits"] >= tail - 1


# -- a lost retransmission ------------------------------------------------------------------------------------------


def test_a_lost_fast_retransmission_is_found_by_rack() -> None:
    """A chunk is lost, and so is its fast retransmission. Miss indications count once per chunk, so RFC 9260 alone
    waits for T3; RACK sees data sent after the retransmission arrive and sends it again."""
    n = 80
    net, _a, b, ca, sa = pair(2, nodelay=True)
    dropper = Dropper(A, {20: 2})
    net.intercept = dropper
    msgs = send_all(ca, n)
    assert net.run_until(lambda: len(received(b, sa)) == n and ca.buffered_amount() == 0, 5)
    assert [e.data for e in received(b, sa)] == msgs
    sends = dropper.sends[20]
    assert len(sends) == 3  # the original, the lost retransmission, the one that arrived
    assert ca.stats["t3_expiries"] == 0
    assert ca.stats["fast_retransmits"] + ca.stats["rack_retransmits"] >= 2
    assert sends[2] - sends[1] < 3 * RTT  # about an RTT after the lost one, not an RTO


def test_a_lost_probe_is_followed_by_a_second_one() -> None:
    """The last chunk is lost, and so is the probe that sends it again: a second probe follows after twice the
    probe timeout, still well before T3."""
    n = 10
    net, _a, b, ca, sa = pair(3, nodelay=True)
    dropper = Dropper(A, {n - 1: 2})
    net.intercept = dropper
    msgs = send_all(ca, n)
    assert net.run_until(lambda: len(received(b, sa)) == n and ca.buffered_amount() == 0, 5)
    assert [e.data for e in received(b, sa)] == msgs
    first, probe1, probe2 = dropper.sends[n - 1]
    assert ca.stats["t3_expiries"] == 0 and ca.stats["tlp_probes"] == 2
    srtt = ca.rtt.srtt
    assert srtt is not None
    pto = max(2 * srtt, PTO_MIN)
    # the probe timer runs from the SACK for the rest (an RTT after the chunk left), the second one backed off
    assert probe1 - first == pytest.approx(RTT + pto, rel=0.1)
    assert probe2 - probe1 == pytest.approx(2 * pto, rel=0.1)
    assert probe2 - first < RTO_MIN


def test_the_sack_a_probe_brings_releases_no_burst() -> None:
    """Every SACK of a window is lost; the probe's SACK then acknowledges the whole window at once. The ack clock
    would let as many packets go as it acknowledged (cwnd allowing: a line-rate burst into a path that has been
    quiet); after a probe only Max.Burst may (RFC 9260 §7.2.4), and the clock restarts from the SACKs that follow."""
    net, _a, b, ca, sa = pair(8, nodelay=True)
    send_all(ca, 100)  # grows cwnd
    assert net.run_until(lambda: len(received(b, sa)) == 100 and ca.buffered_amount() == 0, 5)
    t1 = net.now
    net.intercept = lambda s: False if s.src == B and t1 <= s.time < t1 + 0.045 else None  # the window's SACKs
    send_all(ca, 100)
    assert net.run_until(lambda: len(received(b, sa)) == 200 and ca.buffered_amount() == 0, 5)
    bursts: dict[float, int] = {}
    for s in net.sent_by(A):
        if s.time >= t1 and tsns(s):
            bursts[s.time] = bursts.get(s.time, 0) + 1
    (window, probe, after, *_rest) = sorted(bursts.items())
    assert window[1] > 30 and probe[1] == 1  # a window, then the probe alone
    assert ca.stats["tlp_probes"] == 1 and ca.stats["t3_expiries"] == 0
    assert after[0] == pytest.approx(probe[0] + RTT)  # the probe's SACK acknowledged all of the window
    assert after[1] <= SctpConfig().max_burst
    assert ca.stats["spurious_retransmits"] == 1  # the probe: the peer had it already


# -- request/response -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lose", ["request", "response"])
def test_a_lone_lost_request_or_response_is_repaired_in_about_a_pto(lose: str) -> None:
    """Request/response, one at a time: a lost message is the whole flight, so no SACK can ever report it missing.
    It goes again one probe timeout (2 SRTT: the I bit on a lone chunk brings its SACK at once, so no delayed-SACK
    allowance) after it left, not after T3's 200 ms."""
    net, a, b, ca, sa = pair(4)
    sender = ca if lose == "request" else sa
    dropper = Dropper(A if lose == "request" else B, {5: 1})
    net.intercept = dropper
    latencies = exchange(net, a, b, ca, sa, 12)
    assert sender.stats["t3_expiries"] == 0 and sender.stats["tlp_probes"] == 1
    first, again = dropper.sends[5]
    srtt = float(sender.status()["primary"]["srtt"]) / 1000  # type: ignore[index]
    assert again - first == pytest.approx(max(2 * srtt, PTO_MIN), rel=0.2)
    normal = max(latencies[:5] + latencies[6:])
    assert latencies[5] == pytest.approx(normal + (again - first), abs=0.002)
    assert latencies[5] < 4 * RTT < RTO_MIN


def test_the_probe_timer_in_detail() -> None:
    """Against a hand-driven peer: a lone chunk (I bit set) is probed PTO_MIN after it left (the handshake's RTT is
    0 here), again with the I bit; then after twice that; then only T3. A SACK for it stops the probes."""
    client = Endpoint(SctpConfig(nodelay=True), local_port=5000, rng=random.Random(1))
    assoc, peer = raw_accept(client, B, NOW)
    assoc.send(0, b"request")
    (first,) = [c for c in chunks_of(assoc.datagrams_to_send(NOW)) if isinstance(c, DATA)]
    assert first.immediate
    t = assoc.get_timer()
    assert t == pytest.approx(NOW + PTO_MIN)
    assoc.handle_timer(t)
    (probe,) = [c for c in chunks_of(assoc.datagrams_to_send(t)) if isinstance(c, DATA)]
    assert (probe.tsn, probe.data, probe.immediate) == (first.tsn, first.data, True)
    t2 = assoc.get_timer()
    assert t2 == pytest.approx(t + 2 * PTO_MIN)
    assoc.handle_timer(t2)
    (probe2,) = [c for c in chunks_of(assoc.datagrams_to_send(t2)) if isinstance(c, DATA)]
    assert probe2.tsn == first.tsn
    t3 = assoc.get_timer()
    assert t3 == pytest.approx(NOW + RTO_MIN)  # the T3 armed by the first transmission, not restarted by probes
    assert assoc.stats["tlp_probes"] == 2 and assoc.stats["t3_expiries"] == 0
    client.receive_datagram(peer.packet(SackChunk(first.tsn, 1 << 20, [], [])), B, t2 + 0.001)
    later = assoc.get_timer()
    assert later is None or later > NOW + 1  # nothing outstanding: no T3, no probe (a heartbeat in 30 s)


# -- no probes on a healthy path --------------------------------------------------------------------------------------


@pytest.mark.parametrize("nodelay", [True, False])
def test_no_probe_on_a_healthy_path_with_delayed_sacks(nodelay: bool) -> None:
    """Delayed SACKs (200 ms, every second packet) on a clean path: request/response, a bulk transfer and small
    messages in bursts never fire a probe. The lone chunk of each exchange carries the I bit, so its SACK is not
    delayed; a transfer's SACKs come every other packet."""
    net, a, b, ca, sa = pair(5, nodelay=nodelay, sackdelay=200, sack_freq=2)
    exchange(net, a, b, ca, sa, 40, pause=0.05)
    send_all(ca, 300, 1000)
    assert net.run_until(lambda: len(received(b, sa)) == 340 and ca.buffered_amount() == 0, 10)
    for _ in range(20):
        send_all(ca, 7, 100)
        net.run_for(0.3)
    assert len(received(b, sa)) == 340 + 140
    # not for want of a probe timer: it runs, well before T3, whenever data is in flight
    ca.send(0, b"one more")
    net.run_until(lambda: True)  # it leaves
    armed = ca.get_timer()
    assert armed is not None and armed <= net.now + 2 * RTT + 0.005 < net.now + RTO_MIN
    assert net.run_until(lambda: len(received(b, sa)) == 481 and ca.buffered_amount() == 0, 1)
    for x in (ca, sa):
        assert x.stats["tlp_probes"] == 0 and x.stats["retransmitted_chunks"] == 0, x.stats


def strip_i_bit(net: Network, src: tuple[str, int]) -> Callable[[Sent], bool | None]:
    """An intercept that clears the SACK-IMMEDIATELY bit of ``src``'s DATA, as a peer ignoring RFC 7053 would."""

    def intercept(s: Sent) -> bool | None:
        if s.src != src:
            return None
        p = parse_packet(s.data)
        if not any(isinstance(c, DATA) and c.immediate for c in p.chunks):
            return None
        for c in p.chunks:
            if isinstance(c, DATA):
                c.immediate = False
        data = serialize_packet(p.src_port, p.dst_port, p.vtag, p.chunks)
        net.inject(s.src, s.dst, data, net.path(s.src, s.dst).delay)
        return False

    return intercept


def test_a_peer_that_ignores_the_i_bit_costs_a_few_probes_then_none() -> None:
    """If the peer delays its SACK whatever the I bit says, each lone chunk would draw a useless probe. The
    duplicate it reports proves the probe unnecessary; after IBIT_DOUBT of them in a row the probe timer allows for
    the delayed SACK (WC_DELACK), and the probes stop."""
    net, a, b, ca, sa = pair(6, sackdelay=200, sack_freq=2)
    net.intercept = strip_i_bit(net, A)
    exchange(net, a, b, ca, sa, 30, pause=0.3)
    assert ca.stats["tlp_probes"] == IBIT_DOUBT
    assert ca.stats["spurious_retransmits"] >= IBIT_DOUBT
    # and the probes for lone chunks now wait for a delayed SACK
    rack, rtt = ca._out.rack, ca.rtt
    assert rack.ibit_doubt >= IBIT_DOUBT and rtt.srtt is not None
    assert rack.pto(rtt, 100, 1200) == pytest.approx(max(2 * rtt.srtt, rtt.srtt + 4 * rtt.rttvar) + WC_DELACK)


# -- spurious retransmissions -----------------------------------------------------------------------------------------


def test_reordering_alone_is_undone_and_widens_the_window() -> None:
    """A path that reorders a third of the packets (by up to 1.5 RTT) and loses none: RACK's quarter-RTT window
    takes some late chunks for lost. The duplicates the peer reports prove those retransmissions unnecessary: the
    window reduction is undone and the reordering window grows."""
    path = {"loss": 0.0, "reorder": 0.3, "reorder_delay": 0.03, "delay": 0.01}
    net, _a, b, ca, sa = pair(7, path=path, nodelay=True)
    msgs = send_all(ca, 400)
    assert net.run_until(lambda: len(received(b, sa)) == 400 and ca.buffered_amount() == 0, 30)
    assert [e.data for e in received(b, sa)] == msgs
    assert ca.stats["retransmitted_chunks"] > 0  # fooled at first
    assert ca.stats["spurious_retransmits"] > 0 and ca.stats["cwnd_undos"] > 0
    assert ca._out.rack.reo_mult > 1
    assert ca.stats["t3_expiries"] == 0


# -- a lossy path, end to end ----------------------------------------------------------------------------------------


LOSSY = {"loss": 0.05, "reorder": 0.05, "dup": 0.02, "delay": 0.01, "reorder_delay": 0.01}


@pytest.mark.parametrize("seed", range(3))
def test_request_response_on_a_lossy_path_stays_far_below_t3(seed: int) -> None:
    """5% loss each way, some reordering and duplication: every request and response is delivered once and in order,
    and (as QUIC's probe timeout does) losses cost a few round trips: the 99th percentile stays far below T3's 200
    ms, which every lost request or response used to cost."""
    net, a, b, ca, sa = pair(100 + seed, path=LOSSY, nodelay=True)
    latencies = exchange(net, a, b, ca, sa, 300)
    latencies.sort()
    p99 = latencies[int(0.99 * len(latencies))]
    assert p99 < RTO_MIN * 0.75, latencies[-10:]  # a loss costs a probe timeout or two, not T3
    assert ca.stats["tlp_probes"] + sa.stats["tlp_probes"] > 0
    assert ca.stats["t3_expiries"] + sa.stats["t3_expiries"] <= 2  # a message lost three times running


@pytest.mark.parametrize("seed", range(3))
def test_bulk_both_ways_on_a_lossy_path_every_message_once_in_order(seed: int) -> None:
    """Bulk both ways at once, 5% loss with reordering and duplicates: every message exactly once, in order per
    stream, and RACK does most of the repairing."""
    net, a, b, ca, sa = pair(200 + seed, path=LOSSY)
    rng = random.Random(seed)
    frag = ca.fragmentation_point
    ab = [(rng.randrange(4), rng.randbytes(rng.choice((30, frag, 3 * frag + 7)))) for _ in range(300)]
    ba = [(rng.randrange(4), rng.randbytes(rng.choice((30, 2 * frag)))) for _ in range(150)]
    queues = {ca: list(enumerate(ab)), sa: list(enumerate(ba))}

    def feed() -> None:
        for x, q in queues.items():
            while q and x.buffered_amount() < 64 * 1024:
                i, (stream, data) = q.pop(0)
                x.send(stream, data, ppid=i)

    assert net.run_until(
        lambda: len(received(b, sa)) == len(ab) and len(received(a, ca)) == len(ba), 120, on_step=feed
    ), (ca.status(), sa.status())
    for msgs, got in ((ab, received(b, sa)), (ba, received(a, ca))):
        assert sorted(e.ppid for e in got) == list(range(len(msgs)))  # each once
        for e in got:
            assert (e.stream_id, e.data) == msgs[e.ppid]
        for s in range(4):
            order = [e.ppid for e in got if e.stream_id == s]
            assert order == sorted(order)
    assert ca.stats["rack_retransmits"] + sa.stats["rack_retransmits"] > 0
    assert ca.stats["t3_expiries"] + sa.stats["t3_expiries"] <= 2


def test_every_sack_of_a_read_batch_grows_the_window_in_slow_start() -> None:
    """The driver hands the association a whole read batch of SACKs before asking what to send, so the flight
    shrinks from one SACK to the next with nothing sent between. Whether the window was in use is judged when data
    left (§7.2.1), so each SACK of the batch counts; judged per SACK, only the first grew cwnd, and bulk at 20 ms RTT
    fell to a third as soon as the receiver acknowledged every second packet."""
    net = Network(7, delay=0.01)
    client, server = net.add(("10.0.0.1", 1)), net.add(("10.0.0.2", 1))
    ca, sa = handshake(net, client, server)
    ca.send(1, b"z" * 200_000, now=net.now)
    cwnd = ca._cc.cwnd
    flight = [d for d, _ in ca.datagrams_to_send(net.now)]
    assert ca._cc.full and len(flight) >= 4
    for d in flight:  # the server reads them as one batch: a SACK for every second packet
        server.endpoint.receive_datagram(d, client.addr, net.now)
    sacks = [d for d, _ in sa.datagrams_to_send(net.now) if any(isinstance(c, SackChunk) for c in chunks_of([d]))]
    assert len(sacks) >= 2
    for d in sacks:  # and the client reads those as one batch too
        client.endpoint.receive_datagram(d, server.addr, net.now + 0.02)
    cum = max(c.cum_tsn for c in chunks_of(sacks) if isinstance(c, SackChunk))
    first = next(c for c in chunks_of(sacks) if isinstance(c, SackChunk)).cum_tsn
    data = [c for c in chunks_of(flight) if isinstance(c, (DataChunk, IDataChunk))]
    assert first < cum  # more than one SACK acknowledged new data
    assert ca._cc.cwnd == cwnd + sum(len(c.data) for c in data if c.tsn <= cum)
