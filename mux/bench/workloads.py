"""The client side of each workload: connect through the proxy, run ``BenchClient``, turn seconds into figures.

Every workload returns an ``Outcome`` of named figures (units in the name) and, where they make a CDF, the latency
samples in milliseconds. A transport that cannot do a workload raises ``Unavailable``; nothing is simulated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from mux.behaviours.bench import BenchClient, BenchError, Unavailable, clock
from mux.bench.matrix import Bulk, Datagrams, Handshake, Interleave, Parallel, RequestResponse, WorkloadName
from mux.bench.stats import percentile
from mux.client import connect
from mux.connection import Connection

log = logging.getLogger("mux.bench")

CLOSE_WAIT = 1.0

__all__ = ["METRICS", "RUNNERS", "Metric", "Outcome", "Target", "Unavailable", "run_workload"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how the client connects: the proxy's URL and the transport's client options."""

    transport: str
    url: str
    options: dict[str, Any]
    #: the largest UDP payload either transport sends (``packet.udp_payload``): what one full packet carries
    udp_payload: int = 1200


@dataclass(slots=True)
class Outcome:
    metrics: dict[str, float]
    #: latency samples (ms) for the CDF; only the request/response workload keeps them
    samples: list[float] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    #: shown in the terminal table (every metric goes to the results files)
    shown: bool = True


METRICS: dict[WorkloadName, tuple[Metric, ...]] = {
    "bulk": (
        Metric("goodput_mbit_s", "goodput", "Mbit/s", True),
        Metric("seconds", "transfer time", "s", False, shown=False),
        Metric("bytes", "bytes delivered", "B", True, shown=False),
    ),
    "rr": (
        Metric("p50_ms", "p50", "ms", False),
        Metric("p90_ms", "p90", "ms", False),
        Metric("p99_ms", "p99", "ms", False),
        Metric("requests", "requests", "", True, shown=False),
    ),
    "parallel": (
        Metric("p50_ms", "p50 stream each", "ms", False, shown=False),
        Metric("p90_ms", "p90 stream each", "ms", False),
        Metric("p99_ms", "p99 stream each", "ms", False),
        Metric("shared_p50_ms", "p50 one stream", "ms", False, shown=False),
        Metric("shared_p90_ms", "p90 one stream", "ms", False),
        Metric("shared_p99_ms", "p99 one stream", "ms", False),
    ),
    "handshake": (
        Metric("conn_per_s", "rate", "conn/s", True),
        Metric("p50_ms", "p50", "ms", False),
        Metric("failed", "failed", "", False, shown=False),
    ),
    "datagrams": (
        Metric("delivered_pct", "delivered", "%", True),
        Metric("p50_ms", "p50", "ms", False),
        Metric("p99_ms", "p99", "ms", False, shown=False),
    ),
    "interleave": (
        Metric("idle_p50_ms", "p50 idle", "ms", False),
        Metric("idle_p99_ms", "p99 idle", "ms", False),
        Metric("busy_p50_ms", "p50 busy", "ms", False),
        Metric("busy_p99_ms", "p99 busy", "ms", False),
        Metric("added_p50_ms", "added p50", "ms", False),
        Metric("added_p99_ms", "added p99", "ms", False),
        Metric("added_p50_packets", "added p50", "packets", False, shown=False),
        Metric("added_p99_packets", "added p99", "packets", False),
        Metric("pieces_p50_ms", "p50 pieces", "ms", False, shown=False),
        Metric("pieces_p99_ms", "p99 pieces", "ms", False),
        Metric("hol_p50_ms", "hol p50", "ms", False, shown=False),
        Metric("hol_p99_ms", "hol p99", "ms", False),
        Metric("hol_p50_packets", "hol p50", "packets", False, shown=False),
        Metric("hol_p99_packets", "hol p99", "packets", False),
        Metric("transfer_ms", "transfer", "ms", False),
        Metric("pieces_transfer_ms", "transfer pieces", "ms", False, shown=False),
        Metric("packet_ms", "packet time", "ms", False, shown=False),
        Metric("message_mbit_s", "message goodput", "Mbit/s", True, shown=False),
        Metric("idle_records", "records idle", "", True, shown=False),
        Metric("pieces_records", "records pieces", "", True, shown=False),
        Metric("busy_records", "records busy", "", True, shown=False),
    ),
}


async def close_quietly(conn: Connection, graceful: bool = True) -> None:
    """Close gracefully, but never wait long: under heavy loss a graceful close can take many RTOs."""
    if graceful:
        conn.close(0, "bench done")
        try:
            await asyncio.wait_for(conn.wait_closed(), CLOSE_WAIT)
            return
        except TimeoutError:
            pass
    if conn.state != "closed":
        conn._tconn.abort("bench: done")  # Connection has no public abort yet
        try:
            await asyncio.wait_for(conn.wait_closed(), CLOSE_WAIT)
        except TimeoutError:
            log.warning("%r did not close", conn)


@asynccontextmanager
async def session(target: Target, timeout: float = 10.0) -> AsyncIterator[BenchClient]:
    client = BenchClient()
    conn = await connect(client, target.url, options=target.options, timeout=timeout)
    try:
        yield client
    finally:
        await close_quietly(conn, graceful=not client.abandon)


def _latency(prefix: str, rtts: list[float]) -> dict[str, float]:
    ms = [r * 1000.0 for r in rtts]
    return {f"{prefix}p{q}_ms": percentile(ms, q) for q in (50, 90, 99)}


