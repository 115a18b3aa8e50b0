"""mux-over-QUIC against raw aioquic: the same echo, the same settings, alternating A B A B.

Two servers run in their own processes: A is ``mux serve`` with ``mux.behaviours.echo:Echo``; B is a
plain aioquic ``QuicConnectionProtocol`` that echoes in ``quic_event_received``. Both use the same
certificate, congestion control, datagram size and flow-control windows, and the same event loop
(uvloop when installed). One plain aioquic client (this process) measures both:

* bulk: one stream, ``--bulk-mb`` MiB sent with FIN, timed until the whole echo has come back
  (goodput counts the bytes once). The client runs on asyncio's own loop here, not uvloop: aioquic's
  protocol takes ``now`` from ``loop.time()``, which under uvloop is a millisecond clock cached per
  loop iteration, and its pacer refills from ``now``, so a uvloop client can send at most one bucket
  (16 packets, fewer after a loss) per millisecond. That capped both servers at ~150 Mbit/s and
  made runs fall into 150, ~105 and 27 Mbit/s modes by the client's cwnd, not by the server.
* latency: ``--rounds`` 64-byte request/response round trips on one stream, p50 and p99, with the
  client on uvloop (the faster client: it leaves the servers' share of the round trip larger), and
  the server process's CPU per round trip (busy polling buys its latency with CPU), and how often per round
  trip the server went to sleep (its voluntary context switches). A sleeping server pays a wake-up before it
  reads the next request, and on a VM whose idle vCPU halts at once (this one: ``haltpoll.guest_halt_poll_ns=0``)
  that wake-up is a good part of the round trip. A server still busy with the previous round's work when the
  next request lands pays none, so a slower server can show a lower p50: this column tells the two apart.
* handshakes: ``--handshakes`` connections, ``--concurrency`` at a time, each a full 1-RTT handshake
  (no resumption) closed at once by the client; handshakes/s, and the server's CPU per handshake
  counted until its draining connections have ended. The client's handshake costs about what the
  server's does and both share the machine's cores, so handshakes/s moves with the server's CPU
  per handshake but less than in proportion; the CPU figure is the one load does not bend.

Prints each figure as median [min..max] over ``--reps`` runs, and the ratio mux / raw.
Usage: python bench/quic_vs_aioquic.py [--reps 5] [--bulk-mb 16 (0: none)] [--rounds 2000 (0: none)]
       [--handshakes 400 (0: none)] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent, StreamDataReceived

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.raw_peers import cpu_seconds  # noqa: E402

SETTINGS = {
    "max_datagram_size": 1200,
    "congestion_control_algorithm": "reno",
    "conn_flow_control_window": 4 * 1024 * 1024,
    "stream_recv_window_default": 1024 * 1024,
    "idle_timeout_ms": 30_000,
}


def loop_factory() -> Any:
    if os.environ.get("MUX_LOOP") == "asyncio":  # the servers (and the latency client) on asyncio's loop
        return None
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return None


# -- servers ----------------------------------------------------------------------------------


class RawEcho(QuicConnectionProtocol):
    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self._quic.send_stream_data(event.stream_id, event.data, event.end_stream)
            self.transmit()


def raw_server_config(certfile: str, keyfile: str) -> QuicConfiguration:
    """What mux's listener builds from the same settings (``mux.quic.options``), datagrams included."""
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=["echo"],
        max_datagram_size=SETTINGS["max_datagram_size"],
        congestion_control_algorithm=SETTINGS["congestion_control_algorithm"],
        max_data=SETTINGS["conn_flow_control_window"],
        max_stream_data=SETTINGS["stream_recv_window_default"],
        idle_timeout=SETTINGS["idle_timeout_ms"] / 1000,
        max_datagram_frame_size=65536,
    )
    config.load_cert_chain(certfile, keyfile)
    return config


