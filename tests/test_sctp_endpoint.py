"""SCTP endpoint (sans-IO): the stateless handshake, admission, cookies, INIT collision, restart, verification tags,
out-of-the-blue packets (RFC 9260 §5, §8.4, §8.5) and hostile or malformed input. All in memory, simulated time."""

from __future__ import annotations

import random
import struct
from typing import Any

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mux.sctp import events as ev
from mux.sctp.association import ESTABLISHED, Association, SctpError
from mux.sctp.chunks import (
    AbortChunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    InitAckChunk,
    InitChunk,
    SackChunk,
    ShutdownAckChunk,
    ShutdownChunk,
    ShutdownCompleteChunk,
    UnknownChunk,
)
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import Endpoint
from mux.sctp.packet import parse_packet, serialize_packet
from mux.sctp.params import (
    STALE_COOKIE,
    USER_INITIATED_ABORT,
    CookiePreservativeParam,
    StateCookieParam,
    UnknownParam,
    UnrecognizedParam,
    stale_cookie_cause,
)
from tests.sctp_link import (
    Network,
    Node,
    RawPeer,
    Sent,
    Verdict,
    chunks_of,
    cookie_of,
    drain,
    handshake,
    init_ack_for,
    raw_connect,
)

A = ("10.0.0.1", 40001)
B = ("10.0.0.2", 40002)
NOW = 1000.0
hyp = settings(derandomize=True, deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


def pair(
    seed: int = 1,
    client: SctpConfig | None = None,
    server: SctpConfig | None = None,
    path: dict[str, float] | None = None,
) -> tuple[Network, Node, Node]:
    net = Network(seed, **(path or {}))
    return net, net.add(A, client), net.add(B, server)


def server_endpoint(config: SctpConfig | None = None) -> Endpoint:
    return Endpoint(config or SctpConfig(), local_port=5000, secret=b"s" * 32, rng=random.Random(7))


# -- handshake ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "c_os,c_mis,s_os,s_mis",
    [
        (10, 5, 7, 20),  # the server's OS limits what reaches the client, the client's MIS the server
        (30, 40, 25, 12),  # the server's MIS limits the client, the server's OS limits the server
    ],
)
def test_handshake_negotiates_stream_counts_and_windows(c_os: int, c_mis: int, s_os: int, s_mis: int) -> None:
    client_cfg = SctpConfig(num_ostreams=c_os, max_instreams=c_mis, recbuf=300_000)
    server_cfg = SctpConfig(num_ostreams=s_os, max_instreams=s_mis, recbuf=500_000)
    net, a, b = pair(client=client_cfg, server=server_cfg)
    ca, sa = handshake(net, a, b)
    # each side sends on min(own OS, peer MIS) and receives on min(own MIS, peer OS)
    c_out, s_out = min(c_os, s_mis), min(s_os, c_mis)
    assert a.of(ca, ev.AssociationUp) == [ev.AssociationUp(c_out, s_out, 500_000)]
    assert b.of(sa, ev.AssociationUp) == [ev.AssociationUp(s_out, c_out, 300_000)]
    assert (ca.status()["outstrms"], ca.status()["instrms"]) == (c_out, s_out)
    assert (sa.status()["outstrms"], sa.status()["instrms"]) == (s_out, c_out)
    assert ca.state == sa.state == ESTABLISHED
    assert ca.local_vtag == sa.peer_vtag and sa.local_vtag == ca.peer_vtag
    assert ca.local_vtag != 0 and sa.local_vtag != 0
    with pytest.raises(SctpError):
        sa.send(s_out, b"x")
    with pytest.raises(SctpError):
        ca.send(c_out, b"x")
    sa.send(s_out - 1, b"last stream", ppid=9)
    ca.send(c_out - 1, b"client last stream", ppid=10)
    assert net.run_until(lambda: bool(a.of(ca, ev.DataReceived)) and bool(b.of(sa, ev.DataReceived)), 5)
    assert a.of(ca, ev.DataReceived) == [ev.DataReceived(s_out - 1, b"last stream", 9, False)]
    assert b.of(sa, ev.DataReceived) == [ev.DataReceived(c_out - 1, b"client last stream", 10, False)]


