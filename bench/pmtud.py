"""Bulk goodput over loopback with path MTU discovery (RFC 8899) against the fixed-size default, on both transports.

One server process (``mux.behaviours.bench:BenchServer``) has, per transport, a listener held at the fixed base size
(QUIC: 1200-byte datagrams; SCTP: ``pmtu`` 1280) with discovery off (``maximum_mtu`` at the base), and one with the
defaults (discovery on). This process's client uploads ``--mb`` MiB on one stream per connection (a new connection
per run, so the search's climb is part of what is measured), for at most ``--seconds``, to each in turn:
fixed, pmtud, fixed, pmtud... Both ends of a run use the same setting.

Prints, per transport and mode, goodput in Mbit/s and the server's CPU time per MiB received, as median [min..max]
over ``--reps`` runs, the PMTU the client ended at, and the ratio pmtud / fixed (goodput; CPU is fixed / pmtud).
Usage: python bench/pmtud.py [--reps 5] [--mb 64] [--seconds 3] [--transport quic --transport sctp]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mux import config as cfg  # noqa: E402
from mux.behaviours.bench import BenchClient  # noqa: E402
from mux.client import connect  # noqa: E402
from mux.server import Server  # noqa: E402
from tests.raw_peers import cpu_seconds  # noqa: E402

MODES = ("fixed", "pmtud")
#: what holds each transport at its base size
FIXED = {"quic": {"max_datagram_size": 1200, "maximum_mtu": 1228}, "sctp": {"pmtu": 1280, "maximum_mtu": 1280}}


def listeners() -> list[dict[str, Any]]:
    out = []
    for transport in ("quic", "sctp"):
        for mode in MODES:
            lst: dict[str, Any] = {
                "transport": transport,
                "host": "127.0.0.1",
                "port": 0,
                "name": f"{transport}_{mode}",
            }
            if transport == "quic":
                lst["alpn"] = ["bench"]
            if mode == "fixed":
                lst.update(FIXED[transport])
            out.append(lst)
    return out


def serve(pipe: Pipe) -> None:
    """The server process: start, send the listeners' ports, run until the pipe closes."""

    async def main() -> None:
        data = {
            "behaviour": "mux.behaviours.bench:BenchServer",
            "listeners": listeners(),
            "logging": {"level": "error"},
        }
        server = Server(cfg.parse(data, "<bench/pmtud.py>"))
        await server.start()
        pipe.send({lst["name"]: server.listener(lst["name"]).address[1] for lst in listeners()})
        loop = asyncio.get_running_loop()
        closed = loop.create_future()
        loop.add_reader(pipe.fileno(), lambda: closed.done() or closed.set_result(None))
        await closed
        await server.stop()

    asyncio.run(main())


async def run_once(
    transport: str, mode: str, port: int, pid: int, total: int, seconds: float
) -> tuple[float, float, Any]:
    """Goodput (Mbit/s), server CPU ms per MiB, and the client's PMTU at the end."""
    options: dict[str, Any] = dict(FIXED[transport]) if mode == "fixed" else {}
    if transport == "quic":
        options.update(alpn=["bench"], verify="none")
    client = BenchClient()
    conn = await connect(client, f"{transport}://127.0.0.1:{port}", options=options)
    cpu0 = cpu_seconds(pid)
    counted, elapsed = await client.upload(total, 16384, seconds)
    cpu = cpu_seconds(pid) - cpu0
    stats = conn.stats()
    conn.close()
    await asyncio.sleep(0.2)  # let the close go out before the next run
    return counted * 8 / elapsed / 1e6, cpu * 1000 / (counted / (1 << 20)), stats["mtu"]


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}..{max(values):.1f}]"


async def main(args: argparse.Namespace) -> None:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(child,), daemon=True)
    proc.start()
    ports = parent.recv()
    assert proc.pid is not None
    results: dict[tuple[str, str], list[tuple[float, float, Any]]] = {}
    total = args.mb << 20
    try:
        for rep in range(args.reps):
            for transport in args.transport:
                for mode in MODES:
                    r = await run_once(transport, mode, ports[f"{transport}_{mode}"], proc.pid, total, args.seconds)
                    results.setdefault((transport, mode), []).append(r)
                    print(f"  rep {rep + 1} {transport} {mode}: {r[0]:.0f} Mbit/s, {r[1]:.1f} ms CPU/MiB, mtu {r[2]}")
    finally:
        parent.close()
        proc.join(10)
    print(f"\nbulk over loopback, {args.mb} MiB for at most {args.seconds} s, {args.reps} runs, A/B alternated")
    print(f"{'':12} {'goodput Mbit/s':>26} {'server CPU ms/MiB':>26}  mtu")
    for transport in args.transport:
        for mode in MODES:
            rs = results[(transport, mode)]
            print(
                f"{transport} {mode:7} {summary([r[0] for r in rs]):>26} {summary([r[1] for r in rs]):>26}  {rs[-1][2]}"
            )
        fixed, found = results[(transport, "fixed")], results[(transport, "pmtud")]
        ratio = statistics.median(r[0] for r in found) / statistics.median(r[0] for r in fixed)
        cpu = statistics.median(r[1] for r in fixed) / statistics.median(r[1] for r in found)
        print(f"{transport} pmtud / fixed: goodput {ratio:.2f}x, server CPU per MiB {cpu:.2f}x less")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--transport", action="append", choices=["quic", "sctp"])
    args = parser.parse_args()
    args.transport = args.transport or ["quic", "sctp"]
    started = time.perf_counter()
    asyncio.run(main(args))
    print(f"({time.perf_counter() - started:.0f} s)")
