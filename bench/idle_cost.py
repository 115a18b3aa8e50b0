"""What an idle SCTP association costs the server: memory, and CPU for its HEARTBEATs.

``mux serve`` (its own process, one SCTP listener) takes ``--count`` associations from the Go load generator's
``idle`` workload (``bench/loadgen``: each association answers HEARTBEATs and does nothing else); once they are all
up, the server's resident memory is read, and its CPU time over a ``--seconds`` window. Printed: the memory per
association (the RSS growth over the server with none, divided by the count) and the share of a core the idle
associations take, for each ``--count``, each repeated ``--reps`` times (median [min..max]).

With the default ``hbinterval`` of 30 s each association is probed every 30 s plus its RTO, jittered by half,
so a window of 60 s sees about two probes per association; ``--hbinterval`` changes the server's.

Usage: python bench/idle_cost.py [--count 2000 --count 10000] [--seconds 60] [--reps 1] [--hbinterval 30000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.workers import build_loadgen  # noqa: E402

_SERVING = re.compile(r"SCTP port \d+ over UDP \('127\.0\.0\.1', (\d+)\)")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(loadgen: Path, count: int, seconds: float, hbinterval: int) -> tuple[float, float, int]:
    """(bytes per association, share of a core, associations up) for one fresh server."""
    with tempfile.TemporaryDirectory(prefix="mux-idle-") as tmp:
        conf = Path(tmp, "idle.yaml")
        conf.write_text(
            "behaviour: mux.behaviours.echo:Echo\nlogging: {level: info}\npool: {max_connections: 100000, "
            f"num_acceptors: 1000}}\nlisteners:\n  - {{transport: sctp, host: 127.0.0.1, port: 0, "
            f"hbinterval: {hbinterval}}}\n"
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "mux.cli", "serve", str(conf), "--log-level", "info"],
            cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            assert server.stderr is not None
            port = 0
            for line in server.stderr:
                found = _SERVING.search(line)
                if found:
                    port = int(found[1])
                    break
            # the server logs two lines per connection: drain them, or a full pipe stops it
            threading.Thread(target=lambda: [None for _ in server.stderr or ()], daemon=True).start()
            time.sleep(1.0)
            base = rss_kib(server.pid)
            setup = 1.5 + count / 1500  # the handshakes, 32 at a time
            start = time.time() + setup
            load = subprocess.Popen(
                [str(loadgen), "-transport=sctp", "-workload=idle", f"-addr=127.0.0.1:{port}", "-sctp-port=7",
                 f"-start-at={start:.6f}", f"-seconds={seconds}", f"-concurrency={count}"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(max(0.0, start - time.time()))
            grown = rss_kib(server.pid) - base
            cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
            out = load.communicate(timeout=seconds + 60)[0]
            up = int(json.loads(out.strip().splitlines()[-1])["ok"])
        finally:
            server.terminate()
            server.wait(30)
    return grown * 1024 / max(up, 1), (cpu1 - cpu0) / (t1 - t0), up


def summary(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}..{max(values):{fmt}}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, action="append", help="idle associations (repeatable; default 2000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="the CPU window, once all are up")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--hbinterval", type=int, default=30_000, help="the server's hbinterval, ms")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mux-loadgen-") as build:
        try:
            loadgen, _quic = build_loadgen(Path(build))
        except (OSError, RuntimeError) as exc:
            print(f"needs Go (apt-get install golang-go): {exc}", file=sys.stderr)
            return 2
        print(f"idle SCTP associations against mux serve; hbinterval {args.hbinterval} ms, {args.seconds:g} s window")
        for count in args.count or [2000]:
            per, cpu, ups = [], [], []
            for _ in range(args.reps):
                b, c, up = one_run(loadgen, count, args.seconds, args.hbinterval)
                per.append(b)
                cpu.append(c * 100)
                ups.append(up)
            print(
                f"{count:6d} associations (up: {min(ups)}..{max(ups)}): {summary(per, '.0f')} bytes each, "
                f"{summary(cpu, '.2f')} % of a core"
            )
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    sys.exit(main())