def test_server_keeps_no_state_before_cookie_echo() -> None:
    server = server_endpoint()
    acks = []
    for i in range(2000):
        init = InitChunk(0x1000 + i, 65536, 8, 8, i, [])
        server.receive_datagram(serialize_packet(6000 + i, 5000, 0, [init]), ("10.1.0.1", 9000 + i), NOW)
        assert list(server.associations) == []
        acks.extend(server.datagrams_to_send(NOW))
    assert len(acks) == 2000
    assert list(server.associations) == [] and server.next_event() is None
    # every answer is an INIT-ACK carrying the client's tag and a cookie; one of them completes the handshake
    data, addr = acks[1234]
    pkt = parse_packet(data)
    (ack,) = pkt.chunks
    assert isinstance(ack, InitAckChunk) and pkt.vtag == 0x1000 + 1234 and addr == ("10.1.0.1", 9000 + 1234)
    cookie = next(p.cookie for p in ack.params if isinstance(p, StateCookieParam))
    echo = serialize_packet(6000 + 1234, 5000, ack.initiate_tag, [CookieEchoChunk(cookie)])
    assoc = server.receive_datagram(echo, addr, NOW + 0.1)
    assert assoc is not None and list(server.associations) == [assoc]
    new = server.next_event()
    assert isinstance(new, ev.NewAssociation) and new.association is assoc
    assert assoc.peer_vtag == 0x1000 + 1234 and assoc.local_vtag == ack.initiate_tag
    assert server.stats["accepted"] == 1


def test_stateless_replies_are_bounded_when_nobody_drains_them() -> None:
    server = server_endpoint()
    for i in range(5000):
        init = InitChunk(0x1000 + i, 65536, 8, 8, i, [])
        server.receive_datagram(serialize_packet(6000, 5000, 0, [init]), ("10.1.0.1", 9000 + i), NOW)
    assert 0 < len(server.datagrams_to_send(NOW)) <= 1024
    assert list(server.associations) == []


def test_admit_false_answers_abort_and_keeps_nothing() -> None:
    calls: list[tuple[str, int]] = []

    def admit(addr: tuple[str, int]) -> bool:
        calls.append(addr)
        return False

    net = Network(3)
    a = net.add(A)
    b = net.add(B, admit=admit)
    ca = a.connect(b)
    assert net.run_until(lambda: a.closed(ca), 10)
    aborted = a.of(ca, ev.AssociationAborted)
    assert len(aborted) == 1 and isinstance(a.events[ca][-1], ev.AssociationClosed)
    assert not a.of(ca, ev.AssociationUp)
    assert calls == [A]
    assert list(b.endpoint.associations) == [] and b.new_associations == []
    assert b.endpoint.stats["refused"] == 1
    aborts = [c for s in net.sent_by(B, A) for c in s.chunks() if isinstance(c, AbortChunk)]
    assert len(aborts) == 1


def test_admit_none_drops_cookie_echo_silently_and_the_retry_gets_in() -> None:
    verdicts = [None, True]
    net = Network(4)
    a = net.add(A)
    b = net.add(B, admit=lambda addr: verdicts.pop(0))
    ca = a.connect(b)
    assert net.run_until(lambda: a.up(ca), 10)
    assert b.endpoint.stats["busy"] == 1 and b.endpoint.stats["accepted"] == 1
    echoes = [s for s in net.sent_by(A, B) if isinstance(s.chunks()[0], CookieEchoChunk)]
    assert len(echoes) == 2  # the first was dropped, T1-init sent it again
    assert len(list(b.endpoint.associations)) == 1


