"""What an idle SCTP association (or QUIC connection) costs the server: memory, and CPU for its keep-alives.

``mux serve`` (its own process, one SCTP listener) takes ``--count`` associations from the Go load generator's
``idle`` workload (``bench/loadgen``: each association answers HEARTBEATs and does nothing else); once they are all
up, the server's resident memory is read, and its CPU time over a ``--seconds`` window. Printed: the memory per
association (the RSS growth over the server with none, divided by the count) and the share of a core the idle
associations take, for each ``--count``, each repeated ``--reps`` times (median [min..max]).

With the default ``hbinterval`` of 30 s each association is probed every 30 s plus its RTO, jittered by half,
so a window of 60 s sees about two probes per association; ``--hbinterval`` changes the server's.

``--transport quic``: the same for idle QUIC connections, each from its own UDP socket, kept open by quic-go's
keep-alive (a PING every 15 s, half the 30 s idle timeout both sides announce; the server's ``idle_timeout_ms`` is
left at 30 s), against ``mux serve`` (one QUIC listener, mux's defaults otherwise: path MTU discovery on) and
against a plain aioquic server in its own process (``bench/quic_vs_aioquic.py``'s ``RawEcho`` and
``raw_server_config``: the same certificate and settings), alternating mux and raw within the run; printed for each,
and what mux adds per connection over aioquic.

Usage: python bench/idle_cost.py [--transport sctp|quic] [--count 2000 --count 10000] [--seconds 60] [--reps 1]
       [--hbinterval 30000]
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
from tests.raw_peers import cpu_seconds  # noqa: E402

_SERVING = re.compile(r"SCTP port \d+ over UDP \('127\.0\.0\.1', (\d+)\)")
_SERVING_QUIC = re.compile(r"QUIC on \('127\.0\.0\.1', (\d+)\)")
_RAW_READY = re.compile(r"raw aioquic on (\d+)")
#: the QUIC settings both servers share (``bench/quic_vs_aioquic.py``'s)
QUIC_CONF = (
    "behaviour: mux.behaviours.echo:Echo\nlogging: {{level: info}}\npool: {{max_connections: 100000, "
    "num_acceptors: 1000}}\nlisteners:\n  - {{transport: quic, host: 127.0.0.1, port: 0, alpn: [echo], "
    "certfile: {certfile}, keyfile: {keyfile}, max_datagram_size: {max_datagram_size}, "
    "congestion_control_algorithm: {congestion_control_algorithm}, "
    "conn_flow_control_window: {conn_flow_control_window}, stream_recv_window_default: {stream_recv_window_default}, "
    "idle_timeout_ms: {idle_timeout_ms}}}\n"
)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def one_run(loadgen: Path, count: int, seconds: float, hbinterval: int) -> tuple[float, float, int]:
    """(bytes per association, share of a core, associations up) for one fresh server."""
    with tempfile.TemporaryDirectory(prefix="mux-idle-") as tmp:
        conf = Path(tmp, "idle.yaml")
        conf.write_text(
            "behaviour: mux.behaviours.echo:Echo\nlogging: {level: info}\npool: {max_connections: 100000, "
            f"num_acceptors: 1000}}\nlisteners:\n  - {{transport: sctp, host: 127.0.0.1, port: 0, "
            f"hbinterval: {hbinterval}}}\n"
        )
        command = [sys.executable, "-m", "mux.cli", "serve", str(conf), "--log-level", "info"]
        load = ["-transport=sctp", "-workload=idle", "-sctp-port=7"]
        return measure(loadgen, command, _SERVING, load, count, seconds, 1.5 + count / 1500)  # 32 at a time


def one_quic_run(
    loadgen: Path, server: str, count: int, seconds: float, cert: tuple[str, str]
) -> tuple[float, float, int]:
    """(bytes per connection, share of a core, connections up) for one fresh server: ``mux`` or ``raw`` aioquic."""
    with tempfile.TemporaryDirectory(prefix="mux-idle-") as tmp:
        if server == "mux":
            from bench.quic_vs_aioquic import SETTINGS

            conf = Path(tmp, "idle.yaml")
            conf.write_text(QUIC_CONF.format(certfile=cert[0], keyfile=cert[1], **SETTINGS))
            command = [sys.executable, "-m", "mux.cli", "serve", str(conf), "--log-level", "info"]
            ready = _SERVING_QUIC
        else:
            command = [sys.executable, __file__, "--serve-raw-quic", *cert]
            ready = _RAW_READY
        # a full handshake costs the server ~1-2 ms of CPU, the client about as much, on the same cores
        return measure(loadgen, command, ready, ["-transport=quic", "-workload=idle"], count, seconds, 3 + count / 250)


def measure(
    loadgen: Path, command: list[str], ready: re.Pattern[str], load: list[str], count: int, seconds: float, setup: float
) -> tuple[float, float, int]:
    """Start the server (``command``, which says its port on stderr as ``ready`` matches), read its RSS, have the load
    generator hold ``count`` idle connections from ``setup`` seconds on, and read the RSS again and the CPU over
    ``seconds``."""
    server = subprocess.Popen(
        command, cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    try:
        assert server.stderr is not None
        port = 0
        for line in server.stderr:
            found = ready.search(line)
            if found:
                port = int(found[1])
                break
        # the server logs two lines per connection: drain them, or a full pipe stops it
        threading.Thread(target=lambda: [None for _ in server.stderr or ()], daemon=True).start()
        time.sleep(1.0)
        base = rss_kib(server.pid)
        start = time.time() + setup
        generator = subprocess.Popen(
            [str(loadgen), *load, f"-addr=127.0.0.1:{port}", f"-start-at={start:.6f}", f"-seconds={seconds}",
             f"-concurrency={count}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        up_at: list[float] = []

        def watch() -> None:
            for line in generator.stderr or ():
                if "idle connections up" in line:
                    up_at.append(time.time())
                else:
                    sys.stderr.write(line)

        threading.Thread(target=watch, daemon=True).start()
        time.sleep(max(0.0, start - time.time()))
        grown = rss_kib(server.pid) - base
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
        out = generator.communicate(timeout=seconds + 60)[0]
        up = int(json.loads(out.strip().splitlines()[-1])["ok"])
        if up_at and up_at[0] > start:
            print(
                f"  (the set-up took {up_at[0] - start:.1f} s longer than the {setup:.0f} s allowed)", file=sys.stderr
            )
    finally:
        server.terminate()
        server.wait(30)
    return grown * 1024 / max(up, 1), (cpu1 - cpu0) / (t1 - t0), up


def summary(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}..{max(values):{fmt}}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=("sctp", "quic"), default="sctp")
    parser.add_argument("--count", type=int, action="append", help="idle associations (repeatable; default 2000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="the CPU window, once all are up")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--hbinterval", type=int, default=30_000, help="SCTP: the server's hbinterval, ms")
    parser.add_argument("--serve-raw-quic", nargs=2, metavar=("CERT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_raw_quic:
        from bench.quic_vs_aioquic import run_raw_server

        run_raw_server(0, *args.serve_raw_quic)
        return 0
    with tempfile.TemporaryDirectory(prefix="mux-loadgen-") as build:
        try:
            loadgen, quic = build_loadgen(Path(build))
        except (OSError, RuntimeError) as exc:
            print(f"needs Go (apt-get install golang-go): {exc}", file=sys.stderr)
            return 2
        if args.transport == "quic":
            if not quic:
                print(
                    "needs quic-go's sources (apt-get install golang-github-lucas-clemente-quic-go-dev)",
                    file=sys.stderr,
                )
                return 2
            return quic_main(loadgen, args)
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


def quic_main(loadgen: Path, args: argparse.Namespace) -> int:
    from mux.quic.certs import self_signed

    cert = tuple(str(p) for p in self_signed("127.0.0.1"))
    assert len(cert) == 2
    print(
        f"idle QUIC connections (quic-go keep-alive every 15 s) against mux serve and raw aioquic, alternating; "
        f"{args.seconds:g} s window"
    )
    for count in args.count or [2000]:
        results: dict[str, tuple[list[float], list[float], list[int]]] = {"mux": ([], [], []), "raw": ([], [], [])}
        for rep in range(args.reps):
            for server in ("mux", "raw") if rep % 2 == 0 else ("raw", "mux"):
                b, c, up = one_quic_run(loadgen, server, count, args.seconds, (cert[0], cert[1]))
                per, cpu, ups = results[server]
                per.append(b)
                cpu.append(c * 100)
                ups.append(up)
        for server, (per, cpu, ups) in results.items():
            print(
                f"{count:6d} connections, {server} (up: {min(ups)}..{max(ups)}): {summary(per, '.0f')} bytes each, "
                f"{summary(cpu, '.2f')} % of a core"
            )
        mux, raw = results["mux"][0], results["raw"][0]
        added = [m - r for m, r in zip(mux, raw, strict=True)]  # each rep's pair, run back to back
        print(
            f"{count:6d} connections: mux adds {summary(added, '.0f')} bytes each over aioquic's "
            f"{statistics.median(raw):.0f} ({statistics.median(mux) / statistics.median(raw):.2f}x)"
        )
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    sys.exit(main())
