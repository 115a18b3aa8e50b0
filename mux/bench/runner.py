"""Runs the matrix in order, one run at a time: far end up, workload under a timeout, far end down, record it.

A run ends as ``ok``, ``timeout`` (the workload's ``timeout_s`` passed: a stuck transport cannot hang the matrix),
``unavailable`` (the transport is not installed or cannot do the workload) or ``error`` (anything else, with the
message). Whatever happens, the next run starts from a fresh server and proxy. Before each run the bench process
and the worker collect their garbage and freeze what survives (``quiet_gc``), so no full collection of either
process's long-lived objects stalls a measurement.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mux import registry
from mux.bench.matrix import BenchConfig, RunSpec, client_options, listener_options, plan
from mux.bench.peer import Peer, PeerSpec, quiet_gc
from mux.bench.workloads import Target, Unavailable, run_workload

log = logging.getLogger("mux.bench")

Status = Literal["ok", "timeout", "error", "unavailable"]


@dataclass(slots=True)
class RunResult:
    transport: str
    profile: str
    workload: str
    rep: int
    seed: int
    status: Status
    #: wall time of the whole run, far end included
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    samples: list[float] = field(default_factory=list)
    note: str = ""
    #: the proxy's counters and the server pool's totals
    peer: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _peer_spec(config: BenchConfig, spec: RunSpec) -> PeerSpec:
    profile = config.profile(spec.profile)
    mtu = config.packet.udp_payload if config.packet.enforce and not config.packet.pmtud else None
    up = profile.impairment("up", mtu)
    down = profile.impairment("down", mtu)
    return PeerSpec(
        transport=spec.transport,
        listener=listener_options(config, spec.transport),
        up=asdict(up),
        down=asdict(down),
        seed=spec.seed,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_one(config: BenchConfig, spec: RunSpec, peer: Peer) -> RunResult:
    began = time.monotonic()

    def result(status: Status, **extra: Any) -> RunResult:
        return RunResult(
            spec.transport, spec.profile, spec.workload, spec.rep, spec.seed, status, time.monotonic() - began, **extra
        )

    if spec.transport not in registry.plugins():
        return result("unavailable", note=f"transport {spec.transport!r} is not installed")
    params = getattr(config.workloads, spec.workload)
    try:
        host, port = await peer.start(_peer_spec(config, spec))
    except Exception as exc:
        await _stop(peer)
        return result("error", note=f"far end did not start: {_describe(exc)}")
    target = Target(
        spec.transport,
        f"{spec.transport}://{host}:{port}",
        client_options(config, spec.transport),
        config.packet.udp_payload,
    )
    status: Status = "ok"
    note = ""
    metrics: dict[str, float] = {}
    samples: list[float] = []
    try:
        outcome = await asyncio.wait_for(run_workload(spec.workload, target, params), params.timeout_s)
    except TimeoutError as exc:
        status, note = "timeout", str(exc) or f"no result within {params.timeout_s:g} s"
    except Unavailable as exc:
        status, note = "unavailable", str(exc)
    except Exception as exc:
        status, note = "error", _describe(exc)
    else:
        metrics, samples, note = outcome.metrics, outcome.samples, outcome.note
    stats = await _stop(peer)
    oversized = sum(stats.get("proxy", {}).get(d, {}).get("dropped_mtu", 0) for d in ("up", "down"))
    if oversized:
        note = "; ".join(filter(None, (note, f"{oversized} packets over the packet size dropped")))
    return result(status, metrics=metrics, samples=samples, note=note, peer=stats)


async def _stop(peer: Peer) -> dict[str, Any]:
    try:
        return await peer.stop()
    except Exception as exc:
        log.error("stopping the far end failed: %s", _describe(exc))
        return {"stop_error": _describe(exc)}


async def run_matrix(
    config: BenchConfig,
    peer: Peer,
    on_start: Callable[[RunSpec], None] | None = None,
    on_done: Callable[[RunSpec, RunResult], None] | None = None,
) -> list[RunResult]:
    results: list[RunResult] = []
    try:
        for spec in plan(config):
            if on_start is not None:
                on_start(spec)
            quiet_gc()
            outcome = await run_one(config, spec, peer)
            results.append(outcome)
            if on_done is not None:
                on_done(spec, outcome)
    finally:
        gc.unfreeze()  # the process may go on (a test, a caller): leave its collector as it was
    return results