def test_init_with_unrecognized_parameters_is_reported_in_init_ack() -> None:
    server = server_endpoint()
    report_skip = UnknownParam(0xC123, b"abcd")  # 11: skip and report
    skip_silently = UnknownParam(0x8123, b"efgh")  # 10: skip
    init = InitChunk(77, 65536, 4, 4, 1, [report_skip, skip_silently])
    server.receive_datagram(serialize_packet(6000, 5000, 0, [init]), A, NOW)
    ((data, _addr),) = server.datagrams_to_send(NOW)
    (ack,) = parse_packet(data).chunks
    assert isinstance(ack, InitAckChunk)
    reported = [p.param for p in ack.params if isinstance(p, UnrecognizedParam)]
    assert reported == [report_skip.serialize()]
    assert any(isinstance(p, StateCookieParam) for p in ack.params)


@pytest.mark.parametrize(
    "chunks,vtag",
    [
        ([InitChunk(0, 65536, 4, 4, 1, [])], 0),  # zero initiate tag
        ([InitChunk(5, 65536, 0, 4, 1, [])], 0),  # zero outbound streams
        ([InitChunk(5, 65536, 4, 0, 1, [])], 0),  # zero inbound streams
        ([InitChunk(5, 65536, 4, 4, 1, [])], 99),  # INIT must carry tag 0 (§8.5.1 A)
        ([InitChunk(5, 65536, 4, 4, 1, []), HeartbeatChunk(b"x")], 0),  # INIT must travel alone
    ],
)
def test_invalid_init_is_discarded_without_state(chunks: list[Any], vtag: int) -> None:
    server = server_endpoint()
    server.receive_datagram(serialize_packet(6000, 5000, vtag, chunks), A, NOW)
    assert server.datagrams_to_send(NOW) == []
    assert server.stats["bad_init"] == 1 and list(server.associations) == []


# -- cookies -----------------------------------------------------------------------------------------------------


def test_stale_cookie_is_answered_with_its_staleness() -> None:
    server = server_endpoint(SctpConfig(cookie_life=2000))
    ack = init_ack_for(server, A, NOW)
    echo = serialize_packet(6000, 5000, ack.initiate_tag, [CookieEchoChunk(cookie_of(ack))])
    late = NOW + 2.0 + 1.5
    assert server.receive_datagram(echo, A, late) is None
    ((data, addr),) = server.datagrams_to_send(late)
    pkt = parse_packet(data)
    (err,) = pkt.chunks
    assert isinstance(err, ErrorChunk) and addr == A and pkt.vtag == 0x55
    (cause,) = err.causes
    assert cause.code == STALE_COOKIE
    staleness_us = struct.unpack("!I", cause.info)[0]
    assert abs(staleness_us - 1_500_000) <= 1000
    assert server.stats["stale_cookie"] == 1 and list(server.associations) == []
    # the same cookie in time is good: staleness is the only thing wrong with it
    assert server.receive_datagram(echo, A, NOW + 1.9) is not None


def test_stale_cookie_recovers_with_cookie_preservative() -> None:
    """A long one-way delay makes the first cookie stale; the retried INIT asks for more lifetime (§5.2.6)."""
    net = Network(5, delay=0.2)
    a = net.add(A)
    b = net.add(B, SctpConfig(cookie_life=300))
    ca = a.connect(b)
    assert net.run_until(lambda: a.up(ca), 20)
    assert b.endpoint.stats["stale_cookie"] == 1
    inits = [c for s in net.sent_by(A, B) for c in s.chunks() if isinstance(c, InitChunk)]
    assert len(inits) == 2
    assert not any(isinstance(p, CookiePreservativeParam) for p in inits[0].params)
    (pres,) = [p for p in inits[1].params if isinstance(p, CookiePreservativeParam)]
    assert pres.increment_ms >= 100  # the cookie was 100 ms stale
    assert not a.of(ca, ev.AssociationAborted)
    assert len(list(b.endpoint.associations)) == 1


