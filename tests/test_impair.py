"""The impairment model (simulated time, seeded) and the asyncio proxy (real UDP on 127.0.0.1).

Statistical bounds: a count of N Bernoulli(q) trials has sd sqrt(N q (1-q)); bounds are about 4.5 sd wide, so a
correct model fails them with odds below 1e-5 per check even if the seed changes, while a model off by a few
percent points fails them. The seed is fixed, so each run sees exactly the same draws.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import socket
import statistics
import struct
from collections.abc import Callable, Iterable

import pytest

from mux.impair import Impairment, ImpairModel, ImpairProxy, parse_address
from mux.impair import cli as impair_cli

SEED = 20240601
SEQ = struct.Struct(">I")


def packet(seq: int, size: int = 100) -> bytes:
    return SEQ.pack(seq) + bytes(size - SEQ.size)


def seq_of(data: bytes) -> int:
    return int(SEQ.unpack_from(data)[0])


def simulate(model: ImpairModel, arrivals: Iterable[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """Drive the model like an event loop would: release at each deadline, submit at each arrival."""
    out: list[tuple[float, bytes]] = []

    def release_until(until: float) -> None:
        while (deadline := model.next_deadline()) is not None and deadline <= until:
            out.extend((deadline, data) for data in model.due(deadline))

    for t, data in arrivals:
        release_until(t)
        model.submit(data, t)
    release_until(math.inf)
    return out


def spaced(count: int, gap: float, size: int = 100) -> list[tuple[float, bytes]]:
    return [(i * gap, packet(i, size)) for i in range(count)]


def binomial_bounds(n: int, q: float, sds: float = 4.5) -> tuple[float, float]:
    sd = math.sqrt(n * q * (1 - q))
    return n * q - sds * sd, n * q + sds * sd


# -- settings ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loss": 1.5},
        {"duplicate": -0.1},
        {"reorder": float("nan")},
        {"delay_ms": -1.0},
        {"jitter_dist": "pareto"},
        {"ge_good_to_bad": 0.1, "ge_bad_to_good": 0.0},
        {"queue_bytes": 0},
        {"mtu": 0},
        {"limit_packets": 0},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Impairment(**kwargs)  # type: ignore[arg-type]


# -- model ---------------------------------------------------------------------------------------------------------


def test_default_settings_pass_everything_at_once_in_order() -> None:
    model = ImpairModel(Impairment(), SEED)
    out = simulate(model, spaced(1000, 0.001))
    assert [seq_of(d) for _, d in out] == list(range(1000))
    assert all(t == pytest.approx(seq_of(d) * 0.001) for t, d in out)
    assert model.stats.delivered == model.stats.received == 1000
    assert model.next_deadline() is None


def test_random_loss_rate_is_binomial() -> None:
    n, q = 20_000, 0.10
    model = ImpairModel(Impairment(loss=q), SEED)
    out = simulate(model, spaced(n, 0.001))
    low, high = binomial_bounds(n, q)
    assert low < model.stats.dropped_loss < high
    assert len(out) == model.stats.delivered == n - model.stats.dropped_loss
    assert [seq_of(d) for _, d in out] == sorted(seq_of(d) for _, d in out)


def test_duplication_rate_and_copies_follow_their_original() -> None:
    n, q = 20_000, 0.05
    model = ImpairModel(Impairment(duplicate=q), SEED)
    out = [d for _, d in simulate(model, spaced(n, 0.001))]
    low, high = binomial_bounds(n, q)
    assert low < model.stats.duplicated < high
    assert len(out) == n + model.stats.duplicated
    seqs = [seq_of(d) for d in out]
    assert sorted(set(seqs)) == list(range(n))
    assert seqs == sorted(seqs)  # a copy comes right after its original
    assert sum(1 for a, b in itertools.pairwise(seqs) if a == b) == model.stats.duplicated


def test_reordered_packets_are_overtaken_by_later_ones() -> None:
    n, q = 20_000, 0.05
    model = ImpairModel(Impairment(reorder=q, reorder_delay_ms=10.0), SEED)
    arrivals = spaced(n, 0.001)
    out = simulate(model, arrivals)
    low, high = binomial_bounds(n, q)
    assert low < model.stats.reordered < high
    delays = dict(zip((seq_of(d) for _, d in out), delays_of(out, arrivals), strict=True))
    held = {seq for seq, delay in delays.items() if delay > 0}
    assert len(held) == model.stats.reordered
    assert all(delays[seq] == pytest.approx(10.0) for seq in held)
    # held 10 ms with 1 ms spacing: overtaken unless the next 9 were held too (or never sent: the run's tail)
    expected_late = {k for k in held if any(j not in held for j in range(k + 1, min(k + 10, n)))}
    late = set()
    highest = -1
    for _, data in out:
        seq = seq_of(data)
        if seq < highest:
            late.add(seq)
        highest = max(highest, seq)
    assert late == expected_late
    assert len(late) > 0.99 * len(held)


def delays_of(out: list[tuple[float, bytes]], arrivals: list[tuple[float, bytes]]) -> list[float]:
    sent = {seq_of(d): t for t, d in arrivals}
    return [(t - sent[seq_of(d)]) * 1000.0 for t, d in out]


def test_uniform_jitter_mean_and_range() -> None:
    # 1 s apart, far more than the 20 ms jitter range: the FIFO rule never bends a draw, so this is the raw law
    delay, jitter, n = 50.0, 10.0, 5000
    arrivals = spaced(n, 1.0)
    out = simulate(ImpairModel(Impairment(delay_ms=delay, jitter_ms=jitter), SEED), arrivals)
    delays = delays_of(out, arrivals)
    assert all(delay - jitter - 1e-6 <= d <= delay + jitter + 1e-6 for d in delays)
    # uniform on [40, 60]: sd 10/sqrt(3) = 5.77 ms; the mean of 5000 has sd 0.082 ms, the sample sd about 0.6 %
    assert abs(statistics.fmean(delays) - delay) < 0.5
    assert statistics.stdev(delays) == pytest.approx(jitter / math.sqrt(3), rel=0.05)
    assert min(delays) < delay - 0.9 * jitter and max(delays) > delay + 0.9 * jitter  # the whole range is used


def test_normal_jitter_mean_and_deviation() -> None:
    delay, jitter, n = 50.0, 5.0, 5000
    arrivals = spaced(n, 1.0)
    settings = Impairment(delay_ms=delay, jitter_ms=jitter, jitter_dist="normal")
    delays = delays_of(simulate(ImpairModel(settings, SEED), arrivals), arrivals)
    # the mean of 5000 has sd 0.07 ms; the sample sd has sd 1 %
    assert abs(statistics.fmean(delays) - delay) < 0.5
    assert statistics.stdev(delays) == pytest.approx(jitter, rel=0.05)
    assert max(delays) > delay + 2.5 * jitter  # tails exist: not a clipped uniform


def test_jitter_never_reorders_dense_traffic() -> None:
    # 0.5 ms apart with +-10 ms of jitter: half the draws would overtake if the model let them
    delay, jitter, n = 20.0, 10.0, 5000
    arrivals = spaced(n, 0.0005)
    model = ImpairModel(Impairment(delay_ms=delay, jitter_ms=jitter), SEED)
    out = simulate(model, arrivals)
    assert [seq_of(d) for _, d in out] == list(range(n))
    times = [t for t, _ in out]
    assert times == sorted(times)
    delays = delays_of(out, arrivals)
    assert min(delays) >= delay - jitter - 1e-6
    assert model.stats.reordered == 0


def loss_runs(lost: list[bool]) -> list[int]:
    runs: list[int] = []
    length = 0
    for flag in [*lost, False]:
        if flag:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


def lost_flags(model: ImpairModel, n: int) -> list[bool]:
    flags = []
    for i in range(n):
        before = model.stats.dropped_loss
        model.submit(packet(i, 20), i * 0.001)
        flags.append(model.stats.dropped_loss > before)
        model.due(i * 0.001)
    return flags


def test_gilbert_elliott_average_loss_and_bursts() -> None:
    # p = 1 %, r = 25 %: in the bad state 1/(p+r)*p = 3.85 % of the time, bursts of 1/r = 4 datagrams on average.
    # ~960 bursts in 100k datagrams: the loss count has sd ~4.3 % (burst count and lengths both vary) -> 15 % bound;
    # the mean burst length has sd 3.46/sqrt(960) = 0.11 -> +-0.6.
    p, r, n = 0.01, 0.25, 100_000
    model = ImpairModel(Impairment(ge_good_to_bad=p, ge_bad_to_good=r), SEED)
    flags = lost_flags(model, n)
    expected = p / (p + r)
    assert sum(flags) / n == pytest.approx(expected, rel=0.15)
    runs = loss_runs(flags)
    assert statistics.fmean(runs) == pytest.approx(1 / r, abs=0.6)
    # bursty, unlike independent loss at the same rate (whose runs average 1/(1-0.0385) = 1.04)
    after_loss = [b for a, b in itertools.pairwise(flags) if a]
    assert sum(after_loss) / len(after_loss) == pytest.approx(1 - r, abs=0.05)


def test_gilbert_elliott_with_partial_loss_in_each_state() -> None:
    # p 5 %, r 20 %: bad 20 % of the time; loss 1 % in good, 50 % in bad -> 0.8*0.01 + 0.2*0.5 = 10.8 %.
    # Sojourns (~4000 in 100k) make the sd about 2.5 % of the mean -> 12 % bound.
    p, r, good, bad, n = 0.05, 0.20, 0.01, 0.50, 100_000
    settings = Impairment(ge_good_to_bad=p, ge_bad_to_good=r, ge_loss_good=good, ge_loss_bad=bad)
    flags = lost_flags(ImpairModel(settings, SEED), n)
    expected = (r * good + p * bad) / (p + r)
    assert sum(flags) / n == pytest.approx(expected, rel=0.12)


def test_rate_limit_caps_throughput_and_queue_drops_the_excess() -> None:
    # 10 Mbit/s and 1250-byte datagrams: 1 ms each on the wire; 2 s offered at twice that
    rate, size, n = 10.0, 1250, 4000
    queue = 64 * 1024
    model = ImpairModel(Impairment(rate_mbit=rate, queue_bytes=queue, queue_packets=None), SEED)
    arrivals = spaced(n, 0.0005, size)
    out = simulate(model, arrivals)
    first, last = out[0][0], out[-1][0]
    throughput = (len(out) - 1) * size * 8 / (last - first) / 1e6
    assert throughput == pytest.approx(rate, rel=1e-6)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(out)]
    assert min(gaps) >= 0.001 - 1e-9  # serialisation time, never faster
    # the queue never holds more than 64 KiB, so no datagram waits longer than 64 KiB at 10 Mbit/s (+ its own)
    assert max(delays_of(out, arrivals)) <= (queue + size) * 8 / (rate * 1e6) * 1000 + 1e-6
    assert model.stats.dropped_queue == n - len(out)
    assert model.stats.dropped_queue == pytest.approx(n / 2, rel=0.05)  # half the offer does not fit
    assert [seq_of(d) for _, d in out] == sorted(seq_of(d) for _, d in out)


def test_rate_limit_below_capacity_only_adds_serialisation() -> None:
    model = ImpairModel(Impairment(rate_mbit=10.0, delay_ms=5.0), SEED)
    arrivals = spaced(500, 0.002, 1250)
    delays = delays_of(simulate(model, arrivals), arrivals)
    assert model.stats.dropped_queue == 0
    assert all(d == pytest.approx(6.0) for d in delays)  # 1 ms on the wire + 5 ms delay


def test_packet_queue_limit_is_tail_drop() -> None:
    model = ImpairModel(Impairment(rate_mbit=1.0, queue_packets=10), SEED)
    for i in range(100):
        model.submit(packet(i), 0.0)
    out = simulate(model, [])
    assert [seq_of(d) for _, d in out] == list(range(10))  # the first ten, the tail dropped
    assert model.stats.dropped_queue == 90


def test_mtu_drops_only_larger_datagrams() -> None:
    model = ImpairModel(Impairment(mtu=1400), SEED)
    arrivals = [(i * 0.001, packet(i, size)) for i, size in enumerate(range(1300, 1501))]
    out = simulate(model, arrivals)
    assert all(len(d) <= 1400 for _, d in out)
    assert len(out) == 101 and model.stats.dropped_mtu == 100


def test_held_datagrams_are_bounded() -> None:
    model = ImpairModel(Impairment(delay_ms=1000.0, limit_packets=100), SEED)
    for i in range(1000):
        model.submit(packet(i), 0.0)
    assert len(model) == 100
    assert model.stats.dropped_limit == 900
    assert model.due(0.5) == []
    assert len(model.due(1.0)) == 100


def test_same_seed_same_run_other_seed_other_run() -> None:
    settings = Impairment(loss=0.1, duplicate=0.05, reorder=0.05, delay_ms=10, jitter_ms=5, rate_mbit=50)
    arrivals = spaced(3000, 0.0002, 600)

    def run(seed: int) -> list[tuple[float, bytes]]:
        return simulate(ImpairModel(settings, seed), arrivals)

    assert run(SEED) == run(SEED)
    assert run(SEED) != run(SEED + 1)


# -- CLI parsing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (impair_cli.parse_fraction, "1%", 0.01),
        (impair_cli.parse_fraction, "0.01", 0.01),
        (impair_cli.parse_fraction, "100%", 1.0),
        (impair_cli.parse_duration_ms, "20ms", 20.0),
        (impair_cli.parse_duration_ms, "1s", 1000.0),
        (impair_cli.parse_duration_ms, "1.5s", 1500.0),
        (impair_cli.parse_duration_ms, "500us", 0.5),
        (impair_cli.parse_duration_ms, "0", 0.0),
        (impair_cli.parse_rate_mbit, "50mbit", 50.0),
        (impair_cli.parse_rate_mbit, "10Mbps", 10.0),
        (impair_cli.parse_rate_mbit, "500kbit", 0.5),
        (impair_cli.parse_rate_mbit, "1gbit", 1000.0),
        (impair_cli.parse_rate_mbit, "2MBps", 16.0),
        (impair_cli.parse_queue, "64kb", impair_cli.QueueLimit(bytes=65536, packets=None)),
        (impair_cli.parse_queue, "1500", impair_cli.QueueLimit(bytes=1500, packets=None)),
        (impair_cli.parse_queue, "100p", impair_cli.QueueLimit(bytes=None, packets=100)),
    ],
)
def test_units_parse(parse: Callable[[str], object], text: str, expected: object) -> None:
    result = parse(text)
    if isinstance(expected, float):
        assert result == pytest.approx(expected)
    else:
        assert result == expected


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (impair_cli.parse_fraction, "5", "did you mean 5%"),
        (impair_cli.parse_fraction, "lots", "not a fraction"),
        (impair_cli.parse_fraction, "-1%", "out of range"),
        (impair_cli.parse_duration_ms, "20", "needs a unit"),
        (impair_cli.parse_duration_ms, "20min", "not a duration"),
        (impair_cli.parse_rate_mbit, "50", "not a rate"),
        (impair_cli.parse_rate_mbit, "0mbit", "above 0"),
        (impair_cli.parse_queue, "64 furlongs", "not a queue size"),
        (impair_cli.parse_queue, "1.5p", "whole number"),
        (impair_cli.parse_count, "0", "at least 1"),
    ],
)
def test_bad_units_say_what_is_wrong(parse: Callable[[str], object], text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:4433", ("127.0.0.1", 4433)), ("[::1]:9", ("::1", 9)), (":5000", ("127.0.0.1", 5000))],
)
def test_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["localhost", "::1:9", "host:port", "host:70000"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def mux_like_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mux")
    impair_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def parse_impair(flags: str) -> argparse.Namespace:
    return mux_like_parser().parse_args(["impair", "--listen", ":0", "--upstream", ":9", *flags.split()])


def test_per_direction_flags_override_both_direction_flags() -> None:
    args = parse_impair(
        "--loss 1% --down-loss 3% --delay 20ms --up-jitter 5ms --rate 50mbit --queue 64kb --up-queue 20p --mtu 1400"
    )
    assert args.func is impair_cli.run
    up = impair_cli.settings_for(args, "up")
    down = impair_cli.settings_for(args, "down")
    assert up.loss == pytest.approx(0.01) and down.loss == pytest.approx(0.03)
    assert up.delay_ms == down.delay_ms == 20.0
    assert (up.jitter_ms, down.jitter_ms) == (5.0, 0.0)
    assert up.rate_mbit == down.rate_mbit == 50.0
    assert (up.queue_bytes, up.queue_packets) == (None, 20)
    assert (down.queue_bytes, down.queue_packets) == (65536, None)
    assert up.mtu == down.mtu == 1400


def test_bad_flag_value_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_impair("--up-delay 20")
    assert exc.value.code == 2
    assert "--up-delay" in capsys.readouterr().err


def test_invalid_combination_exits_2_before_binding(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_impair("--ge-p 1% --ge-r 0")
    assert args.func(args) == 2
    assert "ge_bad_to_good" in capsys.readouterr().err


# -- the proxy on real sockets -------------------------------------------------------------------------------------


class Peer:
    """A UDP socket on 127.0.0.1 that records what it receives (with loop time) and can echo it back."""

    def __init__(self, echo: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.echo = echo
        self.received: list[tuple[float, bytes, tuple[str, int]]] = []
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        now = self.loop.time()
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                return
            self.received.append((now, data, addr))
            if self.echo:
                self.sock.sendto(data, addr)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll: the assertions that follow check the outcome, this only avoids waiting longer than needed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)


async def send_paced(peer: Peer, to: tuple[str, int], datagrams: list[bytes], per_tick: int = 20) -> list[float]:
    """Send in small groups so no kernel buffer on the way overflows; returns each send time."""
    times = []
    for i, data in enumerate(datagrams):
        times.append(peer.loop.time())
        peer.send(data, to)
        if i % per_tick == per_tick - 1:
            await asyncio.sleep(0.001)
    return times


async def test_proxy_relays_both_ways_with_one_upstream_peer_per_client() -> None:
    server = Peer(echo=True)
    a, b = Peer(), Peer()
    try:
        async with ImpairProxy(("127.0.0.1", 0), server.address, seed=SEED) as proxy:
            assert proxy.address[1] != 0
            for i in range(50):
                a.send(b"a" + packet(i), proxy.address)
                b.send(b"b" + packet(i), proxy.address)
            await wait_until(lambda: len(a.received) == 50 and len(b.received) == 50)
            assert {d[:1] for _, d, _ in a.received} == {b"a"} and len(a.received) == 50
            assert {d[:1] for _, d, _ in b.received} == {b"b"} and len(b.received) == 50
            assert all(addr == proxy.address for _, _, addr in a.received)
            peers = {addr for _, _, addr in server.received}
            assert len(peers) == 2 and proxy.address not in peers
            stats = proxy.stats()
            assert stats.clients == 2 and stats.up.delivered == 100 and stats.down.delivered == 100
    finally:
        for peer in (server, a, b):
            peer.close()


async def test_proxy_applies_loss() -> None:
    n, q = 2000, 0.20
    server, client = Peer(), Peer()
    try:
        async with ImpairProxy(("127.0.0.1", 0), server.address, up=Impairment(loss=q), seed=SEED) as proxy:
            await send_paced(client, proxy.address, [packet(i) for i in range(n)])
            await wait_until(lambda: proxy.stats().up.received == n)
            await wait_until(lambda: len(server.received) == proxy.stats().up.delivered)
            stats = proxy.stats()
        low, high = binomial_bounds(n, q)  # 400 +- 80
        assert stats.up.received == n
        assert low < stats.up.dropped_loss < high
        assert low < n - len(server.received) < high
        assert len(server.received) == stats.up.delivered  # nothing else lost on loopback
    finally:
        server.close()
        client.close()


async def test_proxy_adds_delay() -> None:
    # wall clock: the lower bound is a correctness property (never released early); the upper one is generous
    server, client = Peer(), Peer()
    try:
        async with ImpairProxy(("127.0.0.1", 0), server.address, up=Impairment(delay_ms=30.0), seed=SEED) as proxy:
            sent = await send_paced(client, proxy.address, [packet(i) for i in range(40)], per_tick=2)
            await wait_until(lambda: len(server.received) == 40)
        assert len(server.received) == 40
        delays = [(t - sent[seq_of(d)]) * 1000.0 for t, d, _ in server.received]
        assert min(delays) >= 30.0 - 1e-3
        assert 28.0 <= statistics.median(delays) <= 60.0
    finally:
        server.close()
        client.close()


async def test_proxy_holds_the_rate_limit() -> None:
    # 8 Mbit/s, 1000-byte datagrams: 1 ms each, 400 of them take 0.4 s however fast they are offered
    rate, size, n = 8.0, 1000, 400
    server, client = Peer(), Peer()
    try:
        async with ImpairProxy(("127.0.0.1", 0), server.address, up=Impairment(rate_mbit=rate), seed=SEED) as proxy:
            await send_paced(client, proxy.address, [packet(i, size) for i in range(n)], per_tick=50)
            await wait_until(lambda: len(server.received) == n)
            stats = proxy.stats()
        assert stats.up.dropped_queue == 0 and len(server.received) == n
        times = [t for t, _, _ in server.received]
        throughput = (n - 1) * size * 8 / (times[-1] - times[0]) / 1e6
        # cannot beat the limit by more than timer batching at the start; stalls only slow it down
        assert rate * 0.5 < throughput < rate * 1.25
    finally:
        server.close()
        client.close()


async def test_idle_clients_expire_and_the_mapping_count_is_capped() -> None:
    server = Peer(echo=True)
    clients = [Peer() for _ in range(3)]
    try:
        async with ImpairProxy(("127.0.0.1", 0), server.address, seed=SEED, idle_timeout=0.1, max_clients=2) as proxy:
            for i, peer in enumerate(clients):
                peer.send(packet(i), proxy.address)
                await wait_until(lambda peer=peer: len(peer.received) == 1)  # type: ignore[misc]
            stats = proxy.stats()
            assert stats.clients == 2 and stats.clients_opened == 3 and stats.clients_evicted == 1
            await wait_until(lambda: proxy.stats().clients == 0)
            stats = proxy.stats()
            assert stats.clients == 0 and stats.clients_expired == 2
    finally:
        server.close()
        for peer in clients:
            peer.close()
