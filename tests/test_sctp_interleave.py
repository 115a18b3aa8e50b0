"""I-DATA (RFC 8260) in the association, in memory on the seeded lossy link: what is agreed, the chunks on the wire,
a large message interleaved with small ones on other streams, the order each stream scheduler gives end to end,
PR-SCTP and RE-CONFIG with I-DATA, chunks that do not belong on the association, and the receive window shared by
messages in progress (the sender's budget and the receiver's rule per message).

Head-of-line blocking is measured as the bench measures it (``mux bench --workload interleave``'s ``hol``): against
the same bytes sent as separate one-chunk messages on the same stream, at the same time, on the same seeded link
(a rate-limited bottleneck, so a packet takes a packet time). Then the chunks on the wire are the same, and only
whether they form one message differs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from mux.sctp import events as ev
from mux.sctp import extensions as ext
from mux.sctp.association import ESTABLISHED, Association
from mux.sctp.chunks import (
    AbortChunk,
    DataChunk,
    ErrorChunk,
    ForwardTsnChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    IDataChunk,
    IForwardTsnChunk,
    InitChunk,
)
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import Endpoint
from mux.sctp.packet import parse_packet
from mux.sctp.params import (
    OUT_OF_RESOURCE,
    PROTOCOL_VIOLATION,
    UNRECOGNIZED_CHUNK,
    ForwardTsnSupportedParam,
    Param,
    SupportedExtensionsParam,
)
from tests.sctp_link import Network, Node, chunks_of, drain, handshake, raw_connect

A = ("10.0.0.1", 5000)
B = ("10.0.0.2", 5000)
NOW = 1000.0
#: what a peer offering everything of RFC 8260 lists in its INIT
ALL_EXTENSIONS: list[Param] = [
    ForwardTsnSupportedParam(),
    SupportedExtensionsParam([ext.FORWARD_TSN, ext.RE_CONFIG, ext.I_DATA, ext.I_FORWARD_TSN]),
]


def pair(
    seed: int = 1, a: SctpConfig | None = None, b: SctpConfig | None = None, **path: Any
) -> tuple[Network, Node, Node, Association, Association]:
    net = Network(seed, **path)
    na, nb = net.add(A, a or SctpConfig()), net.add(B, b or a or SctpConfig())
    ca, sb = handshake(net, na, nb)
    return net, na, nb, ca, sb


def received(node: Node, assoc: Association) -> list[ev.DataReceived]:
    return node.of(assoc, ev.DataReceived)


def data_chunks(net: Network, src: tuple[str, int]) -> list[DataChunk | IDataChunk]:
    return [c for s in net.sent_by(src) for c in s.chunks() if isinstance(c, DataChunk | IDataChunk)]


# -- what is agreed, and what goes on the wire -------------------------------------------------------------------


def test_two_mux_peers_agree_on_i_data_and_send_nothing_else() -> None:
    net, _na, nb, ca, sb = pair(1)
    assert ca.features & ext.IDATA and sb.features & ext.IDATA
    assert ca.status()["extensions"] == ["prsctp", "reconfig", "idata"] and ca.status()["interleaving"]
    init = next(c for s in net.sent_by(A) for c in s.chunks() if isinstance(c, InitChunk))
    listed = next(p.chunk_types for p in init.params if isinstance(p, SupportedExtensionsParam))
    assert ext.I_DATA in listed and ext.I_FORWARD_TSN in listed
    ca.send(3, bytes(10_000), ppid=7)
    ca.send(4, b"small", ppid=8, unordered=True)
    assert net.run_until(lambda: len(received(nb, sb)) == 2, 5)
    sent = data_chunks(net, A)
    assert sent and all(type(c) is IDataChunk for c in sent)
    (big,) = [e for e in received(nb, sb) if e.stream_id == 3]
    assert big.data == bytes(10_000) and big.ppid == 7


@pytest.mark.parametrize("who", ["client", "server"])
def test_one_side_without_intl_enable_means_data(who: str) -> None:
    off = SctpConfig(intl_enable=False)
    net, _na, nb, ca, sb = pair(2, off if who == "client" else SctpConfig(), off if who == "server" else SctpConfig())
    assert not ca.features & ext.IDATA and not sb.features & ext.IDATA
    assert ca.features & ext.PRSCTP  # PR-SCTP over DATA and FORWARD-TSN
    ca.send(1, bytes(5000))
    assert net.run_until(lambda: len(received(nb, sb)) == 1, 5)
    assert all(type(c) is DataChunk for c in data_chunks(net, A))


def test_a_peer_offering_i_data_and_pr_sctp_without_i_forward_tsn_gets_data() -> None:
    """RFC 8260 §2.3: PR-SCTP under I-DATA needs I-FORWARD-TSN; without it PR-SCTP is kept, over DATA."""
    server = Endpoint(SctpConfig(), local_port=5000, rng=random.Random(1))
    offer = [ForwardTsnSupportedParam(), SupportedExtensionsParam([ext.FORWARD_TSN, ext.I_DATA])]
    assoc, _peer, _ = raw_connect(server, A, NOW, params=offer)
    assert assoc.features & ext.PRSCTP and not assoc.features & ext.IDATA
    assert ext.agree(ext.offered(True, True, True), ext.peer_offers(ALL_EXTENSIONS)) & ext.IDATA


@pytest.mark.parametrize("idata", [True, False])
def test_chunks_are_cut_at_the_i_data_size_whenever_i_data_is_offered(idata: bool) -> None:
    """Messages queued before the handshake ends are cut at I-DATA's size (its header is 4 bytes longer), so every
    packet fits the path MTU whichever data chunk the handshake agrees on."""
    pmtu = 1280
    cfg = SctpConfig(pmtu=pmtu, intl_enable=idata)
    net = Network(3, mtu=pmtu)
    na, nb = net.add(A, cfg), net.add(B, cfg)
    ca = na.connect(nb)
    ca.send(1, bytes(60_000))  # queued in COOKIE-WAIT, cut before anything is agreed
    assert net.run_until(lambda: bool(nb.new_associations) and bool(received(nb, nb.new_associations[0])), 10)
    room = pmtu - 20 - 8 - 12  # IPv4, UDP, SCTP common header
    assert ca.fragmentation_point == room - (20 if idata else 16)
    sent = data_chunks(net, A)
    assert {type(c) for c in sent} == {IDataChunk if idata else DataChunk}
    assert max(len(c.data) for c in sent) == ca.fragmentation_point
    assert max(len(s.data) for s in net.sent_by(A)) == room + 12  # full packets, none over
    assert net.oversize == 0


# -- a large message does not hold small ones back -----------------------------------------------------------------

#: a 10 Mbit/s bottleneck (a packet time of ~1 ms at 1228-byte packets) and 10 ms each way
RATE = 1.25e6
PMTU = 1228
PACKET_TIME = PMTU / RATE
BIG = 1 << 20


def _hol_run(mode: str, *, idata: bool, loss: float) -> tuple[dict[bytes, float], dict[bytes, int], float]:
    """Four streams each send a 64-byte message every 2 ms for 1.2 s; 0.2 s in, stream 5 sends 1 MiB: ``one``
    message, or the same bytes as ``pieces`` of one chunk each. Returns each small message's delivery latency, how
    many of stream 5's chunks first left between its send and its own first transmission (small messages queue up
    while the congestion window is full, and round robin then gives stream 5 a chunk per turn: one per message
    queued before it on its own stream, plus one), and the 1 MiB's transfer time."""
    cfg = SctpConfig(pmtu=PMTU, recbuf=4 << 20, sndbuf=4 << 20, nodelay=True, intl_enable=idata)
    net = Network(11, delay=0.01, loss=loss, reorder=loss, rate=RATE)
    na, nb = net.add(A, cfg), net.add(B, cfg)
    ca, sb = handshake(net, na, nb)
    t0 = net.now
    sent_at: dict[bytes, float] = {}
    for k in range(600):
        for s in range(1, 5):
            at = t0 + 0.1 + k * 0.002 + s * 0.0005
            payload = b"%d:%d:" % (s, k)
            payload += b"." * (64 - len(payload))
            sent_at[payload] = at
            net.at(at, lambda s=s, p=payload: ca.send(s, p, now=net.now))
    frag = ca.fragmentation_point
    pieces = [BIG] if mode == "one" else [min(frag, BIG - off) for off in range(0, BIG, frag)]
    big_at = t0 + 0.3

    def send_big() -> None:
        for n in pieces:
            ca.send(5, bytes(n), now=net.now)

    net.at(big_at, send_big)
    assert net.run_until(lambda: len(received(nb, sb)) == len(sent_at) + len(pieces), 120)
    delivered: dict[bytes, float] = {}
    big_done = 0.0
    for t, _assoc, e in nb.log:
        if isinstance(e, ev.DataReceived):
            if e.stream_id == 5:
                big_done = t
            else:
                assert e.data not in delivered
                delivered[e.data] = t
    for s in range(1, 5):  # every small message, once, in order on its stream
        got = [e.data for e in received(nb, sb) if e.stream_id == s]
        assert got == [p for p in sent_at if p.startswith(b"%d:" % s)]
    assert b"".join(e.data for e in received(nb, sb) if e.stream_id == 5) == bytes(BIG)
    # stream 5's chunks that first left while each small message waited to leave
    ahead: dict[bytes, int] = {}
    firsts: set[int] = set()
    big_firsts: list[float] = []
    for s in net.sent_by(A):
        for c in s.chunks():
            if isinstance(c, DataChunk | IDataChunk) and c.tsn not in firsts:
                firsts.add(c.tsn)
                if c.stream_id == 5:
                    big_firsts.append(s.time)
                elif c.data not in ahead:
                    ahead[c.data] = sum(1 for t in big_firsts if t >= sent_at[c.data])
    latency = {p: delivered[p] - sent_at[p] for p in sent_at}
    return latency, ahead, big_done - big_at


