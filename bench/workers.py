"""`mux serve --workers 2` against one worker: handshakes/s and echo messages/s over QUIC and SCTP.

A real `mux serve` (behaviours.echo:Echo, one QUIC and one SCTP listener on ports the system picks) runs with
``--workers 1`` (A) and ``--workers 2`` (B), alternating A B A B, each run a fresh server. The load comes from
``--clients`` client processes that start together at a set instant and count what completed in ``--seconds``;
the figure is the sum over them divided by the time. Two load generators (``--load``):

* ``go`` (the default when ``go`` is installed): ``bench/loadgen``, built here into a temporary folder. SCTP is a
  raw client that builds its own packets; QUIC is quic-go (Debian's golang-github-lucas-clemente-quic-go-dev; without
  it QUIC falls back to the Python load). They cost a fraction of what the server does per operation.
* ``python``: this script in ``--client`` mode, an event loop of mux's own clients with ``--concurrency`` tasks.

Workloads: handshake (connect, close, again: ``--concurrency`` loops, each with a UDP socket of its own with the
Go load, a new one per connection with Python; a graceful close, SHUTDOWN or CONNECTION_CLOSE) and echo
(``--concurrency`` connections, set up before the window, each with ``--window`` 64-byte messages in flight: Go's
SCTP keeps them in flight on stream 0 of one association, Go's QUIC on as many streams, one each; the Python client
always has one in flight per connection).

Prints per run the rate and the CPU per operation of the server (and each worker's cores) and of the load
generator (both measured within the window), then per transport and workload median [min..max] for each server,
B/A (the ratio of the medians, and the median [min..max] of each repetition's B/A) and the bound below, from the
one-worker runs' costs.

On a 2-core machine the clients compete with the workers for the same cores: with server and client costs s and
c per operation, two cores carry at most 2/(s+c) operations per second while one worker alone serves 1/s, so B/A
is bounded by 2s/(s+c) even if the workers scale perfectly: 1.7 needs c <= 0.18 s. The Python clients cost more
than the server (c > s: B/A near 1 at best), hence the Go load. Only clients on another machine take the bound
away entirely.

Usage: python bench/workers.py [--reps 3] [--seconds 5] [--load go|python] [--clients N] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIG = """\
behaviour: behaviours.echo:Echo
logging: {level: info}
pool: {num_acceptors: 1000, max_connections: 100000}
listeners:
  - {name: quic, transport: quic, host: 127.0.0.1, port: 0, alpn: [echo]}
  - {name: sctp, transport: sctp, host: 127.0.0.1, port: 0}
"""
WORKLOADS = ("handshake", "echo")
LOADGEN = ROOT / "bench" / "loadgen"
#: Debian's Go sources (golang-go's GOPATH); quic-go there comes from golang-github-lucas-clemente-quic-go-dev
GOPATH = Path(os.environ.get("MUX_GOPATH", "/usr/share/gocode"))
QUIC_GO = GOPATH / "src/github.com/lucas-clemente/quic-go/client.go"
#: the Go load's defaults per (transport, workload): concurrency (loops or connections) and echo window. Echo keeps
#: 512 (SCTP) and 128 (QUIC) messages in flight: the client is one thread that waits its turn for a core like
#: everyone else, and with one message per association the workers ran dry while it waited
GO_DEFAULTS = {
    ("sctp", "handshake"): (64, 1),
    ("sctp", "echo"): (128, 4),
    ("quic", "handshake"): (32, 1),
    ("quic", "echo"): (16, 8),
}
TRANSPORTS = ("quic", "sctp")
MESSAGE = b"m" * 64


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_loadgen(folder: Path) -> tuple[Path, bool]:
    """bench/loadgen built into ``folder`` (GOPATH mode against Debian's sources, as tests/test_sctp_pion.py builds
    pion); with quic-go's sources there it speaks QUIC too. Returns the binary and whether it does."""
    quic = QUIC_GO.is_file()
    binary = folder / "loadgen"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOFLAGS": ""}
    if "GOCACHE" not in env and not env.get("HOME"):
        env["GOCACHE"] = str(folder / "gocache")
    command = ["go", "build", *(["-tags", "quicgo"] if quic else []), "-o", str(binary), "."]
    built = subprocess.run(command, cwd=LOADGEN, env=env, capture_output=True, text=True, timeout=600)
    if built.returncode != 0:
        raise RuntimeError(f"go build of {LOADGEN} failed:\n{built.stdout}{built.stderr}")
    return binary, quic