async def bulk(target: Target, params: Bulk) -> Outcome:
    async with session(target) as client:
        counted, seconds = await client.upload(params.bytes, params.chunk, params.max_seconds)
    return Outcome({"goodput_mbit_s": counted * 8 / seconds / 1e6, "seconds": seconds, "bytes": float(counted)})


async def rr(target: Target, params: RequestResponse) -> Outcome:
    async with session(target) as client:
        rtts = await client.echo_flows(1, 1, params.requests, params.size, params.max_seconds)
    metrics = _latency("", rtts)
    metrics["requests"] = float(len(rtts))
    return Outcome(metrics, samples=[r * 1000.0 for r in rtts])


async def parallel(target: Target, params: Parallel) -> Outcome:
    """The same flows twice, on fresh connections: one stream each, then all on one stream."""
    flows = params.streams
    interval = params.interval_ms / 1000.0
    count = int(params.max_seconds / interval) + 1
    async with session(target) as client:
        own = await client.echo_flows(flows, flows, count, params.size, params.max_seconds, interval)
    async with session(target) as client:
        shared = await client.echo_flows(1, flows, count, params.size, params.max_seconds, interval)
    return Outcome(_latency("", own) | _latency("shared_", shared))


async def handshake(target: Target, params: Handshake) -> Outcome:
    """Connect (timed until the handshake is done) and close, ``concurrency`` at a time."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failures: list[str] = []
    closing: list[asyncio.Task[None]] = []
    remaining = iter(range(params.connections))

    async def worker() -> None:
        for _ in remaining:
            begun = clock()
            try:
                conn = await connect(BenchClient, target.url, options=target.options, timeout=params.connect_timeout_s)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(clock() - begun)
            closing.append(loop.create_task(close_quietly(conn)))

    start = clock()
    try:
        await asyncio.gather(*(worker() for _ in range(min(params.concurrency, params.connections))))
        elapsed = clock() - start
    finally:
        if closing:
            await asyncio.wait(closing)
    if not latencies:  # a path too lossy to connect over at all: a timeout, not a bench error
        raise TimeoutError(f"no handshake completed: {failures[0] if failures else 'no attempt'}")
    metrics = {"conn_per_s": len(latencies) / elapsed, "failed": float(len(failures))}
    metrics["p50_ms"] = percentile([x * 1000.0 for x in latencies], 50)
    note = f"{len(failures)} of {params.connections} failed: {failures[0]}" if failures else ""
    return Outcome(metrics, note=note)


async def datagrams(target: Target, params: Datagrams) -> Outcome:
    async with session(target) as client:
        sent, rtts = await client.datagrams(params.count, params.size, params.interval_ms / 1000.0, params.drain_s)
    metrics = {"delivered_pct": 100.0 * len(rtts) / sent}
    latency = _latency("", rtts)
    metrics["p50_ms"], metrics["p99_ms"] = latency["p50_ms"], latency["p99_ms"]
    return Outcome(metrics)


async def interleave(target: Target, params: Interleave) -> Outcome:
    """Small records' round trips alone, beside a large message cut into pieces, and beside it whole.

    Added (busy - idle) is everything the message costs the records, the queue it builds along the path included;
    held back (busy - pieces) is what they lose because it is one message, on the same connection and path. Both
    are also given in packet times: divided by the time one full packet (``udp_payload`` bytes) of the message
    took at the message's own measured rate, the unit of RFC 8260's promise (with I-DATA a small message waits
    for about one packet of a large one at most).
    """
    async with session(target) as client:
        run = await client.interleave(
            params.streams,
            params.size,
            params.interval_ms / 1000.0,
            params.idle_seconds,
            params.message,
            params.piece,
            params.settle_seconds,
        )
    counts = {"idle": len(run.idle), "pieces": len(run.pieces), "busy": len(run.busy)}
    if not all(counts.values()):
        raise BenchError(f"a phase without records: {counts}; send them more often (interval_ms)")
    metrics: dict[str, float] = {}
    for phase, rtts in (("idle", run.idle), ("pieces", run.pieces), ("busy", run.busy)):
        ms = [r * 1000.0 for r in rtts]
        metrics[f"{phase}_p50_ms"] = percentile(ms, 50)
        metrics[f"{phase}_p99_ms"] = percentile(ms, 99)
        metrics[f"{phase}_records"] = float(len(rtts))
    packet_ms = run.transfer * 1000.0 * target.udp_payload / params.message
    for name, baseline in (("added", "idle"), ("hol", "pieces")):
        for q in ("p50", "p99"):
            delay = metrics[f"busy_{q}_ms"] - metrics[f"{baseline}_{q}_ms"]
            metrics[f"{name}_{q}_ms"] = delay
            metrics[f"{name}_{q}_packets"] = delay / packet_ms
    metrics |= {
        "transfer_ms": run.transfer * 1000.0,
        "pieces_transfer_ms": run.pieces_transfer * 1000.0,
        "packet_ms": packet_ms,
        "message_mbit_s": params.message * 8 / run.transfer / 1e6,
    }
    return Outcome(metrics)


Runner = Callable[[Target, Any], Awaitable[Outcome]]

RUNNERS: dict[WorkloadName, Runner] = {
    "bulk": bulk,
    "rr": rr,
    "parallel": parallel,
    "handshake": handshake,
    "datagrams": datagrams,
    "interleave": interleave,
}


async def run_workload(name: WorkloadName, target: Target, params: Any) -> Outcome:
    return await RUNNERS[name](target, params)
