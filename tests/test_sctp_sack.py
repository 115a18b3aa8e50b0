"""When the receiver acknowledges (RFC 9260 §6.2, §6.7): a SACK for every packet that arrives while TSNs are missing,
one at once when the last gap fills, duplicates reported, and delayed SACKs otherwise, however the driver batches
its reads (it hands the association every datagram of a read batch before asking for packets to send). And what a
SHUTDOWN's Cumulative TSN Ack may say."""

from __future__ import annotations

import random

from mux.sctp.association import Association
from mux.sctp.chunks import AbortChunk, DataChunk, SackChunk, ShutdownAckChunk, ShutdownChunk
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import Endpoint
from mux.sctp.rx.receiver import MAX_BATCH_SACKS
from tests.sctp_link import RawPeer, chunks_of, drain, raw_connect

A = ("10.0.0.1", 5001)
NOW = 1000.0


def _server() -> tuple[Endpoint, Association, RawPeer]:
    """An established association that has had its first DATA (which §5.1 acknowledges at once)."""
    server = Endpoint(SctpConfig(), local_port=5000, rng=random.Random(5))
    assoc, peer, _ = raw_connect(server, A, NOW)
    server.receive_datagram(peer.packet(peer.data(b"first")), A, NOW)
    assert len(_sacks(assoc)) == 1
    drain(assoc)
    return server, assoc, peer


def _sacks(assoc: Association, now: float = NOW) -> list[SackChunk]:
    return [c for c in chunks_of(assoc.datagrams_to_send(now)) if isinstance(c, SackChunk)]


def test_in_order_data_gets_a_sack_for_every_second_packet_even_inside_one_batch() -> None:
    """§6.2: a SACK for at least every second packet, however the driver batches its reads. usrsctp grows its cwnd
    by at most an MTU or two per SACK, so one SACK per batch held tsctp's transfers into mux back; the rest waits
    for the delayed-SACK timer."""
    server, assoc, peer = _server()
    server.receive_datagram(peer.packet(peer.data(b"a")), A, NOW)
    assert _sacks(assoc) == []  # delayed
    chunks = [peer.data(b"x%d" % i) for i in range(2 * MAX_BATCH_SACKS)]  # as many as one batch SACKs early
    for c in chunks:
        server.receive_datagram(peer.packet(c), A, NOW)
    assert [s.cum_tsn for s in _sacks(assoc)] == [chunks[i].tsn for i in range(0, 2 * MAX_BATCH_SACKS, 2)]
    later = NOW + SctpConfig().sackdelay / 1000.0
    assert assoc.get_timer() is not None and assoc.get_timer() <= later
    assoc.handle_timer(later)
    assert [s.cum_tsn for s in _sacks(assoc, later)] == [chunks[-1].tsn]


def test_a_long_in_order_batch_folds_its_sacks_beyond_a_few() -> None:
    """A read batch far longer than the sender's window could explain says the receiver is the bottleneck: after
    MAX_BATCH_SACKS early SACKs, one at the batch's end acknowledges the rest. The next batch starts over."""
    server, assoc, peer = _server()
    chunks = [peer.data(b"y%d" % i) for i in range(40)]
    for c in chunks:
        server.receive_datagram(peer.packet(c), A, NOW)
    cums = [s.cum_tsn for s in _sacks(assoc)]
    assert cums == [chunks[i].tsn for i in range(1, 2 * MAX_BATCH_SACKS, 2)] + [chunks[-1].tsn]
    more = [peer.data(b"z%d" % i) for i in range(4)]
    for c in more:
        server.receive_datagram(peer.packet(c), A, NOW)
    assert [s.cum_tsn for s in _sacks(assoc)] == [more[1].tsn, more[3].tsn]


def test_every_out_of_order_packet_of_a_batch_gets_its_own_sack_however_many() -> None:
    """Above a hole, no SACK is folded: each is a miss indication the sender's fast retransmit counts."""
    server, assoc, peer = _server()
    peer.data(b"lost")
    above = [peer.data(b"m%d" % i) for i in range(3 * MAX_BATCH_SACKS)]
    for c in above:
        server.receive_datagram(peer.packet(c), A, NOW)
    assert len(_sacks(assoc)) == len(above)


def test_every_out_of_order_packet_of_a_batch_gets_its_own_sack() -> None:
    """Four packets arrive above a hole in one read batch: four SACKs, each as it stood after its packet, so the
    sender counts four miss indications (three trigger its fast retransmit, §7.2.4)."""
    server, assoc, peer = _server()
    lost = peer.data(b"lost")
    above = [peer.data(b"m%d" % i) for i in range(4)]
    for c in above:
        server.receive_datagram(peer.packet(c), A, NOW)
    sacks = _sacks(assoc)
    assert len(sacks) == 4
    assert all(s.cum_tsn == (lost.tsn - 1) & 0xFFFFFFFF for s in sacks)
    ends = [s.gaps[-1][1] for s in sacks]  # each reports the packet it answers, the newest last
    assert ends == [ends[0] + i for i in range(4)] and ends[0] == 2