def test_stale_cookie_error_gives_up_after_max_attempts() -> None:
    """A peer whose every cookie goes stale: the client retries INIT, but only max_attempts times (§5.2.6)."""
    net = Network(6, delay=0.2)
    a = net.add(A, SctpConfig(max_attempts=3, rto_initial=20_000, max_init_timeo=60_000))
    b = net.add(B, SctpConfig(cookie_life=300))
    holds = [0.5 * 4**n for n in range(8)]

    def hold_cookie_echo(s: Sent) -> Verdict:
        # each COOKIE-ECHO is held longer than the preservative can make up for, yet less than T1
        if s.src == A and isinstance(s.chunks()[0], CookieEchoChunk):
            return [min(holds.pop(0), 15.0)]
        return None

    net.intercept = hold_cookie_echo
    ca = a.connect(b)
    assert net.run_until(lambda: a.closed(ca), 300), f"stale cookies retried {b.endpoint.stats['stale_cookie']} times"
    (aborted,) = a.of(ca, ev.AssociationAborted)
    assert "stale" in aborted.reason
    assert not a.of(ca, ev.AssociationUp)
    assert list(b.endpoint.associations) == []
    assert b.endpoint.stats["stale_cookie"] == 3
    inits = [c for s in net.sent_by(A, B) for c in s.chunks() if isinstance(c, InitChunk)]
    assert len(inits) == 3


@pytest.mark.parametrize("where", [0, 9, 20, 40, -1])
def test_tampered_cookie_is_dropped_silently(where: int) -> None:
    server = server_endpoint()
    ack = init_ack_for(server, A, NOW)
    cookie = bytearray(cookie_of(ack))
    cookie[where] ^= 0x40
    echo = serialize_packet(6000, 5000, ack.initiate_tag, [CookieEchoChunk(bytes(cookie))])
    assert server.receive_datagram(echo, A, NOW) is None
    assert server.datagrams_to_send(NOW) == []
    assert server.stats["bad_cookie"] == 1 and list(server.associations) == []
    assert server.next_event() is None


def test_cookie_is_bound_to_the_peer_address_and_ports() -> None:
    server = server_endpoint()
    ack = init_ack_for(server, A, NOW)
    cookie = cookie_of(ack)
    other_host = serialize_packet(6000, 5000, ack.initiate_tag, [CookieEchoChunk(cookie)])
    assert server.receive_datagram(other_host, ("10.9.9.9", A[1]), NOW) is None
    other_port = serialize_packet(6001, 5000, ack.initiate_tag, [CookieEchoChunk(cookie)])
    assert server.receive_datagram(other_port, A, NOW) is None
    wrong_tag = serialize_packet(6000, 5000, ack.initiate_tag ^ 1, [CookieEchoChunk(cookie)])
    assert server.receive_datagram(wrong_tag, A, NOW) is None
    assert list(server.associations) == [] and server.datagrams_to_send(NOW) == []
    good = serialize_packet(6000, 5000, ack.initiate_tag, [CookieEchoChunk(cookie)])
    assert server.receive_datagram(good, A, NOW) is not None


def test_duplicate_cookie_echo_gets_cookie_ack_and_no_second_association() -> None:
    server = server_endpoint()
    ack = init_ack_for(server, A, NOW)
    echo = serialize_packet(6000, 5000, ack.initiate_tag, [CookieEchoChunk(cookie_of(ack))])
    first = server.receive_datagram(echo, A, NOW)
    assert first is not None
    assert any(isinstance(c, CookieAckChunk) for c in chunks_of(first.datagrams_to_send(NOW)))
    again = server.receive_datagram(echo, A, NOW + 0.5)  # our COOKIE-ACK was lost (§5.2.4 D)
    assert again is first and list(server.associations) == [first]
    assert any(isinstance(c, CookieAckChunk) for c in chunks_of(first.datagrams_to_send(NOW + 0.5)))
    assert [type(e) for e in drain(first)] == [ev.AssociationUp]


