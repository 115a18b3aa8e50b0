"""Multi-homing in memory (RFC 9260 §6.4, §8.2, §8.3): two hosts with two links, one cut during a transfer.

Each host has an address on 10.1.0.0/24 and one on 10.2.0.0/24 and lists both in its INIT / INIT-ACK; the simulated
network routes by /24, as two interfaces would. Cutting link 1 drops everything between the two 10.1 addresses.
"""

from __future__ import annotations

from typing import Any

import pytest

from mux.sctp import events as ev
from mux.sctp.chunks import DataChunk, IDataChunk
from mux.sctp.config import SctpConfig
from mux.sctp.cookie import Cookie, decode, encode
from mux.sctp.paths import ACTIVE, INACTIVE, acceptable
from tests.sctp_link import Network, Node, handshake

C1, C2 = ("10.1.0.1", 9899), ("10.2.0.1", 9899)
S1, S2 = ("10.1.0.2", 9899), ("10.2.0.2", 9899)
RTO_MAX = 0.4
PATHMAXRXT = 2


def _config(*local: str, **extra: Any) -> SctpConfig:
    return SctpConfig(
        local_addresses=local,
        pathmaxrxt=PATHMAXRXT,
        rto_initial=300,
        rto_min=100,
        rto_max=int(RTO_MAX * 1000),
        hbinterval=500,
        **extra,
    )


def _hosts(seed: int = 1, **extra: Any) -> tuple[Network, Node, Node]:
    net = Network(seed, delay=0.005)
    client = net.add(C1, _config(C1[0], C2[0], **extra))
    net.alias(client, C2)
    server = net.add(S1, _config(S1[0], S2[0]))
    net.alias(server, S2)
    return net, client, server


def _cut(net: Network, a: tuple[str, int], b: tuple[str, int], loss: float = 1.0) -> None:
    net.path(a, b).loss = loss
    net.path(b, a).loss = loss


def test_both_sides_learn_and_confirm_each_others_addresses() -> None:
    net, client, server = _hosts()
    ca, sa = handshake(net, client, server)
    net.run_for(0.2)
    for assoc, mine, other in ((ca, S1, S2), (sa, C1, C2)):
        paths = assoc.status()["paths"]
        assert [p["address"] for p in paths] == [mine, other]
        assert [p["state"] for p in paths] == [ACTIVE, ACTIVE]  # the second confirmed by its HEARTBEAT-ACK
        assert paths[0]["primary"] and not paths[1]["primary"]
        assert paths[1]["srtt_ms"] is not None and paths[1]["srtt_ms"] >= 10  # measured on that path
    added = [e for e in client.of(ca, ev.PathChanged)]
    assert [(e.address, e.state) for e in added] == [(S2, "added"), (S2, "confirmed")]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_path_cut_mid_transfer_fails_over_loses_nothing_and_comes_back(seed: int) -> None:
    net, client, server = _hosts(seed)
    ca, sa = handshake(net, client, server)
    net.run_for(0.2)
    messages = [b"m%04d" % i + b"x" * 300 for i in range(400)]
    sent = 0

    def feed() -> None:  # one message every 5 ms
        nonlocal sent
        while sent < len(messages) and net.now >= start + sent * 0.005:
            ca.send(1, messages[sent], now=net.now)
            sent += 1

    start = net.now
    cut_at = start + 0.5
    net.at(cut_at, lambda: _cut(net, C1, S1))
    heal_at = start + 3.0
    net.at(heal_at, lambda: _cut(net, C1, S1, 0.0))

    def delivered() -> list[bytes]:
        return [e.data for e in server.of(sa, ev.DataReceived)]

    assert net.run_until(lambda: len(delivered()) == len(messages), 10, on_step=feed)
    assert delivered() == messages  # every message, once, in order
    # the client failed over to S2 within pathmaxrxt + 1 T3 expiries at most RTO.Max each (plus the RTT)
    changes = [(t, e) for t, a, e in client.log if a is ca and isinstance(e, ev.PrimaryChanged)]
    assert changes, "no failover"
    t_over, over = changes[0]
    assert over.address == S2 and over.previous == S1
    assert cut_at < t_over <= cut_at + (PATHMAXRXT + 1) * RTO_MAX + 0.1
    assert any(e.address == S1 and e.state == "unreachable" for e in client.of(ca, ev.PathChanged))
    # §6.4.1: before the failover, what each T3 marked was already retransmitted to the other address
    early = [x for x in net.sent_by(C2, S2) if cut_at < x.time < t_over]
    assert any(isinstance(c, (DataChunk, IDataChunk)) for x in early for c in x.chunks()), "no retransmission to S2"
    # and traffic returns to the preferred path once it answers a HEARTBEAT again
    net.run_for(2.0)
    back = [(t, e) for t, a, e in client.log if a is ca and isinstance(e, ev.PrimaryChanged) and e.address == S1]
    assert back and back[0][0] > heal_at
    assert any(e.address == S1 and e.state == "available" for e in client.of(ca, ev.PathChanged))
    assert ca.peer_addr == S1 and ca.status()["paths"][0]["state"] == ACTIVE
    assert not client.closed(ca) and not server.closed(sa)