def run_raw_server(port: int, certfile: str, keyfile: str) -> None:
    """The raw aioquic echo on ``port`` (0: a free one); says ``raw aioquic on PORT`` on stderr once it listens."""
    config = raw_server_config(certfile, keyfile)

    async def main() -> None:
        server = await serve("127.0.0.1", port, configuration=config, create_protocol=RawEcho)
        assert server._transport is not None
        bound = server._transport.get_extra_info("sockname")[1]
        print(f"raw aioquic on {bound}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())


def mux_config(port: int, certfile: str, keyfile: str, busy_poll_us: int = 0) -> str:
    return (
        "behaviour: mux.behaviours.echo:Echo\n"
        "logging: {level: warning}\n"
        "listeners:\n"
        f"  - {{transport: quic, host: 127.0.0.1, port: {port}, alpn: [echo], certfile: {certfile}, "
        f"keyfile: {keyfile}, max_datagram_size: {SETTINGS['max_datagram_size']}, "
        # path MTU discovery off (its maximum at the start): raw aioquic has none, so both send the same packets
        f"maximum_mtu: {SETTINGS['max_datagram_size'] + 28}, "
        f"congestion_control_algorithm: {SETTINGS['congestion_control_algorithm']}, "
        f"conn_flow_control_window: {SETTINGS['conn_flow_control_window']}, "
        f"stream_recv_window_default: {SETTINGS['stream_recv_window_default']}, "
        f"idle_timeout_ms: {SETTINGS['idle_timeout_ms']}, ideal_send_buffer_size: 1048576, "
        f"busy_poll_us: {busy_poll_us}}}\n"
    )


# -- client -----------------------------------------------------------------------------------


class Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received = 0
        self.target = 0
        self.done: asyncio.Future[None] | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self.received += len(event.data)
            if self.done is not None and self.received >= self.target and not self.done.done():
                self.done.set_result(None)


def client_config() -> QuicConfiguration:
    return QuicConfiguration(
        is_client=True,
        alpn_protocols=["echo"],
        verify_mode=ssl.CERT_NONE,
        max_datagram_size=SETTINGS["max_datagram_size"],
        congestion_control_algorithm=SETTINGS["congestion_control_algorithm"],
        max_data=SETTINGS["conn_flow_control_window"],
        max_stream_data=SETTINGS["stream_recv_window_default"],
    )


async def bulk(port: int, size: int) -> float:
    """Mbit/s of echoed goodput."""
    async with connect("127.0.0.1", port, configuration=client_config(), create_protocol=Client) as c:
        assert isinstance(c, Client)
        loop = asyncio.get_running_loop()
        c.target, c.received, c.done = size, 0, loop.create_future()
        stream_id = c._quic.get_next_available_stream_id()
        started = time.perf_counter()
        chunk = b"\x5a" * 65536
        sent = 0
        while sent < size:
            piece = chunk[: min(len(chunk), size - sent)]
            c._quic.send_stream_data(stream_id, piece, sent + len(piece) >= size)
            sent += len(piece)
            # keep at most a few MiB unacknowledged in our own send buffer, like a real app
            while sent - c.received > 4 * 1024 * 1024:
                c.transmit()
                await asyncio.sleep(0.001)
        c.transmit()
        await asyncio.wait_for(c.done, 120)
        elapsed = time.perf_counter() - started
    return size * 8 / elapsed / 1e6


async def latency(port: int, rounds: int) -> tuple[float, float]:
    """p50 and p99 round-trip time in microseconds."""
    async with connect("127.0.0.1", port, configuration=client_config(), create_protocol=Client) as c:
        assert isinstance(c, Client)
        loop = asyncio.get_running_loop()
        stream_id = c._quic.get_next_available_stream_id()
        payload = b"q" * 64
        samples = []
        c.received = 0
        for i in range(rounds):
            c.target, c.done = (i + 1) * len(payload), loop.create_future()
            started = time.perf_counter()
            c._quic.send_stream_data(stream_id, payload, False)
            c.transmit()
            await asyncio.wait_for(c.done, 10)
            samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


async def handshakes(port: int, total: int, concurrency: int) -> tuple[float, int]:
    """Handshakes per second and how many failed: ``total`` connections, ``concurrency`` at a time, each
    closed once it is up.

    The client sends its CONNECTION_CLOSE and moves on at once: waiting out its own closing period
    (3 PTO, ~80 ms) would time the client's timers, not the server. A handshake the server ends
    (refused, timed out) is counted, not retried, and only the ones that completed count in the rate.
    """
    loop = asyncio.get_running_loop()
    config = client_config()
    server = ("::ffff:127.0.0.1", port, 0, 0)  # as aioquic's connect() does it: a dual-stack socket
    left = total
    failed = 0

    async def one() -> None:
        nonlocal failed
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0, 0, 0))
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: QuicConnectionProtocol(QuicConnection(configuration=config)), sock=sock
        )
        try:
            protocol.connect(server)
            # awaited directly, as aioquic's connect() does: a waiter made after the handshake completed never fires
            await protocol.wait_connected()
            protocol.close()  # CONNECTION_CLOSE goes out now
        except ConnectionError:
            failed += 1
        finally:
            if protocol._timer is not None:
                protocol._timer.cancel()
            transport.close()

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 120)
    return (total - failed) / (time.perf_counter() - started), failed