# -- collision and restart -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0.0, 0.004, 0.012, 0.025])
@pytest.mark.parametrize("seed", [1, 2])
def test_init_collision_ends_with_one_association_per_side(offset: float, seed: int) -> None:
    net = Network(seed, delay=0.01, reorder=0.3, reorder_delay=0.01)
    a = net.add(A)
    b = net.add(B)
    ca = a.connect(b)
    holder: list[Association] = []

    net.at(net.now + offset, lambda: holder.append(b.connect(a)))

    assert net.run_until(
        lambda: (
            bool(holder)
            and all(len(list(n.endpoint.associations)) == 1 for n in (a, b))
            and all(x.state == ESTABLISHED for n in (a, b) for x in n.endpoint.associations)
        ),
        20,
    )
    net.run_for(5)  # let every late retransmission land
    (xa,) = a.endpoint.associations
    (xb,) = b.endpoint.associations
    assert xa is ca
    assert xa.state == xb.state == ESTABLISHED
    assert xa.local_vtag == xb.peer_vtag and xb.local_vtag == xa.peer_vtag
    for node, x in ((a, xa), (b, xb)):
        assert len(node.of(x, ev.AssociationUp)) == 1
        assert not node.of(x, ev.AssociationAborted)
    xa.send(0, b"from a")
    xb.send(1, b"from b")
    assert net.run_until(lambda: bool(a.of(xa, ev.DataReceived)) and bool(b.of(xb, ev.DataReceived)), 5)
    assert a.of(xa, ev.DataReceived)[0].data == b"from b"
    assert b.of(xb, ev.DataReceived)[0].data == b"from a"


def test_restart_keeps_the_server_association_and_data_flows() -> None:
    net, a, b = pair(8)
    ca, sa = handshake(net, a, b)
    ca.send(0, b"before reboot")
    assert net.run_until(lambda: bool(b.of(sa, ev.DataReceived)), 5)
    # the client host reboots: a fresh endpoint with new tags at the same address and port
    a2 = net.add(A, rng_seed=99)
    ca2 = a2.connect(b)
    assert net.run_until(lambda: a2.up(ca2) and bool(b.of(sa, ev.AssociationRestarted)), 10)
    assert list(b.endpoint.associations) == [sa]
    assert b.endpoint.stats["restarts"] == 1
    (restarted,) = b.of(sa, ev.AssociationRestarted)
    assert (restarted.outbound_streams, restarted.inbound_streams) == (16, 16)
    assert sa.peer_vtag == ca2.local_vtag and ca2.peer_vtag == sa.local_vtag
    assert sa.local_vtag != ca.peer_vtag  # new tags after a restart
    assert not b.of(sa, ev.AssociationClosed)
    ca2.send(3, b"after reboot", ppid=3)
    sa.send(2, b"welcome back", ppid=4)
    assert net.run_until(lambda: len(b.of(sa, ev.DataReceived)) == 2 and bool(a2.of(ca2, ev.DataReceived)), 5)
    assert b.of(sa, ev.DataReceived)[1] == ev.DataReceived(3, b"after reboot", 3, False)
    assert a2.of(ca2, ev.DataReceived) == [ev.DataReceived(2, b"welcome back", 4, False)]


def test_restart_while_the_server_still_sends_to_the_old_peer() -> None:
    net, a, b = pair(20, path={"loss": 0.02})
    _ca, sa = handshake(net, a, b)
    for i in range(50):
        sa.send(i % 4, bytes([i]) * 2000)  # queued and in flight towards the client that is about to vanish
    net.run_for(0.015)
    a2 = net.add(A, rng_seed=1234)
    ca2 = a2.connect(b)
    assert net.run_until(lambda: a2.up(ca2) and bool(b.of(sa, ev.AssociationRestarted)), 20)
    assert sa.buffered_amount() == 0  # what was meant for the old peer is gone
    for i in range(5):
        sa.send(0, b"fresh %d" % i)
        ca2.send(1, b"hello %d" % i)
    assert net.run_until(lambda: len(a2.of(ca2, ev.DataReceived)) == 5 and len(b.of(sa, ev.DataReceived)) == 5, 20)
    assert [e.data for e in a2.of(ca2, ev.DataReceived)] == [b"fresh %d" % i for i in range(5)]
    assert [e.data for e in b.of(sa, ev.DataReceived)] == [b"hello %d" % i for i in range(5)]
    assert not b.of(sa, ev.AssociationAborted) and not a2.of(ca2, ev.AssociationAborted)


def held_pair(seed: int) -> tuple[Network, Node, Node, Association, Association]:
    """A client connecting to a server that holds new associations for the application's word."""
    net = Network(seed)
    a = net.add(A)
    b = net.add(B, hold=True)
    ca = a.connect(b)
    assert net.run_until(lambda: bool(b.new_associations), 5)
    (sa,) = b.new_associations
    return net, a, b, ca, sa


