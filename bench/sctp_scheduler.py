"""Per-chunk cost of the stream schedulers (mux/sctp/tx/scheduler.py) against the ``SendQueue`` they replaced
(tests/legacy_send_queue.py), in one run.

For each workload the queue is filled (``push``, timed per message), then drained the way the association's packet
loop drains it: read the next chunk where it lies (``active[0].chunks[0]`` for ``SendQueue``, ``head.chunks[0]``
for the schedulers) and ``take()`` it (timed per chunk). Candidates alternate within each repetition, so machine
noise hits them alike; each figure is the median [min..max] over --reps repetitions, in nanoseconds.

Workloads: one stream of 1-chunk messages (no scheduling at all); 8 and 64 streams of 1-chunk messages (a turn per
chunk either way); 8 streams of 8-chunk messages (turns per message without I-DATA, per chunk with it). All
streams have the same priority, so ``prio`` is round robin within one level and ``wfq`` fair queueing by bytes.

Usage: python bench/sctp_scheduler.py [--reps 7] [--chunks 20000] [--workload NAME ...]
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
sys.path.insert(0, str(ROOT / "tests"))

from legacy_send_queue import SendQueue  # noqa: E402

from mux.sctp.tx.scheduler import Scheduler  # noqa: E402
from mux.sctp.tx.schedulers import make_scheduler  # noqa: E402

FRAG = 1200 - 12 - 20  # an I-DATA chunk's payload in a 1200-byte packet
WORKLOADS = {
    # name: (streams, chunks per message)
    "1 stream, 1-chunk": (1, 1),
    "8 streams, 1-chunk": (8, 1),
    "64 streams, 1-chunk": (64, 1),
    "8 streams, 8-chunk": (8, 8),
}
CANDIDATES = [
    "SendQueue rr",
    "SendQueue fcfs",
    "rr",
    "rr +I-DATA",
    "fcfs",
    "prio",
    "prio +I-DATA",
    "wfq",
    "wfq +I-DATA",
]


def _make(candidate: str, streams: int) -> Any:
    if candidate.startswith("SendQueue"):
        return SendQueue(streams, FRAG, candidate.split()[1])  # type: ignore[arg-type]
    name, _, extra = candidate.partition(" ")
    return make_scheduler(name, streams, FRAG, idata=extra == "+I-DATA")


def _drain_send_queue(q: SendQueue) -> int:
    take, active = q.take, q.active
    n = 0
    while active:
        c = active[0].chunks[0]  # as the packet loop reads it
        if c is not take():
            raise AssertionError("take gave another chunk")
        n += 1
    return n


def _drain_scheduler(s: Scheduler) -> int:
    take = s.take
    n = 0
    while (head := s.head) is not None:
        c = head.chunks[0]  # as the packet loop would read it
        if c is not take():
            raise AssertionError("take gave another chunk")
        n += 1
    return n


def run_once(candidate: str, workload: str, chunks: int) -> tuple[float, float]:
    """(ns per push, ns per chunk drained) for one fill and drain."""
    streams, per_message = WORKLOADS[workload]
    q = _make(candidate, streams)
    messages = chunks // per_message
    data = bytes(FRAG * per_message if per_message > 1 else 100)
    push = q.push
    t0 = time.perf_counter_ns()
    for i in range(messages):
        push(i % streams, data, 0, False)
    t1 = time.perf_counter_ns()
    drain: Callable[[Any], int] = _drain_send_queue if isinstance(q, SendQueue) else _drain_scheduler
    n = drain(q)
    t2 = time.perf_counter_ns()
    if n != messages * per_message:
        raise AssertionError(f"{candidate}: drained {n} chunks of {messages * per_message}")
    return (t1 - t0) / messages, (t2 - t1) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--chunks", type=int, default=20_000)
    ap.add_argument("--workload", action="append", choices=list(WORKLOADS))
    args = ap.parse_args()
    workloads = args.workload or list(WORKLOADS)
    for workload in workloads:
        pushes: dict[str, list[float]] = {c: [] for c in CANDIDATES}
        takes: dict[str, list[float]] = {c: [] for c in CANDIDATES}
        for _ in range(args.reps):
            for candidate in CANDIDATES:
                p, t = run_once(candidate, workload, args.chunks)
                pushes[candidate].append(p)
                takes[candidate].append(t)
        base = statistics.median(takes["SendQueue rr"])
        print(f"\n{workload} ({args.chunks} chunks; ns, median [min..max] of {args.reps})")
        print(f"  {'candidate':<16}{'read+take per chunk':>30}{'vs SendQueue rr':>17}{'push per message':>30}")
        for candidate in CANDIDATES:
            ts, ps = takes[candidate], pushes[candidate]
            tm, pm = statistics.median(ts), statistics.median(ps)
            print(
                f"  {candidate:<16}{tm:>9.0f} [{min(ts):>6.0f}..{max(ts):>6.0f}]{'':>7}{tm / base:>10.2f}x"
                f"{pm:>15.0f} [{min(ps):>6.0f}..{max(ps):>6.0f}]"
            )


if __name__ == "__main__":
    main()
