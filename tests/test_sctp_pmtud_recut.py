"""When PLPMTUD's size falls, the messages still queued are cut again to the new size (``Scheduler.recut``).

In memory: a client whose search reached 9000 bytes queues messages cut at that size; then the path shrinks to
1500 and the size falls back (as on a black hole). What had not left yet must leave in chunks that fit, or the
path drops every one of them and the messages never arrive. Messages whose first fragments left before the drop
go on with smaller fragments (under I-DATA their FSNs continue from the last one sent).
"""

from __future__ import annotations

import random

import pytest

from mux.sctp import events as ev
from mux.sctp.association import Association
from mux.sctp.chunks import FLAG_B, FLAG_E, DataChunk, IDataChunk
from mux.sctp.config import SctpConfig
from mux.sctp.pmtud import set_size
from mux.sctp.tx.schedulers import make_scheduler
from mux.sctp.tx.send_queue import OutChunk
from tests.sctp_link import Network, Node, chunks_of, handshake

CLIENT, SERVER = ("10.0.0.1", 5000), ("10.0.0.2", 5000)


def grown_pair(intl: bool) -> tuple[Network, Node, Association, Node, Association]:
    """A client whose search has reached 9000 bytes, and its server."""
    net = Network(seed=7, delay=0.005)
    client = net.add(CLIENT, SctpConfig(pmtud=True, maximum_mtu=9000, intl_enable=intl, sndbuf=4 << 20))
    server = net.add(SERVER, SctpConfig(intl_enable=intl))
    ca, sa = handshake(net, client, server)
    assert ca._pmtud is None and ca.status()["pmtud"] == {
        "pmtu": 1280,
        "state": "idle",
        "maximum": 9000,
        "probes_sent": 0,
        "fallbacks": 0,
    }  # no probe before there is more to send
    ca.send(0, b"x" * 3000)  # more than one packet at the base: the search begins
    pm = ca._pmtud
    assert pm is not None
    assert net.run_until(lambda: pm.search.pmtu == 9000 and len(server.of(sa, ev.DataReceived)) == 1, 30.0)
    server.events[sa].clear()
    return net, client, ca, server, sa


def data_too_big(net: Network, since: int, mtu: int, in_flight: set[int]) -> int:
    """Datagrams the client sent from ``net.sent[since]`` on that exceed ``mtu`` and carry DATA or I-DATA other
    than the chunks ``in_flight`` when the size fell (those keep their size, a retransmission of them too; and the
    search's own probes, HEARTBEAT and PAD, may exceed it: they find the path again)."""
    return sum(
        1
        for rec in net.sent[since:]
        if rec.src == CLIENT
        and len(rec.data) + 28 > mtu
        and any(isinstance(c, (DataChunk, IDataChunk)) and c.tsn not in in_flight for c in chunks_of([rec.data]))
    )


def in_flight(assoc: Association) -> set[int]:
    out = assoc._out
    return {c.tsn for c in out.sent[out.head :]}


def shrink(net: Network, assoc: Association, mtu: int) -> None:
    """The path now carries ``mtu`` at most, and the association's search has fallen back (a black hole found)."""
    net.path(CLIENT, SERVER).mtu = mtu
    pm = assoc._pmtud
    assert pm is not None
    pm.search.black_hole(net.now)
    set_size(assoc, pm.search.pmtu)


@pytest.mark.parametrize("intl", [False, True], ids=["data", "idata"])
def test_messages_queued_at_the_larger_size_arrive_after_it_falls(intl: bool) -> None:
    net, _client, ca, server, sa = grown_pair(intl)
    rng = random.Random(1)
    sent = [rng.randbytes(n) for n in (30_000, 8_000, 100, 65_000, 9_000)]
    for i, m in enumerate(sent):
        ca.send(i % 3, m)
    since, flying = len(net.sent), in_flight(ca)
    shrink(net, ca, 1500)
    assert ca.fragmentation_point < 1500
    assert net.run_until(lambda: len(server.of(sa, ev.DataReceived)) == len(sent), 30.0)
    got = sorted((e.data for e in server.of(sa, ev.DataReceived)), key=len)
    assert got == sorted(sent, key=len)
    assert data_too_big(net, since, 1500, flying) == 0  # nothing was cut at the old size after all


@pytest.mark.parametrize("intl", [False, True], ids=["data", "idata"])
def test_a_message_half_sent_goes_on_in_smaller_fragments(intl: bool) -> None:
    net, _client, ca, server, sa = grown_pair(intl)
    message = random.Random(2).randbytes(400_000)
    ca.send(1, message)
    net.run_for(0.02)  # its first fragments leave at 9000 and are acknowledged; most still wait in the queue
    queued = ca._queue.chunks
    assert 0 < queued < 400_000 // 8000
    since, flying = len(net.sent), in_flight(ca)
    shrink(net, ca, 1500)
    assert ca._queue.chunks > queued  # cut again
    assert net.run_until(lambda: len(server.of(sa, ev.DataReceived)) == 1, 60.0)
    (got,) = server.of(sa, ev.DataReceived)
    assert got.data == message
    assert data_too_big(net, since, 1500, flying) == 0


@pytest.mark.parametrize("idata", [False, True])
def test_recut_keeps_flags_fsns_and_counts(idata: bool) -> None:
    """At the scheduler: B on the first piece, E on the last, FSNs consecutive from a begun message's, counts."""
    q = make_scheduler("rr", 4, 1000, idata=idata)
    q.push(0, bytes(range(256)) * 10, ppid=51, unordered=False)  # 2560 B: 1000 + 1000 + 560
    q.push(0, b"x" * 900, ppid=52, unordered=False)
    first = q.take()  # the first message has begun to leave
    assert first.flags & FLAG_B and first.size == 1000
    q.recut(400)
    out: list[OutChunk] = []
    while q:
        out.append(q.take())
    assert q.chunks == 0 and q.bytes == 0
    assert [c.size for c in out] == [400, 400, 200, 400, 160, 400, 400, 100]
    assert b"".join(c.data for c in [first, *out[:5]]) == bytes(range(256)) * 10
    assert [c.flags & (FLAG_B | FLAG_E) for c in out] == [0, 0, 0, 0, FLAG_E, FLAG_B, 0, FLAG_E]
    if idata:
        assert [c.ppid for c in out[:5]] == [1, 2, 3, 4, 5]  # FSNs go on after the first fragment's 0
        assert [c.ppid for c in out[5:]] == [52, 1, 2]
    else:
        assert [c.ppid for c in out] == [51] * 5 + [52] * 3