def test_held_association_answers_only_when_released() -> None:
    net, a, b, ca, sa = held_pair(21)
    assert sa.on_hold
    net.run_for(0.5)
    assert not a.up(ca) and b.events[sa] == []  # no COOKIE-ACK, no events while held
    sa.proceed(net.now)
    assert net.run_until(lambda: a.up(ca) and b.up(sa), 5)
    assert len(list(b.endpoint.associations)) == 1 and b.endpoint.stats["accepted"] == 1


def test_held_association_refused_by_the_application() -> None:
    net, a, b, ca, sa = held_pair(22)
    sa.abort("pool full")
    assert net.run_until(lambda: a.closed(ca) and b.closed(sa), 5)
    assert b.events[sa] == [ev.AssociationClosed()]  # nothing was ever delivered
    (aborted,) = a.of(ca, ev.AssociationAborted)
    assert aborted.causes[0].info == b"pool full"
    assert not a.up(ca)


def test_reconnect_right_after_a_lost_shutdown_complete() -> None:
    net, a, b = pair(23)
    ca, sa = handshake(net, a, b)
    lost: list[Sent] = []

    def lose_shutdown_complete(s: Sent) -> Verdict:
        if not lost and s.src == A and isinstance(s.chunks()[0], ShutdownCompleteChunk):
            lost.append(s)
            return False
        return None

    net.intercept = lose_shutdown_complete
    ca.shutdown(net.now)
    assert net.run_until(lambda: a.closed(ca), 5)
    assert lost and sa.state != ESTABLISHED  # the server waits in SHUTDOWN-ACK-SENT
    ca2 = a.connect(b)  # same endpoint, same ports, at once
    assert net.run_until(lambda: a.up(ca2) or a.closed(ca2), 30)
    assert a.up(ca2)
    assert b.closed(sa) and not b.of(sa, ev.AssociationAborted)


# -- verification tags and out-of-the-blue packets ----------------------------------------------------------------


def established_raw() -> tuple[Endpoint, Association, RawPeer]:
    server = server_endpoint()
    assoc, peer, _ = raw_connect(server, A, NOW)
    drain(assoc)
    return server, assoc, peer


def test_wrong_vtag_is_dropped_and_counted() -> None:
    server, assoc, peer = established_raw()
    chunk = peer.data(b"sneaky")
    server.receive_datagram(peer.packet(chunk, vtag=peer.peer_tag ^ 0xFFFF), A, NOW + 0.1)
    assert assoc.stats["bad_vtag"] == 1
    assert drain(assoc) == []
    assert assoc.datagrams_to_send(NOW + 0.1) == []  # not even a SACK
    chunk.data = b"hello"
    server.receive_datagram(peer.packet(chunk), A, NOW + 0.2)
    assert drain(assoc) == [ev.DataReceived(0, b"hello", 0, False)]


@pytest.mark.parametrize(
    "t_bit,tag,accepted",
    [
        (False, "ours", True),  # our own tag, no T bit: the normal case
        (True, "peer", True),  # T bit: the tag is the peer's own, reflected (§8.5.1 B)
        (True, "ours", False),  # T bit but our tag: not a reflected tag
        (False, "peer", False),  # the peer's tag without the T bit
        (True, "other", False),  # T bit with somebody else's tag
        (False, "other", False),
    ],
)
def test_abort_verification_tag_rules(t_bit: bool, tag: str, accepted: bool) -> None:
    server, assoc, peer = established_raw()
    vtag = {"peer": peer.tag, "ours": peer.peer_tag, "other": 0x7777_7777}[tag]
    server.receive_datagram(peer.packet(AbortChunk([], t_bit=t_bit), vtag=vtag), A, NOW + 0.1)
    evs = drain(assoc)
    if accepted:
        assert [type(e) for e in evs] == [ev.AssociationAborted, ev.AssociationClosed]
    else:
        assert evs == [] and assoc.state == ESTABLISHED
        assert assoc.stats["bad_vtag"] == 1