# -- client process ----------------------------------------------------------------------------------------------


def target(transport: str, host: str, port: int) -> tuple[str, dict[str, Any]]:
    if transport == "quic":
        return f"quic://{host}:{port}", {"alpn": ["echo"], "verify": "none"}
    return f"sctp://{host}:{port}", {}


async def client_main(args: argparse.Namespace) -> dict[str, int]:
    from mux import connect
    from tests.apps import Client

    url, options = target(args.transport, args.host, args.port)
    done = {"ok": 0, "failed": 0}
    stop_at = args.start_at + args.seconds
    closing: list[asyncio.Future[Any]] = []

    async def handshakes() -> None:
        while time.time() < stop_at:
            client = Client()
            try:
                conn = await connect(client, url, options=options, timeout=10)
            except Exception:
                done["failed"] += 1
                continue
            if time.time() < stop_at:
                done["ok"] += 1
            conn.close(0, "")  # closes in the background, as in mux bench's handshake workload
            closing.append(asyncio.ensure_future(conn.wait_closed()))

    async def echoes() -> None:
        client = Client()
        conn = await connect(client, url, options=options, timeout=20)
        stream = conn.open_stream()
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
        while time.time() < stop_at:
            await stream.send(MESSAGE)
            got = 0
            while got < len(MESSAGE):  # QUIC may split the echo; SCTP gives it back as one message
                event = await client.next("data", timeout=10)
                got += len(event[2])
            done["ok"] += 1
        conn.close(0, "")

    async def window_cpu() -> None:
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
        begun = process_cpu()
        await asyncio.sleep(max(0.0, stop_at - time.time()))
        done["cpu_us"] = int(1e6 * (process_cpu() - begun))

    clock = asyncio.create_task(window_cpu())
    if args.workload == "echo":
        tasks = [asyncio.create_task(echoes()) for _ in range(args.concurrency)]
    else:
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
        tasks = [asyncio.create_task(handshakes()) for _ in range(args.concurrency)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await clock
    if closing:
        await asyncio.wait(closing, timeout=5)
    done["failed"] += sum(1 for r in results if isinstance(r, BaseException))
    return done


# -- server and runs ---------------------------------------------------------------------------------------------


class Server:
    def __init__(self, workers: int, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mux.cli", "serve", str(config), "--workers", str(workers)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.ports = {name: self._port(name) for name in TRANSPORTS}
        self.sctp_port = int(self._find(r"SCTP port (\d+) over UDP"))
        deadline = time.monotonic() + 20
        while sum("mux.server" in line and "serving sctp" in line for line in self.lines) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start:\n" + "".join(self.lines))
            time.sleep(0.05)

    def pids(self) -> list[int]:
        """The processes that serve: the workers, or the server itself when it runs one."""
        found = [int(m[1]) for line in self.lines if (m := re.search(r"worker \d+ of \d+: pid (\d+)", line))]
        return found or [self.proc.pid]

    def cpu_seconds(self) -> list[float]:
        """CPU time (user + system) each serving process has used so far."""
        used = []
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                used.append(0.0)
                continue
            used.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))  # utime, stime
        return used

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def _port(self, name: str) -> int:
        return int(self._find(rf"serving {name} on \('[^']+', (\d+)\)"))

    def _find(self, pattern: str) -> str:
        """The first group of the first log line matching ``pattern`` (waiting for it to come)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found[1]
            time.sleep(0.05)
        raise RuntimeError(f"no log line matches {pattern!r}:\n" + "".join(self.lines))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Outcome:
    rate: float  # operations completed per second of the window, over all client processes
    failed: int
    server_cpu: float  # cores the serving processes used during the window
    worker_cpu: list[float]  # the same, per worker: how evenly the steering spread the load
    client_cpu: float  # cores the client processes used during the window


def client_command(
    args: argparse.Namespace, server: Server, transport: str, workload: str, start_at: float
) -> tuple[list[str], int]:
    """The command line of one client process, and how many operations it stands for if it dies."""
    host, port = "127.0.0.1", server.ports[transport]
    if args.loadgen is not None and (transport == "sctp" or args.quic_go):
        concurrency, window = GO_DEFAULTS[(transport, workload)]
        concurrency = args.concurrency or concurrency
        window = args.window or window
        command = [
            str(args.loadgen),
            f"-transport={transport}",
            f"-workload={workload}",
            f"-addr={host}:{port}",
            f"-sctp-port={server.sctp_port}",
            f"-start-at={start_at:.6f}",
            f"-seconds={args.seconds}",
            f"-concurrency={concurrency}",
            f"-window={window}",
        ]
        return command, concurrency
    concurrency = args.concurrency or 16
    command = [sys.executable, __file__, "--client", transport, workload, host, str(port), str(start_at)]
    return [*command, str(args.seconds), str(concurrency)], concurrency


def one_run(args: argparse.Namespace, server: Server, transport: str, workload: str) -> Outcome:
    start_at = time.time() + 2.0 + 0.2 * args.clients  # time for every process to start and (echo) connect
    commands = [client_command(args, server, transport, workload, start_at) for _ in range(args.clients)]
    procs = [
        subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        for command, _ in commands
    ]
    time.sleep(max(0.0, start_at - time.time()))
    before = server.cpu_seconds()
    time.sleep(max(0.0, start_at + args.seconds - time.time()))
    worker_cpu = [(after - was) / args.seconds for after, was in zip(server.cpu_seconds(), before, strict=False)]
    ok = failed = client_us = 0
    for proc, (_, concurrency) in zip(procs, commands, strict=True):
        out, _ = proc.communicate(timeout=args.seconds + 60)
        result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"ok": 0, "failed": concurrency}
        ok += result["ok"]
        failed += result["failed"]
        client_us += result.get("cpu_us", 0)
    rate = ok / args.seconds
    return Outcome(rate, failed, sum(worker_cpu), worker_cpu, client_us / 1e6 / args.seconds)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):9.0f} [{min(values):.0f}..{max(values):.0f}]"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        transport, workload, host, port, start_at, seconds, concurrency = sys.argv[2:9]
        ns = argparse.Namespace(
            transport=transport,
            workload=workload,
            host=host,
            port=int(port),
            start_at=float(start_at),
            seconds=float(seconds),
            concurrency=int(concurrency),
        )
        from mux.loop import run

        print(json.dumps(run(client_main(ns))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--load",
        choices=("go", "python"),
        default="go" if shutil.which("go") else "python",
        help="the load generator (default: go when the Go toolchain is installed)",
    )
    parser.add_argument("--clients", type=int, help="load generator processes (default: 1 for go, 3 for python)")
    parser.add_argument(
        "--concurrency", type=int, help="loops or connections per client process (default: go's per workload, 16)"
    )
    parser.add_argument(
        "--window", type=int, help="go echo: messages in flight per connection (default: 4 SCTP, 8 QUIC)"
    )
    parser.add_argument("--transport", action="append", choices=TRANSPORTS)
    parser.add_argument("--workload", action="append", choices=WORKLOADS)
    args = parser.parse_args()
    transports = args.transport or list(TRANSPORTS)
    workloads = args.workload or list(WORKLOADS)
    if args.clients is None:
        args.clients = 1 if args.load == "go" else 3
    tmp_build = tempfile.TemporaryDirectory(prefix="mux-loadgen-")
    args.loadgen, args.quic_go = None, False
    if args.load == "go":
        args.loadgen, args.quic_go = build_loadgen(Path(tmp_build.name))
        if not args.quic_go and "quic" in transports:
            print(f"no quic-go under {GOPATH}/src (golang-github-lucas-clemente-quic-go-dev): QUIC load is Python")
    results: dict[tuple[int, str, str], list[float]] = {}
    cpu_per_op: dict[tuple[int, str, str], list[float]] = {}
    client_cpu_per_op: dict[tuple[int, str, str], list[float]] = {}
    failures = 0
    how = "Go (bench/loadgen)" if args.load == "go" else "Python (mux clients)"
    print(f"{os.cpu_count()} cores; load: {how}, {args.clients} client processes; {args.seconds} s runs")
    # other processes on the machine take cores from both servers alike, but not evenly over time: say how busy
    print("load average at the start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        config.write_text(CONFIG)
        for rep in range(args.reps):
            for workers in (1, 2):  # A B, A B...
                server = Server(workers, config)
                try:
                    for transport in transports:
                        for workload in workloads:
                            outcome = one_run(args, server, transport, workload)
                            failures += outcome.failed
                            key = (workers, transport, workload)
                            results.setdefault(key, []).append(outcome.rate)
                            # CPU per operation in the window: the server's, and the load generator's
                            per_op = 1e6 * outcome.server_cpu / outcome.rate if outcome.rate else float("nan")
                            client_per_op = 1e6 * outcome.client_cpu / outcome.rate if outcome.rate else float("nan")
                            cpu_per_op.setdefault(key, []).append(per_op)
                            client_cpu_per_op.setdefault(key, []).append(client_per_op)
                            print(
                                f"rep {rep + 1} workers {workers} {transport:4} {workload:9} {outcome.rate:9.0f}/s"
                                f"  server {outcome.server_cpu:4.2f} cores ({per_op:.0f} us/op)"
                                + (f" = {'+'.join(f'{w:.2f}' for w in outcome.worker_cpu)}" if workers > 1 else "")
                                + f"  clients {outcome.client_cpu:4.2f} cores ({client_per_op:.0f} us/op)"
                                + (f" ({outcome.failed} failed)" if outcome.failed else ""),
                                flush=True,
                            )
                finally:
                    server.stop()
    tmp_build.cleanup()
    print()
    print(f"{'':15} {'1 worker (A)':>26} {'2 workers (B)':>26}   B/A (medians; per repetition)   bound")
    for transport in transports:
        for workload in workloads:
            key_a, key_b = (1, transport, workload), (2, transport, workload)
            a, b = results[key_a], results[key_b]
            unit = "handshakes/s" if workload == "handshake" else "messages/s"
            ratio = statistics.median(b) / statistics.median(a) if statistics.median(a) else float("nan")
            per_rep = [y / x if x else float("nan") for x, y in zip(a, b, strict=True)]
            ratios = f"{statistics.median(per_rep):.2f} [{min(per_rep):.2f}..{max(per_rep):.2f}]"
            # 2s/(s+c): what two shared cores allow over one worker, from the 1-worker runs' costs per operation
            s_a, c_a = statistics.median(cpu_per_op[key_a]), statistics.median(client_cpu_per_op[key_a])
            bound = 2 * s_a / (s_a + c_a) if s_a + c_a else float("nan")
            print(f"{transport} {unit:12} {summary(a):>26} {summary(b):>26}   {ratio:.2f}x; {ratios:>18}   {bound:.2f}")
    print()
    for title, table in (("server", cpu_per_op), ("client", client_cpu_per_op)):
        print(f"{title} CPU per operation (us, in the window):")
        for transport in transports:
            for workload in workloads:
                a, b = table[(1, transport, workload)], table[(2, transport, workload)]
                print(f"{transport} {workload:12} {summary(a):>26} {summary(b):>26}")
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if failures:
        print(f"{failures} operations failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
