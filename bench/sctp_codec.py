"""Micro-benchmark of the SCTP wire codec: parse and build rates, packets per second.

Cases: a 1200-byte packet carrying one DATA chunk; a packet of 8 small (64-byte) DATA chunks; a SACK with 4 gaps
(and no duplicates). "build" serialises from chunk objects (DATA and SACK encoders plus CRC), "build-cached" from
pre-encoded chunk bytes (the retransmit path), "parse" includes CRC verification. Each figure is the median
[min..max] over --reps runs of --seconds each, cases interleaved so machine noise hits them alike.
Usage: python bench/sctp_codec.py [--reps 5] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mux.sctp.chunks import DataChunk, SackChunk  # noqa: E402
from mux.sctp.packet import COMMON_HEADER, parse_packet, serialize_packet  # noqa: E402

# 1200-byte UDP payload: 12 common header + 16 DATA header + 1172 user data.
ONE_DATA = [DataChunk(1000, 1, 7, 51, b"x" * (1200 - 12 - 16))]
EIGHT_DATA = [DataChunk(2000 + i, i % 3, i, 51, b"m" * 64) for i in range(8)]
SACK4 = [SackChunk(5000, 1 << 20, [(2, 3), (5, 9), (12, 12), (20, 31)], [])]
CASES: dict[str, list[Any]] = {"1x DATA 1200B": ONE_DATA, "8x DATA 64B": EIGHT_DATA, "SACK 4 gaps": SACK4}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5)
    args = ap.parse_args()

    ops: dict[tuple[str, str], Callable[[], object]] = {}
    for name, chunks in CASES.items():
        wire = serialize_packet(5000, 9899, 0xA1B2C3D4, chunks)
        assert parse_packet(wire).chunks == chunks
        cached = [c.serialize() for c in chunks]
        ops[(name, "build")] = lambda c=chunks: serialize_packet(5000, 9899, 0xA1B2C3D4, c)  # type: ignore[misc]
        ops[(name, "build-cached")] = lambda c=cached: serialize_packet(5000, 9899, 0xA1B2C3D4, c)  # type: ignore[misc]
        ops[(name, "parse")] = lambda w=wire: parse_packet(w)  # type: ignore[misc]
        ops[(name, "parse-nocrc")] = lambda w=wire: parse_packet(w, check_crc=False)  # type: ignore[misc]
        print(f"{name}: {len(wire)} bytes on the wire ({len(wire) - COMMON_HEADER.size} of chunks)")

    results: dict[tuple[str, str], list[float]] = {k: [] for k in ops}
    for _ in range(args.reps):
        for key, fn in ops.items():
            results[key].append(rate(fn, args.seconds))

    print(f"\n{'case':<16}{'op':<14}{'packets/s median':>18}  [min..max]")
    for (name, op), rs in results.items():
        print(f"{name:<16}{op:<14}{statistics.median(rs):>18,.0f}  [{min(rs):,.0f}..{max(rs):,.0f}]")


if __name__ == "__main__":
    main()