def _ootb(chunks: list[Any], vtag: int = 0xDEADBEEF) -> tuple[Endpoint, list[tuple[bytes, Any]]]:
    server = server_endpoint()
    server.receive_datagram(serialize_packet(6000, 5000, vtag, chunks), A, NOW)
    return server, server.datagrams_to_send(NOW)


@pytest.mark.parametrize(
    "chunks",
    [
        [AbortChunk([])],
        [ShutdownCompleteChunk()],
        [CookieAckChunk()],
        [ErrorChunk([stale_cookie_cause(5)])],
        [DataChunk(1, 0, 0, 0, b"x"), AbortChunk([])],  # an ABORT anywhere in the packet silences it
    ],
)
def test_ootb_packets_that_must_not_be_answered(chunks: list[object]) -> None:
    server, out = _ootb(chunks)
    assert out == []
    assert server.stats["ootb"] == 1 and list(server.associations) == []


def test_ootb_shutdown_ack_gets_shutdown_complete_with_t_bit() -> None:
    _server, out = _ootb([ShutdownAckChunk()], vtag=0x0BADF00D)
    ((data, addr),) = out
    pkt = parse_packet(data)
    assert addr == A and pkt.vtag == 0x0BADF00D and (pkt.src_port, pkt.dst_port) == (5000, 6000)
    assert pkt.chunks == [ShutdownCompleteChunk(t_bit=True)]


@pytest.mark.parametrize(
    "chunks",
    [[DataChunk(1, 0, 0, 0, b"x")], [SackChunk(1, 1000, [], [])], [HeartbeatChunk(b"hb")], [ShutdownChunk(5)]],
)
def test_other_ootb_packets_get_abort_with_t_bit(chunks: list[object]) -> None:
    server, out = _ootb(chunks, vtag=0x0BADF00D)
    ((data, addr),) = out
    pkt = parse_packet(data)
    assert addr == A and pkt.vtag == 0x0BADF00D
    assert len(pkt.chunks) == 1 and isinstance(pkt.chunks[0], AbortChunk) and pkt.chunks[0].t_bit
    assert server.stats["ootb"] == 1


def test_packet_for_another_port_is_not_answered() -> None:
    server = server_endpoint()
    server.receive_datagram(serialize_packet(6000, 5001, 7, [DataChunk(1, 0, 0, 0, b"x")]), A, NOW)
    assert server.datagrams_to_send(NOW) == [] and server.stats["wrong_port"] == 1


def test_closed_association_turns_into_ootb_handling() -> None:
    net, a, b = pair(9)
    ca, sa = handshake(net, a, b)
    ca.abort("gone")
    assert net.run_until(lambda: b.closed(sa), 5)
    # a stale DATA for the dead association now gets an ABORT with the T bit
    stale = serialize_packet(5000, 5000, sa.local_vtag, [DataChunk(1, 0, 0, 0, b"late")])
    b.endpoint.receive_datagram(stale, A, net.now)
    ((data, _addr),) = b.endpoint.datagrams_to_send(net.now)
    (abort,) = parse_packet(data).chunks
    assert isinstance(abort, AbortChunk) and abort.t_bit


# -- abort reasons reach the peer ---------------------------------------------------------------------------------


def test_user_abort_cause_reaches_the_peer() -> None:
    net, a, b = pair(10)
    ca, sa = handshake(net, a, b)
    sa.abort("maintenance")
    assert net.run_until(lambda: a.closed(ca), 5)
    (aborted,) = a.of(ca, ev.AssociationAborted)
    assert [c.code for c in aborted.causes] == [USER_INITIATED_ABORT]
    assert aborted.causes[0].info == b"maintenance" and "maintenance" in aborted.reason


# -- malformed input ----------------------------------------------------------------------------------------------


@hyp
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_and_are_counted(data: bytes) -> None:
    server = server_endpoint()
    assert server.receive_datagram(data, A, NOW) is None
    assert server.stats["rx"] == 1
    assert server.stats["bad_crc"] + server.stats["malformed"] == 1
    assert list(server.associations) == []