def test_the_packet_that_fills_the_last_gap_is_acknowledged_at_once() -> None:
    server, assoc, peer = _server()
    lost = peer.data(b"lost")
    above = peer.data(b"above")
    server.receive_datagram(peer.packet(above), A, NOW)
    assert len(_sacks(assoc)) == 1
    server.receive_datagram(peer.packet(lost), A, NOW + 0.01)
    (sack,) = _sacks(assoc, NOW + 0.01)  # not delayed by sackdelay: the sender's recovery waits on it
    assert sack.cum_tsn == above.tsn and sack.gaps == []


def test_a_gap_filled_inside_a_batch_still_answers_each_packet() -> None:
    """A packet above a hole, the hole's retransmission, then the next in sequence, all in one batch: the first two
    get their SACKs, each as it stood after its packet; the third, in sequence with nothing missing, waits."""
    server, assoc, peer = _server()
    lost = peer.data(b"lost")
    above = peer.data(b"above")
    after = peer.data(b"after")
    server.receive_datagram(peer.packet(above), A, NOW)
    server.receive_datagram(peer.packet(lost), A, NOW)
    server.receive_datagram(peer.packet(after), A, NOW)
    sacks = _sacks(assoc)
    assert [(s.cum_tsn, s.gaps) for s in sacks] == [((lost.tsn - 1) & 0xFFFFFFFF, [(2, 2)]), (above.tsn, [])]
    timer = assoc.get_timer()
    assert timer is not None and timer > NOW  # the delayed SACK for ``after``
    assoc.handle_timer(timer)
    (late,) = _sacks(assoc, timer)
    assert late.cum_tsn == after.tsn


def test_duplicates_are_reported_and_answered_at_once() -> None:
    server, assoc, peer = _server()
    c: DataChunk = peer.data(b"once")
    server.receive_datagram(peer.packet(c), A, NOW)
    _sacks(assoc, NOW + 1)  # let the delayed SACK go
    server.receive_datagram(peer.packet(c), A, NOW + 1)
    (sack,) = _sacks(assoc, NOW + 1)
    assert sack.duplicates == [c.tsn] and sack.cum_tsn == c.tsn


# -- a SHUTDOWN whose Cumulative TSN Ack is out of range (pion's) ------------------------------------------------


def _our_tsns(assoc: Association, now: float) -> list[int]:
    return [c.tsn for c in chunks_of(assoc.datagrams_to_send(now)) if isinstance(c, DataChunk)]


def test_a_shutdown_acking_what_we_never_sent_still_closes_gracefully() -> None:
    """pion fills SHUTDOWN's Cumulative TSN Ack with a TSN of its own; the field is ignored (and counted), the close
    goes on: SHUTDOWN-ACK, not ABORT."""
    server, assoc, peer = _server()
    assoc.send(0, b"reply", now=NOW)
    (tsn,) = _our_tsns(assoc, NOW)
    server.receive_datagram(peer.packet(SackChunk(tsn, 1 << 20)), A, NOW)  # everything of ours is acked
    bogus = (tsn + 0x1234_5678) & 0xFFFFFFFF  # far beyond anything we sent
    server.receive_datagram(peer.packet(ShutdownChunk(bogus)), A, NOW)
    out = chunks_of(assoc.datagrams_to_send(NOW))
    assert any(isinstance(c, ShutdownAckChunk) for c in out) and not any(isinstance(c, AbortChunk) for c in out)
    assert assoc.stats["shutdown_cum_ignored"] == 1


def test_an_ignored_shutdown_cum_ack_acknowledges_nothing() -> None:
    """Our data the peer has not SACKed stays outstanding: no SHUTDOWN-ACK until a SACK covers it."""
    server, assoc, peer = _server()
    assoc.send(0, b"reply", now=NOW)
    (tsn,) = _our_tsns(assoc, NOW)
    server.receive_datagram(peer.packet(ShutdownChunk((tsn + 5) & 0xFFFFFFFF)), A, NOW)
    assert not any(isinstance(c, ShutdownAckChunk) for c in chunks_of(assoc.datagrams_to_send(NOW)))
    server.receive_datagram(peer.packet(SackChunk(tsn, 1 << 20)), A, NOW + 0.01)
    assert any(isinstance(c, ShutdownAckChunk) for c in chunks_of(assoc.datagrams_to_send(NOW + 0.01)))


def test_a_sack_acking_what_we_never_sent_is_still_a_protocol_violation() -> None:
    server, assoc, peer = _server()
    assoc.send(0, b"reply", now=NOW)
    (tsn,) = _our_tsns(assoc, NOW)
    server.receive_datagram(peer.packet(SackChunk((tsn + 5) & 0xFFFFFFFF, 1 << 20)), A, NOW)
    assert any(isinstance(c, AbortChunk) for c in chunks_of(assoc.datagrams_to_send(NOW)))