def test_the_server_answers_on_the_path_the_data_came_by() -> None:
    """§6.4: a SACK goes back where its DATA came from, so a server whose primary path is cut still acknowledges
    the client that failed over (its own primary, the client's first address, is dead too)."""
    net, client, server = _hosts()
    ca, sa = handshake(net, client, server)
    net.run_for(0.2)
    _cut(net, C1, S1)
    ca.set_primary(S2, net.now)
    ca.send(1, b"after the cut", now=net.now)
    assert net.run_until(lambda: bool(server.of(sa, ev.DataReceived)), 1.0)
    assert net.run_until(lambda: len(ca._out) == 0, 0.2)  # acknowledged through S2 -> C2, well before any T3
    assert ca.stats["t3_expiries"] == 0


def test_primary_addr_chooses_the_path_and_unknown_addresses_are_refused() -> None:
    net, client, server = _hosts(primary_addr=S2[0])
    ca, _sa = handshake(net, client, server)
    net.run_for(0.2)
    assert ca.peer_addr == S2  # preferred once confirmed
    assert not ca.set_primary(("10.9.9.9", 9899), net.now)


def test_an_idle_association_fails_over_by_heartbeats() -> None:
    """No data flows: unanswered HEARTBEATs on the primary count as its errors."""
    net, client, server = _hosts()
    ca, _sa = handshake(net, client, server)
    net.run_for(0.2)
    _cut(net, C1, S1)
    assert net.run_until(lambda: ca.peer_addr == S2, 10)
    assert ca._paths.by_index[0].state == INACTIVE


def test_an_unconfirmed_address_gets_no_data_and_costs_bounded_probes() -> None:
    """A listed address that never answers stays unconfirmed: probed once per RTO (backing off), never used."""
    net, client, server = _hosts()
    _cut(net, C1, S2)
    _cut(net, C2, S2)
    ca, sa = handshake(net, client, server)
    for i in range(50):
        ca.send(1, b"d%d" % i, now=net.now)
    net.run_for(3.0)
    assert len(server.of(sa, ev.DataReceived)) == 50
    path = ca._paths.by_index[1]
    assert path.state == "unconfirmed" and ca.peer_addr == S1
    probes = [s for s in net.sent_by(C1, S2) + net.sent_by(C2, S2)]
    assert 3 <= len(probes) <= 8  # backed off towards RTO.Max, not one per timer tick


def test_listed_addresses_ride_in_the_cookie_under_its_mac() -> None:
    cookie = Cookie(1.0, 60000, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0, ("10.2.0.1", "fd00::1"))
    raw = encode(cookie, b"k" * 32, C1)
    assert decode(raw, b"k" * 32, C1) == cookie
    tampered = raw[:-40] + bytes([raw[-40] ^ 1]) + raw[-39:]
    assert decode(tampered, b"k" * 32, C1) is None


@pytest.mark.parametrize(
    ("host", "source", "ok"),
    [
        ("10.2.0.1", ("10.1.0.1", 1), True),
        ("127.0.0.1", ("10.1.0.1", 1), False),  # loopback only from loopback (§5.1.2)
        ("127.0.0.2", ("127.0.0.1", 1), True),
        ("0.0.0.0", ("10.1.0.1", 1), False),
        ("224.0.0.1", ("10.1.0.1", 1), False),
        ("fd00::1", ("10.1.0.1", 1), False),  # another family than the socket's
        ("not an address", ("10.1.0.1", 1), False),
    ],
)
def test_which_listed_addresses_are_taken(host: str, source: tuple[str, int], ok: bool) -> None:
    assert acceptable(host, source) is ok


def test_a_host_list_is_checked(tmp_path: Any) -> None:
    """One clear line per problem: an empty list, duplicates, too many."""
    from mux import config as cfg
    from mux import preflight

    for host, expected in (
        ("[]", "listeners[0].host"),
        ("[127.0.0.1, 127.0.0.1]", "distinct"),
        ("[127.0.0.1, " + "127.0.0.2, " * 8 + "127.0.0.3]", "at most 8"),
    ):
        conf = tmp_path / "multi.yaml"
        conf.write_text(f"behaviour: mux.behaviours.echo:Echo\nlisteners:\n  - transport: sctp\n    host: {host}\n")
        with pytest.raises(cfg.ConfigError) as err:
            preflight.load(conf)
        assert expected in str(err.value) and str(conf) in str(err.value), err.value
    conf.write_text(
        "behaviour: mux.behaviours.echo:Echo\n"
        "listeners:\n  - {transport: sctp, host: [127.0.0.1, 127.0.0.2], port: 0}\n"
    )
    preflight.load(conf)  # two loopback addresses, one UDP port each: fine


def test_an_init_ack_from_another_of_the_peers_addresses_is_taken() -> None:
    """usrsctp answers an INIT from whichever address it likes: the INIT-ACK carries our tag, so it is ours, and
    the addresses it lists become paths (before, it was out of the blue and drew an ABORT)."""
    from mux.sctp.chunks import InitAckChunk

    net, client, server = _hosts()
    redirected = []

    def from_s2(sent: Any) -> Any:
        if sent.src == S1 and any(isinstance(c, InitAckChunk) for c in sent.chunks()):
            redirected.append(sent)
            net.inject(S2, sent.dst, sent.data, delay=0.005)
            return False
        return None

    net.intercept = from_s2
    ca, _sa = handshake(net, client, server)
    assert redirected and ca.peer_addr == S1  # the INIT's destination stays the primary
    net.run_for(0.2)
    assert [p["state"] for p in ca.status()["paths"]] == [ACTIVE, ACTIVE]