@pytest.mark.parametrize("loss", [0.0, 0.01])
def test_with_i_data_a_1mb_message_delays_small_messages_on_other_streams_by_under_a_packet_time(loss: float) -> None:
    one, _ahead, transfer = _hol_run("one", idata=True, loss=loss)
    pieces, _ahead, _transfer = _hol_run("pieces", idata=True, loss=loss)
    assert transfer > 0.8  # ~1 MiB at 10 Mbit/s: most small messages below were sent during the transfer
    # each small message arrives within a packet time of when it arrives beside the same bytes as separate messages
    late = {p: (one[p] - pieces[p]) / PACKET_TIME for p in one}
    assert max(late.values()) <= 1.0, sorted(late.items(), key=lambda kv: -kv[1])[:5]


def test_without_i_data_the_same_message_holds_them_back_for_most_of_its_transfer() -> None:
    """The control: the same run over DATA (what the test above would see without interleaving)."""
    one, ahead, _transfer = _hol_run("one", idata=False, loss=0.0)
    pieces, _, _ = _hol_run("pieces", idata=False, loss=0.0)
    during = [p for p in one if 100 <= int(p.split(b":")[1]) < 300]  # sent in the transfer's first 0.4 s
    late = sorted((one[p] - pieces[p]) / PACKET_TIME for p in during)
    assert late[len(late) // 2] > 100 and max(ahead[p] for p in during) > 300


# -- the order each scheduler gives, end to end ---------------------------------------------------------------------


def _ordered_run(
    scheduler: str, idata: bool, queue: Callable[[Association], None], expect: int
) -> list[ev.DataReceived]:
    cfg = SctpConfig(scheduler=scheduler, intl_enable=idata, nodelay=True)
    net, _na, nb, ca, sb = pair(4, cfg, delay=0.02)
    assert ca.status()["scheduler"] == scheduler and bool(ca.status()["interleaving"]) == (
        idata and scheduler != "fcfs"
    )
    net.at(net.now + 0.01, lambda: queue(ca))  # all queued at once, before anything of it can leave
    assert net.run_until(lambda: len(received(nb, sb)) == expect, 30)
    return received(nb, sb)


def _tags(got: list[ev.DataReceived]) -> list[str]:
    return [e.data.decode()[:3] for e in got]


@pytest.mark.parametrize("idata", [False, True])
def test_fcfs_delivers_in_the_order_messages_were_queued(idata: bool) -> None:
    order = [(s, f"{s}{k:02d}") for k in range(10) for s in (3, 1, 2) if (s + k) % 3 != 0]
    random.Random(5).shuffle(order)

    def queue(ca: Association) -> None:
        for s, tag in order:
            ca.send(s, tag.encode() + bytes(200))

    assert _tags(_ordered_run("fcfs", idata, queue, len(order))) == [tag for _s, tag in order]


@pytest.mark.parametrize("idata", [False, True])
def test_rr_takes_the_streams_in_turn(idata: bool) -> None:
    def queue(ca: Association) -> None:
        for s in (1, 2, 3):  # all of stream 1 queued first, then 2, then 3
            for k in range(20):
                ca.send(s, f"{s}{k:02d}".encode() + bytes(300))

    got = _tags(_ordered_run("rr", idata, queue, 60))
    assert got == [f"{s}{k:02d}" for k in range(20) for s in (1, 2, 3)]


@pytest.mark.parametrize("idata", [False, True])
def test_rr_interleaves_a_large_message_only_with_i_data(idata: bool) -> None:
    def queue(ca: Association) -> None:
        ca.send(1, b"big" + bytes(200_000))
        for s in (2, 3):
            for k in range(5):
                ca.send(s, f"{s}{k:02d}".encode())

    got = _tags(_ordered_run("rr", idata, queue, 11))
    if idata:
        assert got[-1] == "big"  # the ten small ones went past it, a chunk per turn
    else:
        assert got[0] == "big"  # a message per turn: it all left before the next stream's turn
    assert sorted(got) == sorted(["big", *(f"{s}{k:02d}" for s in (2, 3) for k in range(5))])


@pytest.mark.parametrize("idata", [False, True])
def test_prio_sends_strictly_by_stream_priority_and_in_turn_among_equals(idata: bool) -> None:
    def queue(ca: Association) -> None:
        ca.set_priority(1, 100)
        ca.set_priority(2, 100)
        ca.set_priority(3, 300)
        for s in (1, 2, 3):
            for k in range(10):
                ca.send(s, f"{s}{k:02d}".encode() + bytes(400))

    got = _tags(_ordered_run("prio", idata, queue, 30))
    assert got == [f"3{k:02d}" for k in range(10)] + [f"{s}{k:02d}" for k in range(10) for s in (1, 2)]


@pytest.mark.parametrize("idata", [False, True])
def test_wfq_shares_the_bytes_in_proportion_to_priority_plus_one(idata: bool) -> None:
    def queue(ca: Association) -> None:
        ca.set_priority(1, 299)  # weight 300
        ca.set_priority(2, 99)  # weight 100
        for s in (1, 2):
            for k in range(200):
                ca.send(s, f"{s}{k:03d}".encode() + bytes(500))

    got = _ordered_run("wfq", idata, queue, 400)
    first = [e.stream_id for e in got[:200]]  # while both are backlogged
    assert 2.6 <= first.count(1) / first.count(2) <= 3.4
    assert [e.data for e in got if e.stream_id == 1] == sorted(e.data for e in got if e.stream_id == 1)


def test_priority_is_checked_and_a_freed_stream_id_starts_at_the_default() -> None:
    net, _na, _nb, ca, _sb = pair(6, SctpConfig(scheduler="prio"))
    with pytest.raises(Exception, match=r"0\.\.65535"):
        ca.set_priority(1, 70_000)
    with pytest.raises(Exception, match="not open"):
        ca.set_priority(500, 1)
    sid = ca.open_stream(expect_peer=False)
    ca.set_priority(sid, 9)
    assert ca.priority(sid) == 9
    ca.send(sid, b"x")
    ca.close_stream(sid)
    assert net.run_until(lambda: any(isinstance(e, ev.StreamClosed) for e in net.nodes[A].events[ca]), 5)
    assert ca.priority(sid) == 0x7FFF


# -- PR-SCTP with I-DATA ---------------------------------------------------------------------------------------------


def test_a_lapsed_message_is_abandoned_by_its_mid_and_i_forward_tsn_moves_the_peer_on() -> None:
    net, _na, nb, ca, sb = pair(7, SctpConfig(nodelay=True), loss=0.15, delay=0.02)
    for k in range(30):
        ca.send(1, b"%03d" % k + bytes(6000), reliability="rexmit", param=0, now=net.now)  # 5 chunks each
        ca.send(2, b"r%02d" % k, now=net.now)
    assert net.run_until(lambda: len([e for e in received(nb, sb) if e.stream_id == 2]) == 30, 60)
    net.run_for(3.0)
    sent = [c for s in net.sent_by(A) for c in s.chunks()]
    assert not [c for c in sent if isinstance(c, ForwardTsnChunk | DataChunk)]
    forwards = [c for c in sent if isinstance(c, IForwardTsnChunk)]
    assert forwards and ca.stats["abandoned_messages"] > 0
    assert {(sid, u) for c in forwards for sid, u, _mid in c.streams} <= {(1, False)}
    got = [e.data[:3] for e in received(nb, sb) if e.stream_id == 1]
    assert got == sorted(got) and len(got) < 30  # some given up, the rest in order, none twice
    assert all(len(e.data) == 6003 for e in received(nb, sb) if e.stream_id == 1)  # and none in part
    assert sb.status()["held_fragments"] == 0 and sb.status()["held_bytes"] == 0
    assert ca.state == ESTABLISHED and sb.state == ESTABLISHED


def test_a_lost_datagram_does_not_take_a_live_unordered_message_of_its_stream_with_it() -> None:
    """Datagrams share stream 0's unordered MIDs with the stream's own unordered messages; an I-FORWARD-TSN that
    named a lost datagram's MID would tell the receiver to drop every unordered message of stream 0 up to it, a
    reliable one still arriving included. One-chunk unordered messages are never named (nothing of them is held)."""
    net, _na, nb, ca, sb = pair(8, SctpConfig(nodelay=True), delay=0.02)
    dropped = 0

    def lose_datagrams(s: Any) -> bool | None:
        nonlocal dropped
        chunks = parse_packet(s.data).chunks
        if s.src == A and any(isinstance(c, IDataChunk) and c.ppid == 0xD6 for c in chunks) and dropped < 6:
            dropped += 1
            return False
        return None

    net.intercept = lose_datagrams
    ca.send(0, bytes(range(256)) * 400, unordered=True, ppid=1)  # ~100 KB, reliable, 80+ chunks
    for _ in range(20):
        ca.send_datagram(b"dgram", ppid=0xD6, now=net.now)
    assert net.run_until(lambda: any(e.ppid == 1 for e in received(nb, sb)), 20)
    (big,) = [e for e in received(nb, sb) if e.ppid == 1]
    assert big.data == bytes(range(256)) * 400 and big.unordered
    assert dropped == 6 and ca.stats["abandoned_messages"] >= 6


def test_the_receiver_drops_what_an_i_forward_tsn_names_and_releases_what_waited() -> None:
    server = Endpoint(SctpConfig(), local_port=5000, rng=random.Random(3))
    assoc, peer, _ = raw_connect(server, A, NOW, params=ALL_EXTENSIONS)
    assert assoc.features & ext.IDATA and assoc.features & ext.PRSCTP
    drain(assoc)
    first = peer.idata(b"B", stream_id=2, beginning=True, ending=False)  # MID 0, never finished...
    lost = peer.idata(b"E", stream_id=2, mid=0, fsn=1, beginning=False, ending=True)
    after = [peer.idata(b"m%d" % i, stream_id=2, ppid=i, mid=i + 1) for i in range(3)]  # ...MIDs 1..3 behind it
    server.receive_datagram(peer.packet(first, *after), A, NOW)
    assert not [e for e in drain(assoc) if isinstance(e, ev.DataReceived)]
    assert assoc.status()["held_fragments"] == 1
    server.receive_datagram(peer.packet(IForwardTsnChunk(lost.tsn, [(2, False, 0)])), A, NOW)
    got = [e for e in drain(assoc) if isinstance(e, ev.DataReceived)]
    assert [e.data for e in got] == [b"m0", b"m1", b"m2"]
    assert assoc.status()["held_fragments"] == 0 and assoc.status()["held_bytes"] == 0


# -- RE-CONFIG with I-DATA -------------------------------------------------------------------------------------------


def test_a_reset_stream_starts_both_mid_counters_over() -> None:
    net, _na, nb, ca, sb = pair(9, delay=0.02)
    for k in range(3):
        ca.send(4, b"o%d" % k, now=net.now)
        ca.send(4, b"u%d" % k, unordered=True, now=net.now)
    assert net.run_until(lambda: len(received(nb, sb)) == 6, 5)
    ca.close_stream(4)
    assert net.run_until(lambda: bool(nb.of(sb, ev.StreamReset)), 5)
    for k in range(2):
        ca.send(4, b"O%d" % k, now=net.now)
        ca.send(4, b"U%d" % k, unordered=True, now=net.now)
    assert net.run_until(lambda: len(received(nb, sb)) == 10, 5)
    mids = {c.data: c.mid for c in data_chunks(net, A) if c.stream_id == 4}
    assert [mids[b"o%d" % k] for k in range(3)] == [0, 1, 2] and [mids[b"u%d" % k] for k in range(3)] == [0, 1, 2]
    assert [mids[b"O%d" % k] for k in range(2)] == [0, 1] and [mids[b"U%d" % k] for k in range(2)] == [0, 1]
    assert [e.data for e in received(nb, sb) if e.stream_id == 4 and not e.unordered] == [
        b"o0",
        b"o1",
        b"o2",
        b"O0",
        b"O1",
    ]


# -- chunks that do not belong ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["data", "forward-tsn"])
def test_data_or_forward_tsn_on_an_i_data_association_is_a_protocol_violation(kind: str) -> None:
    server = Endpoint(SctpConfig(), local_port=5000, rng=random.Random(4))
    assoc, peer, _ = raw_connect(server, A, NOW, params=ALL_EXTENSIONS)
    drain(assoc)
    bad = peer.data(b"old style") if kind == "data" else ForwardTsnChunk(peer.next_tsn, [])
    server.receive_datagram(peer.packet(bad), A, NOW)
    (abort,) = [c for c in chunks_of(assoc.datagrams_to_send(NOW)) if isinstance(c, AbortChunk)]
    assert abort.causes[0].code == PROTOCOL_VIOLATION
    (aborted,) = [e for e in drain(assoc) if isinstance(e, ev.AssociationAborted)]
    assert "I-DATA association" in aborted.reason


def test_i_data_on_a_data_association_is_an_unrecognized_chunk() -> None:
    """Type 64's upper bits are 01: the rest of the packet is skipped and the chunk reported (RFC 9260 §3.2)."""
    server = Endpoint(SctpConfig(intl_enable=False), local_port=5000, rng=random.Random(5))
    assoc, peer, _ = raw_connect(server, A, NOW, params=ALL_EXTENSIONS)
    assert not assoc.features & ext.IDATA
    drain(assoc)
    chunk = peer.idata(b"new style")
    server.receive_datagram(peer.packet(chunk, HeartbeatChunk(b"skipped")), A, NOW)
    out = chunks_of(assoc.datagrams_to_send(NOW))
    (err,) = [c for c in out if isinstance(c, ErrorChunk)]
    assert err.causes[0].code == UNRECOGNIZED_CHUNK and err.causes[0].info == chunk.serialize()
    assert not [c for c in out if isinstance(c, HeartbeatAckChunk)]
    assert assoc.state == ESTABLISHED and not [e for e in drain(assoc) if isinstance(e, ev.DataReceived)]
    # I-FORWARD-TSN's upper bits are 11: skipped and reported, the rest of the packet processed
    server.receive_datagram(peer.packet(IForwardTsnChunk(peer.next_tsn, []), HeartbeatChunk(b"seen")), A, NOW)
    out = chunks_of(assoc.datagrams_to_send(NOW))
    assert [c.causes[0].code for c in out if isinstance(c, ErrorChunk)] == [UNRECOGNIZED_CHUNK]
    assert [c for c in out if isinstance(c, HeartbeatAckChunk)] == [HeartbeatAckChunk(b"seen")]


# -- messages in progress and the receive window ----------------------------------------------------------------------


def test_partial_messages_filling_the_window_together_do_not_abort_an_honest_sender() -> None:
    """Two interleaved 40 KB messages against a 64 KiB window: together their fragments pass the window with
    nothing missing, which over DATA means one message larger than the window; here each fits, so they complete."""
    server = Endpoint(SctpConfig(recbuf=64 * 1024), local_port=5000, rng=random.Random(6))
    assoc, peer, _ = raw_connect(server, A, NOW, params=ALL_EXTENSIONS)
    drain(assoc)
    size = 1000
    for fsn in range(40):
        first, last = fsn == 0, fsn == 39
        pair_ = [
            peer.idata(bytes([s]) * size, stream_id=s, mid=0, fsn=fsn, beginning=first, ending=last) for s in (1, 2)
        ]
        server.receive_datagram(peer.packet(*pair_), A, NOW)
        assoc.datagrams_to_send(NOW)
    assert assoc.state == ESTABLISHED
    got = [e for e in drain(assoc) if isinstance(e, ev.DataReceived)]
    assert sorted((e.stream_id, e.data) for e in got) == [(1, b"\x01" * 40_000), (2, b"\x02" * 40_000)]


def test_one_message_larger_than_the_window_is_out_of_resource_even_with_others_in_progress() -> None:
    server = Endpoint(SctpConfig(recbuf=16 * 1024), local_port=5000, rng=random.Random(7))
    assoc, peer, _ = raw_connect(server, A, NOW, params=ALL_EXTENSIONS)
    drain(assoc)
    server.receive_datagram(peer.packet(peer.idata(b"x" * 500, stream_id=3, beginning=True, ending=False)), A, NOW)
    for fsn in range(20):  # 20 KB of one message, with a gap left before it: the whole-window rule would wait
        c = peer.idata(b"y" * 1000, stream_id=1, mid=0, fsn=fsn, beginning=fsn == 0, ending=False)
        server.receive_datagram(peer.packet(c), A, NOW)
        if assoc.state != ESTABLISHED:
            break
    (abort,) = [c for c in chunks_of(assoc.datagrams_to_send(NOW)) if isinstance(c, AbortChunk)]
    assert abort.causes[0].code == OUT_OF_RESOURCE
    assert fsn == 16  # the fragment that took it past 16 KiB


@pytest.mark.parametrize("budget", [True, False])
def test_the_sender_starts_no_more_large_messages_than_the_peer_can_hold_whole(budget: bool) -> None:
    """Four 150 KB messages on four streams against a 256 KiB window. Interleaved without a budget, each gets a
    share of the window and none can complete: the receiver sees a window full of fragments with nothing missing
    and aborts. With the budget (half the peer's window for messages in progress) they go one or two at a time."""
    cfg = SctpConfig(recbuf=256 * 1024, nodelay=True)
    net, _na, nb, ca, sb = pair(10, cfg, delay=0.01)
    if not budget:
        ca._queue.set_budget(0)
    most = 0

    def watch() -> None:
        nonlocal most
        most = max(most, ca._queue.started)

    for s in range(1, 5):
        ca.send(s, bytes([s]) * 150_000, now=net.now)
    done = net.run_until(lambda: len(received(nb, sb)) == 4 or ca.state != ESTABLISHED, 30, on_step=watch)
    if budget:
        assert done and sorted(e.data for e in received(nb, sb)) == [bytes([s]) * 150_000 for s in range(1, 5)]
        assert 0 < most <= 128 * 1024 + 150_000 + 150_000 // ca.fragmentation_point * 448 + 448
        assert not nb.of(sb, ev.AssociationAborted)
    else:
        assert received(nb, sb) == [] and nb.of(sb, ev.AssociationAborted)
