"""PR-SCTP (RFC 3758) in memory, on the seeded lossy link: policies that give messages up, FORWARD-TSN both ways.

Whatever is abandoned, what is delivered is delivered once, whole, and in order on an ordered stream; a stream
never stalls behind a message its sender gave up; and what comes after the abandoned messages arrives.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mux.sctp import events as ev
from mux.sctp import extensions as ext
from mux.sctp.association import ESTABLISHED, Association, BufferFull
from mux.sctp.chunks import DataChunk, ForwardTsnChunk, IDataChunk, IForwardTsnChunk, SackChunk
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import Endpoint
from tests.sctp_link import Network, Node, chunks_of, drain, handshake, raw_connect

A = ("10.0.0.1", 40001)
B = ("10.0.0.2", 40002)
NOW = 1000.0
LOSSY = {"loss": 0.1, "reorder": 0.05, "dup": 0.02, "delay": 0.01, "reorder_delay": 0.03}


@dataclass
class Sent:
    ppid: int
    stream: int
    unordered: bool
    data: bytes
    reliability: str
    param: int


def setup(
    seed: int, path: dict[str, float] | None = None, **config: object
) -> tuple[Network, Node, Node, Association, Association]:
    path = dict(path or {})
    loss = path.pop("loss", 0.0)
    net = Network(seed, **path)
    a = net.add(A, SctpConfig(**config))  # type: ignore[arg-type]
    b = net.add(B, SctpConfig(**config))  # type: ignore[arg-type]
    ca, sa = handshake(net, a, b)  # without loss: losing the handshake is tested elsewhere, not here
    for p in net.paths.values():
        p.loss = loss
    return net, a, b, ca, sa


def run(net: Network, sender: Association, msgs: list[Sent]) -> None:
    """Send everything as fast as sndbuf allows, then until nothing is left in flight or queued."""
    queue = list(msgs)

    def feed() -> None:
        while queue and sender.state == ESTABLISHED:
            m = queue[0]
            try:
                sender.send(
                    m.stream,
                    m.data,
                    ppid=m.ppid,
                    unordered=m.unordered,
                    reliability=m.reliability,
                    param=m.param,
                    now=net.now,
                )
            except BufferFull:
                return
            queue.pop(0)

    assert net.run_until(lambda: not queue and sender.buffered_amount() == 0, 600, on_step=feed), sender.status()


def check(msgs: list[Sent], got: list[ev.DataReceived]) -> None:
    """Delivered at most once, whole, ordered streams in order; every reliable message delivered."""
    by_ppid = {m.ppid: m for m in msgs}
    counts = Counter(e.ppid for e in got)
    assert all(n == 1 for n in counts.values()), "a message was delivered twice"
    for e in got:
        m = by_ppid[e.ppid]
        assert e.data == m.data and e.stream_id == m.stream and e.unordered == m.unordered
    for s in {m.stream for m in msgs}:
        got_order = [e.ppid for e in got if e.stream_id == s and not e.unordered]
        assert got_order == sorted(got_order), f"stream {s} out of order"
    missing = [m.ppid for m in msgs if m.reliability == "reliable" and m.ppid not in counts]
    assert not missing, f"reliable messages lost: {missing[:10]}"


def test_both_ends_agree_on_pr_sctp_and_not_when_one_declines() -> None:
    _net, _a, _b, ca, sa = setup(1)
    assert ca.features & ext.PRSCTP and sa.features & ext.PRSCTP
    net = Network(2)
    a = net.add(A, SctpConfig(prsctp_enable=False))
    b = net.add(B, SctpConfig())
    ca, sa = handshake(net, a, b)
    assert not ca.features & ext.PRSCTP and not sa.features & ext.PRSCTP
    # without it, a policy is ignored: the message is reliable
    ca.send(0, b"x", reliability="rexmit", param=0, now=net.now)
    assert net.run_until(lambda: bool(b.of(sa, ev.DataReceived)), 10)


@pytest.mark.parametrize("idata", [False, True])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("reliability", "param"), [("rexmit", 0), ("rexmit", 1), ("timed", 30)])
def test_a_policy_gives_messages_up_and_the_stream_goes_on(
    seed: int, reliability: str, param: int, idata: bool
) -> None:
    """Over DATA with FORWARD-TSN, and over I-DATA (RFC 8260) with I-FORWARD-TSN, abandoning by message."""
    net, a, b, ca, sa = setup(10 + seed, path=LOSSY, intl_enable=idata)
    assert bool(ca.features & ext.IDATA) == idata
    rng = random.Random(seed)
    frag = ca.fragmentation_point
    msgs = [
        Sent(
            i + 1,
            rng.randrange(4),
            rng.random() < 0.3,
            rng.randbytes(rng.choice((20, 300, frag + 5, 3 * frag))),
            reliability,
            param,
        )
        for i in range(600)
    ]
    msgs += [Sent(1000 + i, i % 4, False, b"reliable %d" % i, "reliable", 0) for i in range(20)]  # afterwards
    run(net, ca, msgs)
    assert net.run_until(lambda: len({e.ppid for e in b.of(sa, ev.DataReceived)} & set(range(1000, 1020))) == 20, 60)
    got = b.of(sa, ev.DataReceived)
    check(msgs, got)
    assert ca.stats.get("abandoned_messages", 0) > 0
    # a message given up after some of it left needs a FORWARD-TSN; a ``timed`` one may lapse only while queued,
    # when RACK repaired every loss of what had left within its lifetime (here an RTT and a quarter of one)
    forwarded = reliability == "rexmit" or ca.stats.get("forward_tsns_sent", 0) > 0
    if forwarded:
        assert ca.stats.get("forward_tsns_sent", 0) > 0 and sa.stats.get("forward_tsns_received", 0) > 0
    assert len({e.ppid for e in got}) < 620  # some were given up, on a 10% lossy link
    assert sa.status()["held_bytes"] == 0 and sa.status()["held_fragments"] == 0  # no partial message left over
    assert not b.of(sa, ev.AssociationAborted) and not a.of(ca, ev.AssociationAborted)
    kinds = {type(c) for s in net.sent_by(A) for c in s.chunks()}
    assert kinds & {DataChunk, IDataChunk, ForwardTsnChunk, IForwardTsnChunk} == (
        ({IDataChunk, IForwardTsnChunk} if idata else {DataChunk, ForwardTsnChunk})
        if forwarded
        else {IDataChunk if idata else DataChunk}
    )


def test_a_timed_message_that_expires_in_the_queue_never_leaves_and_takes_no_ssn() -> None:
    net, _a, b, ca, sa = setup(30, path={"delay": 0.05}, recbuf=64 * 1024)
    # a closed window (the peer never reads) holds the queue back while the lifetimes run out
    b.consume = False
    big = bytes(ca.fragmentation_point)
    for _ in range(int(sa.rwnd / len(big)) + 40):
        ca.send(0, big, ppid=1, now=net.now)
    for i in range(10):  # behind them on the same stream
        ca.send(0, b"late %d" % i, ppid=100 + i, reliability="timed", param=100, now=net.now)
    net.run_for(1.0)
    ca.send(0, b"after", ppid=200, now=net.now)
    for e in list(b.events[sa]):  # the application reads at last
        if isinstance(e, ev.DataReceived):
            sa.consumed(len(e.data))
    b.consume = True
    assert net.run_until(lambda: any(e.ppid == 200 for e in b.of(sa, ev.DataReceived)), 60)
    stream0 = [e.ppid for e in b.of(sa, ev.DataReceived)]
    # the expired messages never left, and 'after' was not held back waiting for their SSNs
    assert set(stream0) == {1, 200} and stream0[-1] == 200
    assert ca.stats.get("abandoned_messages", 0) == 10


def test_the_receiver_skips_what_forward_tsn_says_and_delivers_what_waited_behind_it() -> None:
    server = Endpoint(SctpConfig(), local_port=5000, rng=random.Random(3))
    assoc, peer, _ = raw_connect(server, A, NOW)
    assoc.features |= ext.PRSCTP  # the raw peer offered nothing: agree by hand
    drain(assoc)
    first = peer.data(b"B", stream_id=2, beginning=True, ending=False)  # a message never finished...
    lost = peer.data(b"E", stream_id=2, beginning=False, ending=True)
    after = [peer.data(b"m%d" % i, stream_id=2, ppid=i) for i in range(3)]  # ...and three waiting behind it
    server.receive_datagram(peer.packet(first, *after), A, NOW)
    assert not [e for e in drain(assoc) if isinstance(e, ev.DataReceived)]
    assert assoc.status()["held_fragments"] == 1
    server.receive_datagram(peer.packet(ForwardTsnChunk(lost.tsn, [(2, first.ssn)])), A, NOW)
    got = [e for e in drain(assoc) if isinstance(e, ev.DataReceived)]
    assert [e.data for e in got] == [b"m0", b"m1", b"m2"]
    assert assoc.status()["held_fragments"] == 0 and assoc.status()["held_bytes"] == 0
    sack = [c for c in chunks_of(assoc.datagrams_to_send(NOW)) if isinstance(c, SackChunk)][-1]
    assert sack.cum_tsn == after[-1].tsn and sack.gaps == []  # answered at once, past everything


def test_forward_tsn_without_agreement_is_an_unrecognized_chunk() -> None:
    server = Endpoint(SctpConfig(prsctp_enable=False), local_port=5000, rng=random.Random(3))
    assoc, peer, _ = raw_connect(server, A, NOW)
    drain(assoc)
    server.receive_datagram(peer.packet(ForwardTsnChunk(peer.next_tsn + 5, [])), A, NOW)
    assert assoc.status()["unrecognized_chunks"] == 1
    server.receive_datagram(peer.packet(peer.data(b"still here")), A, NOW)
    assert [e.data for e in drain(assoc) if isinstance(e, ev.DataReceived)] == [b"still here"]


def test_a_forward_tsn_beyond_reason_is_dropped() -> None:
    server = Endpoint(SctpConfig(), local_port=5000, rng=random.Random(3))
    assoc, peer, _ = raw_connect(server, A, NOW)
    assoc.features |= ext.PRSCTP
    drain(assoc)
    server.receive_datagram(peer.packet(ForwardTsnChunk((peer.next_tsn + 0x10_0000) & 0xFFFFFFFF, [])), A, NOW)
    server.receive_datagram(peer.packet(peer.data(b"in sequence")), A, NOW)
    assert [e.data for e in drain(assoc) if isinstance(e, ev.DataReceived)] == [b"in sequence"]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 1_000_000),
    loss=st.sampled_from([0.0, 0.05, 0.2]),
    idata=st.booleans(),
    policies=st.lists(
        st.tuples(
            st.sampled_from(["reliable", "rexmit", "timed"]),
            st.integers(0, 3),
            st.booleans(),  # unordered
            st.sampled_from([10, 1000, 2500]),  # size: one chunk, or fragmented
            st.integers(0, 3),  # stream
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_whatever_is_given_up_nothing_is_delivered_twice_out_of_order_or_in_part(
    seed: int, loss: float, idata: bool, policies: list[tuple[str, int, bool, int, int]]
) -> None:
    """Over DATA, and over I-DATA whose fragments interleave and whose abandoning goes by message."""
    path = {"loss": loss, "reorder": loss / 2, "dup": loss / 4, "delay": 0.01}
    net, _a, b, ca, sa = setup(seed, path=path, intl_enable=idata)
    rng = random.Random(seed)
    msgs = [
        Sent(i + 1, stream, unordered, rng.randbytes(size), rel, param * 20 if rel == "timed" else param)
        for i, (rel, param, unordered, size, stream) in enumerate(policies)
    ]
    run(net, ca, msgs)
    net.run_for(2.0)
    check(msgs, b.of(sa, ev.DataReceived))
    assert sa.status()["held_fragments"] == 0
    assert not [c for s in net.sent for c in s.chunks() if isinstance(c, DataChunk | IDataChunk) and not c.data]
