"""The handshake under loss: both ends take an RTT sample from it (the client from INIT to INIT-ACK, the server from
the cookie it made to the COOKIE-ECHO that brings it back), so a lost COOKIE-ECHO or COOKIE-ACK waits for a T1 from
the measured RTT (SRTT + 4 RTTVAR, without RTO.Min), not RTO.Initial, and the first DATA is timed by a measured RTO.
Ambiguous samples (Karn) are not taken."""

from __future__ import annotations

import asyncio
import random

from mux import connect
from mux.sctp import extensions as ext
from mux.sctp.chunks import CookieAckChunk, CookieEchoChunk, InitAckChunk, InitChunk
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import Endpoint
from mux.sctp.packet import parse_packet, serialize_packet
from mux.sctp.params import AdaptationLayerIndicationParam
from mux.sctp.peer_rtts import PeerRtts
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener
from tests.sctp_link import Network, Sent

A = ("10.0.0.1", 5001)
B = ("10.0.0.2", 5002)
#: an RTO.Initial much longer than RTO.Min, so which one timed a retransmission is plain
CFG = SctpConfig(rto_initial=3000, rto_min=200)


def _kinds(s: Sent) -> set[type]:
    return {type(c) for c in s.chunks()}


def _drop_first(kind: type) -> object:
    dropped: list[Sent] = []

    def intercept(s: Sent) -> bool | None:
        if not dropped and kind in _kinds(s):
            dropped.append(s)
            return False
        return None

    return intercept


def _run(kind: type | None) -> tuple[Network, float]:
    net = Network(1, delay=0.01)
    if kind is not None:
        net.intercept = _drop_first(kind)  # type: ignore[assignment]
    na, nb = net.add(A, CFG), net.add(B, CFG)
    ca = na.connect(nb)
    t0 = net.now
    assert net.run_until(lambda: na.up(ca) and bool(nb.new_associations) and nb.up(nb.new_associations[-1]), 30)
    return net, net.now - t0


def test_a_lost_cookie_echo_is_resent_after_a_measured_rto_not_the_initial() -> None:
    net, took = _run(CookieEchoChunk)
    echoes = [s.time for s in net.sent_by(A) if CookieEchoChunk in _kinds(s)]
    assert len(echoes) == 2
    assert 0.059 <= echoes[1] - echoes[0] <= 0.061  # 20 ms + 4 x 10 ms from the INIT's sample, not 3 s
    assert took < 0.1


def test_a_lost_cookie_ack_is_recovered_the_same_way() -> None:
    net, took = _run(CookieAckChunk)
    echoes = [s.time for s in net.sent_by(A) if CookieEchoChunk in _kinds(s)]
    assert len(echoes) == 2 and 0.059 <= echoes[1] - echoes[0] <= 0.061
    assert took < 0.1


def test_a_lost_init_waits_for_rto_initial() -> None:
    """No sample exists before the first answer: the INIT's own timer is RTO.Initial."""
    net, took = _run(InitChunk)
    inits = [s.time for s in net.sent_by(A) if InitChunk in _kinds(s)]
    assert len(inits) == 2 and 2.99 <= inits[1] - inits[0] <= 3.01
    assert took > 3.0


def test_both_ends_leave_the_handshake_with_an_rtt() -> None:
    net = Network(1, delay=0.01)
    na, nb = net.add(A, CFG), net.add(B, CFG)
    ca = na.connect(nb)
    assert net.run_until(lambda: na.up(ca) and bool(nb.new_associations), 30)
    sb = nb.new_associations[-1]
    for assoc in (ca, sb):
        primary = assoc.status()["primary"]
        assert primary["srtt"] is not None and 15 <= primary["srtt"] <= 25, primary
        assert primary["rto"] == 200  # the measured RTO, clamped to RTO.Min; not RTO.Initial


def test_a_retransmitted_init_gives_no_sample() -> None:
    """After a retransmitted INIT, the INIT-ACK could answer either: no sample from it (Karn); the COOKIE-ECHO's
    timer is then the backed-off T1, and the RTT comes from the COOKIE-ECHO/COOKIE-ACK exchange."""
    net = Network(1, delay=0.01)
    dropped: list[Sent] = []

    def slow_ack(s: Sent) -> bool | list[float] | None:
        if not dropped and InitAckChunk in _kinds(s):
            dropped.append(s)
            return [3.5]  # held 3.5 s: the INIT is resent before it arrives
        return None

    net.intercept = slow_ack  # type: ignore[assignment]
    na, nb = net.add(A, CFG), net.add(B, CFG)
    ca = na.connect(nb)
    assert net.run_until(lambda: na.up(ca), 30)
    assert len([s for s in net.sent_by(A) if InitChunk in _kinds(s)]) == 2
    srtt = ca.status()["primary"]["srtt"]
    assert srtt is not None and srtt < 100  # from the COOKIE-ECHO exchange, not 3.5 s


