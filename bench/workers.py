"""`mux serve --workers 2` against one worker: handshakes/s and echo messages/s over QUIC and SCTP.

A real `mux serve` (behaviours.echo:Echo, one QUIC and one SCTP listener on ports the system picks) runs with
``--workers 1`` (A) and ``--workers 2`` (B), alternating A B A B, each run a fresh server. The load comes from
``--clients`` processes of this script (``--client`` mode), each an event loop with ``--concurrency`` tasks:

* handshake: connect, close, again (a new connection, a new UDP port each time);
* echo: one connection per task, one stream, a 64-byte message and its echo, again (one in flight per task).

All client processes start together at a set instant and count what completed in ``--seconds``; the figure is
the sum over them divided by the time. Prints median [min..max] per transport and workload, and B/A.

On a 2-core machine the client processes compete with the workers for the same cores: the mux client costs about
what the server does per message or handshake, so with one core's worth of server work the clients need about
another core, and two busy workers leave them none. The ratio measured here is then bounded near 2s/(s+c) for
server and client costs s and c per operation, well under 2 even if the workers scale perfectly; a fair
measurement of the workers' scaling runs the clients on another machine (``--host`` and ``--ports`` reach a
server started there by hand).

Usage: python bench/workers.py [--reps 3] [--seconds 5] [--clients 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
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
TRANSPORTS = ("quic", "sctp")
MESSAGE = b"m" * 64


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
        deadline = time.monotonic() + 20
        while sum("mux.server" in line and "serving sctp" in line for line in self.lines) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start:\n" + "".join(self.lines))
            time.sleep(0.05)

    def pids(self) -> list[int]:
        """The processes that serve: the workers, or the server itself when it runs one."""
        found = [int(m[1]) for line in self.lines if (m := re.search(r"worker \d+ of \d+: pid (\d+)", line))]
        return found or [self.proc.pid]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the serving processes have used so far."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def _port(self, name: str) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for line in self.lines:
                found = re.search(rf"serving {name} on \('[^']+', (\d+)\)", line)
                if found:
                    return int(found[1])
            time.sleep(0.05)
        raise RuntimeError(f"no port for {name}:\n" + "".join(self.lines))

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
    client_cpu: float  # cores the client processes used during the window


def one_run(args: argparse.Namespace, server: Server, transport: str, workload: str) -> Outcome:
    host, port = "127.0.0.1", server.ports[transport]
    start_at = time.time() + 2.0 + 0.2 * args.clients  # time for every process to import and (echo) connect
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--client",
                transport,
                workload,
                host,
                str(port),
                str(start_at),
                str(args.seconds),
                str(args.concurrency),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(args.clients)
    ]
    time.sleep(max(0.0, start_at - time.time()))
    before = server.cpu_seconds()
    time.sleep(max(0.0, start_at + args.seconds - time.time()))
    server_cpu = server.cpu_seconds() - before
    ok = failed = client_us = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=args.seconds + 60)
        result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"ok": 0, "failed": args.concurrency}
        ok += result["ok"]
        failed += result["failed"]
        client_us += result.get("cpu_us", 0)
    return Outcome(ok / args.seconds, failed, server_cpu / args.seconds, client_us / 1e6 / args.seconds)


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
    parser.add_argument("--clients", type=int, default=3, help="load generator processes")
    parser.add_argument("--concurrency", type=int, default=16, help="tasks per client process")
    parser.add_argument("--transport", action="append", choices=TRANSPORTS)
    parser.add_argument("--workload", action="append", choices=WORKLOADS)
    args = parser.parse_args()
    transports = args.transport or list(TRANSPORTS)
    workloads = args.workload or list(WORKLOADS)
    results: dict[tuple[int, str, str], list[float]] = {}
    cpu_per_op: dict[tuple[int, str, str], list[float]] = {}
    client_cpu_per_op: dict[tuple[int, str, str], list[float]] = {}
    failures = 0
    print(f"{os.cpu_count()} cores; {args.clients} client processes x {args.concurrency} tasks, {args.seconds} s runs")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        config.write_text(CONFIG)
        for rep in range(args.reps):
            for workers in (1, 2):  # A B, A B...
                server = Server(workers, config)
                try:
                    for transport in transports:
                        for workload in workloads:
                            run = one_run(args, server, transport, workload)
                            failures += run.failed
                            key = (workers, transport, workload)
                            results.setdefault(key, []).append(run.rate)
                            # CPU per operation in the window: the server's, and the load generator's
                            per_op = 1e6 * run.server_cpu / run.rate if run.rate else float("nan")
                            client_per_op = 1e6 * run.client_cpu / run.rate if run.rate else float("nan")
                            cpu_per_op.setdefault(key, []).append(per_op)
                            client_cpu_per_op.setdefault(key, []).append(client_per_op)
                            print(
                                f"rep {rep + 1} workers {workers} {transport:4} {workload:9} {run.rate:9.0f}/s"
                                f"  server {run.server_cpu:4.2f} cores ({per_op:.0f} us/op)"
                                f"  clients {run.client_cpu:4.2f} cores ({client_per_op:.0f} us/op)"
                                + (f" ({run.failed} failed)" if run.failed else ""),
                                flush=True,
                            )
                finally:
                    server.stop()
    print()
    print(f"{'':15} {'1 worker (A)':>26} {'2 workers (B)':>26}   B/A")
    for transport in transports:
        for workload in workloads:
            a, b = results[(1, transport, workload)], results[(2, transport, workload)]
            unit = "handshakes/s" if workload == "handshake" else "messages/s"
            ratio = statistics.median(b) / statistics.median(a) if statistics.median(a) else float("nan")
            print(f"{transport} {unit:12} {summary(a):>26} {summary(b):>26}   {ratio:.2f}x")
    print()
    for title, table in (("server", cpu_per_op), ("client", client_cpu_per_op)):
        print(f"{title} CPU per operation (us, in the window):")
        for transport in transports:
            for workload in workloads:
                a, b = table[(1, transport, workload)], table[(2, transport, workload)]
                print(f"{transport} {workload:12} {summary(a):>26} {summary(b):>26}")
    if failures:
        print(f"{failures} operations failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
