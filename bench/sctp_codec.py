"""Micro-benchmark of the SCTP wire codec: parse and build rates, packets per second.

Cases: a 1200-byte packet carrying one DATA chunk; a packet of 8 small (64-byte) DATA chunks; a SACK with 4 gaps
(and no duplicates); and, where the checkout has them (RFC 8260), the same two data packets as I-DATA and an
I-FORWARD-TSN with 4 entries. "build" serialises from chunk objects (encoders plus CRC), "build-cached" from
pre-encoded chunk bytes (the retransmit path), "parse" includes CRC verification. Each figure is the median
[min..max] over --reps runs of --seconds each, cases interleaved so machine noise hits them alike.

To compare checkouts, give each with ``--mux-path``: each runs in its own process, alternating A B A B, and the
ratio of the medians is printed::

    python bench/sctp_codec.py --mux-path /tmp/base --mux-path . --op parse

Usage: python bench/sctp_codec.py [--reps 5] [--seconds 0.5] [--op parse ...] [--mux-path P ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OPS = ("build", "build-cached", "parse", "parse-nocrc")


def cases() -> dict[str, list[Any]]:
    from mux.sctp import chunks as C

    out: dict[str, list[Any]] = {
        # 1200-byte UDP payload: 12 common header + 16 DATA header + 1172 user data.
        "1x DATA 1200B": [C.DataChunk(1000, 1, 7, 51, b"x" * (1200 - 12 - 16))],
        "8x DATA 64B": [C.DataChunk(2000 + i, i % 3, i, 51, b"m" * 64) for i in range(8)],
        "SACK 4 gaps": [C.SackChunk(5000, 1 << 20, [(2, 3), (5, 9), (12, 12), (20, 31)], [])],
    }
    idata = getattr(C, "IDataChunk", None)
    if idata is not None:  # a checkout without RFC 8260 runs the cases it has
        out["1x I-DATA 1200B"] = [idata(1000, 1, 7, 51, 0, b"x" * (1200 - 12 - 20))]
        out["8x I-DATA 64B"] = [idata(2000 + i, i % 3, i, 0, 1 + i, b"m" * 64, False, False) for i in range(8)]
        out["I-FWD-TSN 4"] = [
            C.IForwardTsnChunk(5000, [(1, False, 9), (2, True, 4), (3, False, 1 << 20), (7, True, 0)])
        ]
    return out


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of `fn`, timed in batches so the clock is read rarely."""
    batch = 1000
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def measure(ops_wanted: list[str], reps: int, seconds: float, verbose: bool) -> dict[str, list[float]]:
    """Rates per "case|op", ``reps`` runs each, interleaved."""
    from mux.sctp.packet import COMMON_HEADER, parse_packet, serialize_packet

    ops: dict[str, Callable[[], object]] = {}
    for name, chunks in cases().items():
        wire = serialize_packet(5000, 9899, 0xA1B2C3D4, chunks)
        assert parse_packet(wire).chunks == chunks
        cached = [c.serialize() for c in chunks]
        table: dict[str, Callable[[], object]] = {
            "build": partial(serialize_packet, 5000, 9899, 0xA1B2C3D4, chunks),
            "build-cached": partial(serialize_packet, 5000, 9899, 0xA1B2C3D4, cached),
            "parse": partial(parse_packet, wire),
            "parse-nocrc": partial(parse_packet, wire, check_crc=False),
        }
        for op in ops_wanted:
            ops[f"{name}|{op}"] = table[op]
        if verbose:
            print(f"{name}: {len(wire)} bytes on the wire ({len(wire) - COMMON_HEADER.size} of chunks)")
    results: dict[str, list[float]] = {k: [] for k in ops}
    for _ in range(reps):
        for key, fn in ops.items():
            results[key].append(rate(fn, seconds))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--op", action="append", choices=OPS, help="only these operations (repeatable)")
    ap.add_argument("--mux-path", action="append", default=[], help="checkout to measure (repeat for A/B)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    ops_wanted = args.op or list(OPS)

    if args.child:  # one rep in this process's mux (PYTHONPATH), as JSON
        print(json.dumps(measure(ops_wanted, 1, args.seconds, False)))
        return
    if not args.mux_path:
        sys.path.insert(0, str(ROOT))
        results = measure(ops_wanted, args.reps, args.seconds, True)
        print(f"\n{'case':<18}{'op':<14}{'packets/s median':>18}  [min..max]")
        for key, rs in results.items():
            name, op = key.split("|")
            print(f"{name:<18}{op:<14}{statistics.median(rs):>18,.0f}  [{min(rs):,.0f}..{max(rs):,.0f}]")
        return

    paths = args.mux_path
    runs: dict[str, dict[str, list[float]]] = {p: {} for p in paths}
    for _ in range(args.reps):
        for path in paths:  # alternating A B A B
            env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--seconds", str(args.seconds)]
            for op in ops_wanted:
                cmd += ["--op", op]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd="/").stdout
            for key, rs in json.loads(out).items():
                runs[path].setdefault(key, []).extend(rs)
    keys = list(dict.fromkeys(k for p in paths for k in runs[p]))
    print(f"packets/s, median [min..max] of {args.reps} runs of {args.seconds} s")
    for key in keys:
        name, op = key.split("|")
        line = f"  {name:<18}{op:<13}"
        med: dict[str, float] = {}
        for path in paths:
            xs = runs[path].get(key)
            if not xs:
                line += f"  {path}: {'-':>10}"
                continue
            med[path] = statistics.median(xs)
            line += f"  {path}: {med[path]:>10,.0f} [{min(xs):,.0f}..{max(xs):,.0f}]"
        if len(paths) == 2 and len(med) == 2:
            a, b = paths
            line += f"  {b}/{a}: {med[b] / med[a]:.3f}x"
        print(line)


if __name__ == "__main__":
    main()