def test_an_rtt_hint_times_the_first_init_and_quick_retries_do_not_count() -> None:
    """A recent association's RTT (prior knowledge, RFC 8961 §4) times the first T1-init, and the timer doubles
    from there; retransmissions below RTO.Min do not count against max_attempts."""
    net = Network(1, delay=0.01)
    net.intercept = _drop_first(InitChunk)  # type: ignore[assignment]
    na, nb = net.add(A, CFG), net.add(B, CFG)
    ca = na.endpoint.connect(B, nb.endpoint.local_port, net.now, rtt_hint=(0.02, 0.01))
    na.track(ca)
    assert net.run_until(lambda: na.up(ca), 30)
    inits = [s.time for s in net.sent_by(A) if InitChunk in _kinds(s)]
    assert len(inits) == 2 and 0.059 <= inits[1] - inits[0] <= 0.061  # 20 ms + 4 x 10 ms, not 3 s
    # and when that quick retransmission is lost too, the next waits twice as long
    net2 = Network(1, delay=0.01)
    lost: list[Sent] = []

    def drop_two(s: Sent) -> bool | None:
        if len(lost) < 2 and InitChunk in _kinds(s):
            lost.append(s)
            return False
        return None

    net2.intercept = drop_two  # type: ignore[assignment]
    na2, nb2 = net2.add(A, CFG), net2.add(B, CFG)
    ca2 = na2.endpoint.connect(B, nb2.endpoint.local_port, net2.now, rtt_hint=(0.02, 0.01))
    na2.track(ca2)
    assert net2.run_until(lambda: na2.up(ca2), 30)
    inits = [s.time for s in net2.sent_by(A) if InitChunk in _kinds(s)]
    assert len(inits) == 3 and 0.119 <= inits[2] - inits[1] <= 0.121  # doubled from there, as QUIC's probes


def test_peer_rtts_are_bounded_and_age() -> None:
    cache = PeerRtts(capacity=2, ttl=10.0)
    cache.remember("10.0.0.1", None, 0.0, 0.0)  # nothing measured: nothing kept
    assert len(cache) == 0
    cache.remember("10.0.0.1", 0.02, 0.01, 0.0)
    cache.remember("10.0.0.2", 0.03, 0.01, 1.0)
    assert cache.lookup("10.0.0.1", 2.0) == (0.02, 0.01)  # now the most recently used
    cache.remember("10.0.0.3", 0.04, 0.01, 3.0)  # the least recently used (10.0.0.2) goes
    assert cache.lookup("10.0.0.2", 3.0) is None and len(cache) == 2
    assert cache.lookup("10.0.0.3", 12.9) == (0.04, 0.01)
    assert cache.lookup("10.0.0.3", 13.1) is None  # older than ttl


async def test_a_client_association_leaves_its_rtt_for_the_next_connect(make_server: ServerFactory) -> None:
    """Over real sockets: a closed client association records what it measured; the next connect uses it."""
    from mux.sctp import client as sctp_client

    server = await make_server("behaviours.echo:Echo", [listener("sctp")])
    url, options = client_target(server, "sctp")
    sctp_client.PEER_RTTS._entries.pop("127.0.0.1", None)
    conn = await connect(tb.Client(), url, options=options)
    stream = conn.open_stream()
    await stream.send(b"ping")
    conn.close()
    await conn.wait_closed()
    hint = sctp_client.PEER_RTTS.lookup("127.0.0.1", asyncio.get_running_loop().time())
    assert hint is not None and 0 < hint[0] < 0.2
    conn = await connect(tb.Client(), url, options=options)
    t1 = conn._live_transport().assoc._handshake.t1_rto  # type: ignore[attr-defined]
    assert t1 < 0.2  # the INIT was timed by the hint, not RTO.Initial (1 s)
    conn.close()
    await conn.wait_closed()


# -- our Adaptation Layer Indication, and peers that reject parameters they do not know ---------------------------


def _has_indication(params: list[object]) -> bool:
    return any(isinstance(p, AdaptationLayerIndicationParam) and p.code == ext.MUX_ADAPTATION for p in params)


def test_the_init_ack_carries_our_indication_only_to_a_peer_that_sent_one() -> None:
    """pion before 1.8.13 rejects an INIT-ACK with a parameter it does not know (RFC 9260 §3.2.1 says skip it)."""
    server = Endpoint(CFG, local_port=5000, rng=random.Random(1))
    for offered, expect in (([], False), ([AdaptationLayerIndicationParam(ext.MUX_ADAPTATION)], True)):
        init = InitChunk(0x77, 65536, 4, 4, 1, list(offered))
        server.receive_datagram(serialize_packet(6000, 5000, 0, [init]), A, 1000.0)
        ((data, _addr),) = server.datagrams_to_send(1000.0)
        ack = parse_packet(data).chunks[0]
        assert isinstance(ack, InitAckChunk) and _has_indication(ack.params) == expect


def test_after_two_unanswered_inits_the_rest_go_without_our_indication() -> None:
    net = Network(1, delay=0.01)
    unanswered: list[Sent] = []

    def drop_two(s: Sent) -> bool | None:
        if len(unanswered) < 2 and InitChunk in _kinds(s):
            unanswered.append(s)
            return False
        return None

    net.intercept = drop_two  # type: ignore[assignment]
    na, nb = net.add(A, CFG), net.add(B, CFG)
    ca = na.connect(nb)
    assert net.run_until(lambda: na.up(ca) and bool(nb.new_associations), 30)
    inits = [c for s in net.sent_by(A) for c in s.chunks() if isinstance(c, InitChunk)]
    assert [_has_indication(c.params) for c in inits] == [True, True, False]
    # the association works, as between a mux and a non-mux peer
    assert not ca.features & ext.MUX and not nb.new_associations[-1].features & ext.MUX


def test_two_mux_peers_know_each_other_when_the_first_init_is_answered() -> None:
    net = Network(1, delay=0.01)
    na, nb = net.add(A, CFG), net.add(B, CFG)
    ca = na.connect(nb)
    assert net.run_until(lambda: na.up(ca) and bool(nb.new_associations), 30)
    assert ca.features & ext.MUX and nb.new_associations[-1].features & ext.MUX