def sleeps(pid: int) -> int:
    """How many times a process has gone to sleep so far: its voluntary context switches (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def summary(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):9.{digits}f} [{min(values):.{digits}f}..{max(values):.{digits}f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--bulk-mb", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--handshakes", type=int, default=400, help="connections per run of the handshake figure")
    parser.add_argument("--concurrency", type=int, default=16, help="handshakes in flight at once")
    parser.add_argument(
        "--busy-poll-us", type=int, default=250, help="also run mux with this busy_poll_us (0: leave it out)"
    )
    parser.add_argument("--serve-raw", nargs=3, metavar=("PORT", "CERT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_raw:
        run_raw_server(int(args.serve_raw[0]), args.serve_raw[1], args.serve_raw[2])
        return 0

    from mux.quic.certs import self_signed

    certfile, keyfile = (str(p) for p in self_signed("127.0.0.1"))
    tmp = tempfile.mkdtemp(prefix="mux-bench-")
    servers = {"mux": (free_udp_port(), 0), "raw": (free_udp_port(), None)}
    if args.busy_poll_us:
        servers["mux+poll"] = (free_udp_port(), args.busy_poll_us)
    procs = {}
    for name, (port, busy_poll_us) in servers.items():
        if busy_poll_us is None:
            command = [sys.executable, __file__, "--serve-raw", str(port), certfile, keyfile]
        else:
            conf = os.path.join(tmp, f"{name}.yaml")
            Path(conf).write_text(mux_config(port, certfile, keyfile, busy_poll_us))
            command = [sys.executable, "-m", "mux.cli", "serve", conf]
        procs[name] = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    ports = {name: port for name, (port, _) in servers.items()}
    names = list(servers)
    try:
        time.sleep(1.5)
        results: dict[str, dict[str, list[float]]] = {
            k: {"bulk": [], "p50": [], "p99": [], "cpu": [], "sleeps": [], "hs": [], "hs_cpu": []} for k in ports
        }

        async def run_bulk(order: list[str]) -> None:
            for name in order:
                results[name]["bulk"].append(await bulk(ports[name], args.bulk_mb * 1024 * 1024))

        async def run_latency(order: list[str]) -> None:
            for name in order:
                before, slept = cpu_seconds(procs[name].pid), sleeps(procs[name].pid)
                p50, p99 = await latency(ports[name], args.rounds)
                results[name]["p50"].append(p50)
                results[name]["p99"].append(p99)
                results[name]["cpu"].append((cpu_seconds(procs[name].pid) - before) / args.rounds * 1e6)
                results[name]["sleeps"].append((sleeps(procs[name].pid) - slept) / args.rounds)

        failures = dict.fromkeys(ports, 0)

        async def run_handshakes(order: list[str]) -> None:
            for name in order:
                before = cpu_seconds(procs[name].pid)
                rate, failed = await handshakes(ports[name], args.handshakes, args.concurrency)
                results[name]["hs"].append(rate)
                failures[name] += failed
                # the server's closing connections end after their draining period (3 PTO): count that work too
                await asyncio.sleep(0.5)
                results[name]["hs_cpu"].append((cpu_seconds(procs[name].pid) - before) / args.handshakes * 1e6)

        for rep in range(args.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]  # A B C, B C A, ...
            if args.bulk_mb:
                asyncio.run(run_bulk(order))  # asyncio's loop: a microsecond clock (see above)
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                if args.rounds:
                    runner.run(run_latency(order))
                if args.handshakes:
                    runner.run(run_handshakes(order))
            print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(10)
    loop_name = "uvloop" if loop_factory() else "asyncio"
    print(
        f"QUIC echo, {args.reps} reps alternating, {args.bulk_mb} MiB bulk (client on asyncio), "
        f"{args.rounds} rounds and {args.handshakes} handshakes ({args.concurrency} at a time; client on "
        f"{loop_name}), servers on {loop_name}"
    )
    columns = [("bulk Mbit/s", "bulk", args.bulk_mb), ("rtt p50 us", "p50", args.rounds)]
    columns += [("rtt p99 us", "p99", args.rounds), ("server CPU us/rtt", "cpu", args.rounds)]
    columns += [("server sleeps/rtt", "sleeps", args.rounds)]
    columns += [("handshakes/s", "hs", args.handshakes), ("server CPU us/hs", "hs_cpu", args.handshakes)]
    columns = [c for c in columns if c[2]]
    print(f"{'':10} " + " ".join(f"{title:>26}" for title, _, _ in columns))
    for name in names:
        r = results[name]
        print(f"{name:10} " + " ".join(f"{summary(r[key], 2 if key == 'sleeps' else 1):>26}" for _, key, _ in columns))
    if args.handshakes and any(failures.values()):
        print("failed handshakes: " + ", ".join(f"{name} {count}" for name, count in failures.items()))
    raw = results["raw"]

    def ratio(m: dict[str, list[float]], key: str, higher_is_better: bool = True) -> float:
        a, b = statistics.median(m[key]), statistics.median(raw[key])
        return a / b if higher_is_better else b / a

    for name in (n for n in names if n != "raw"):
        m = results[name]
        parts = []
        if args.bulk_mb:
            parts.append(f"throughput {ratio(m, 'bulk'):.3f}x")
        if args.rounds:
            parts.append(f"latency (raw p50 / {name} p50) {ratio(m, 'p50', False):.3f}x")
            parts.append(f"CPU/rtt (raw / {name}) {ratio(m, 'cpu', False):.3f}x")
        if args.handshakes:
            parts.append(f"handshakes/s {ratio(m, 'hs'):.3f}x")
            parts.append(f"CPU/handshake (raw / {name}) {ratio(m, 'hs_cpu', False):.3f}x")
        print(f"ratio {name}/raw: " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