def _with_crc(body: bytes) -> bytes:
    """``body`` as an SCTP packet with a correct checksum, so parsing reaches the chunks."""
    raw = bytearray(body)
    raw[8:12] = b"\0\0\0\0"
    raw[8:12] = struct.pack("<I", crc32c.crc32c(bytes(raw)))
    return bytes(raw)


@hyp
@given(st.binary(min_size=12, max_size=400), st.integers(0, 0xFFFFFFFF))
def test_random_packets_with_valid_crc_never_raise(body: bytes, vtag: int) -> None:
    server = server_endpoint()
    assoc, peer, _ = raw_connect(server, A, NOW)
    drain(assoc)
    header = struct.pack("!HHII", peer.port, 5000, vtag if vtag & 1 else peer.peer_tag, 0)
    before = dict(server.stats)
    server.receive_datagram(_with_crc(header + body[12:]), A, NOW + 0.01)
    assert server.stats["rx"] == before["rx"] + 1
    # whatever happened, the pump entry points keep working
    assoc.datagrams_to_send(NOW + 0.02)
    t = assoc.get_timer()
    if t is not None:
        assoc.handle_timer(t)
        assoc.datagrams_to_send(t)
    drain(assoc)


@hyp
@given(
    st.lists(
        st.one_of(
            st.builds(
                DataChunk,
                # TSNs within 16 bits of the peer's (its first is 1000) or far behind: a TSN more than
                # 65535 ahead is test_data_far_beyond_the_window_is_dropped_not_reported
                st.one_of(st.integers(0, 60_000), st.integers(0xC000_0000, 0xFFFF_FFFF)),
                st.integers(0, 40),
                st.integers(0, 0xFFFF),
                st.integers(0, 5),
                st.binary(max_size=40),
                st.booleans(),
                st.booleans(),
                st.booleans(),
                st.booleans(),
            ),
            st.builds(
                SackChunk,
                st.integers(0, 0xFFFFFFFF),
                st.integers(0, 1 << 20),
                st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)), max_size=4),
                st.lists(st.integers(0, 0xFFFFFFFF), max_size=3),
            ),
            st.builds(ShutdownChunk, st.integers(0, 0xFFFFFFFF)),
            st.builds(HeartbeatAckChunk, st.binary(max_size=20)),
            st.builds(HeartbeatChunk, st.binary(max_size=20)),
            st.builds(ErrorChunk, st.just([stale_cookie_cause(3)])),
            st.builds(UnknownChunk, st.integers(15, 127), st.integers(0, 255), st.binary(max_size=12)),
            st.just(ShutdownAckChunk()),
            st.just(CookieAckChunk()),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_hostile_chunk_sequences_on_a_live_association_never_raise(chunks: list[Any]) -> None:
    server = server_endpoint()
    assoc, peer, _ = raw_connect(server, A, NOW)
    assoc.send(0, b"q" * 3000)
    assoc.datagrams_to_send(NOW)
    server.receive_datagram(peer.packet(*chunks), A, NOW + 0.01)
    now = NOW + 0.01
    for _ in range(5):
        for data, _addr in assoc.datagrams_to_send(now):
            parse_packet(data)  # whatever we emit is well formed
        t = assoc.get_timer()
        if t is None:
            break
        now = max(now, t)
        assoc.handle_timer(now)
    drain(assoc)


def test_truncated_packets_never_raise_and_are_counted() -> None:
    server = server_endpoint()
    init = serialize_packet(6000, 5000, 0, [InitChunk(5, 65536, 4, 4, 1, [UnknownParam(0x8001, b"z" * 9)])])
    n = 0
    for cut in range(len(init)):
        for data in (init[:cut], _with_crc(init[:cut]) if cut >= 12 else init[:cut]):
            assert server.receive_datagram(data, A, NOW) is None
            n += 1
    assert server.stats["rx"] == n
    assert server.stats["bad_crc"] + server.stats["malformed"] == n
    assert server.datagrams_to_send(NOW) == [] and list(server.associations) == []
