"""The ``mux bench`` command: run the A/B matrix with a progress bar, then the table, results files and plot."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mux.bench import matrix, report
from mux.bench.matrix import BenchConfig, BenchConfigError, RunSpec
from mux.bench.peer import LocalPeer, Peer
from mux.bench.runner import RunResult, run_matrix
from mux.bench.worker import RemotePeer
from mux.connection import ConnectionClosed
from mux.loop import run as run_loop

DEFAULT_CONFIG = Path("conf/ab.yaml")

T = TypeVar("T")

DESCRIPTION = """\
Run one behaviour (mux/behaviours/bench.py) over each transport through the userspace impairment proxy and compare
them: bulk goodput, request/response latency, parallel streams under loss (head-of-line blocking per stream against
one shared stream), handshake rate, unreliable messages, and how long a large message on one stream holds back small
ones on the others (interleave). The matrix (transports x impairment profiles x workloads x repetitions) comes from a
YAML file; runs alternate A B A B so machine drift hits both alike, and each figure is the median with min and max.

Writes results.json (every run and the summary), results.csv (the summary) and bench.png (goodput against loss,
latency CDF) under --out. The server and proxy run in a worker process of their own (so they do not share the
client's event loop) unless the file says server: inprocess or --inprocess is given."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", nargs="?", default=None, help=f"matrix file (default: {DEFAULT_CONFIG} if it exists, else built in)"
    )
    parser.add_argument("--quick", action="store_true", help="the tiny version from the file's quick: section")
    parser.add_argument(
        "--out", default="bench-results", type=Path, help="directory for results (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=None, help="the proxy's base seed (default: from the file)")
    parser.add_argument("--repetitions", type=int, default=None, help="runs per transport and cell")
    parser.add_argument("--transport", action="append", help="only this transport (repeatable)")
    parser.add_argument("--profile", action="append", help="only this profile (repeatable)")
    parser.add_argument("--workload", action="append", help="only this workload (repeatable)")
    parser.add_argument("--inprocess", action="store_true", help="run server and proxy on the client's event loop")
    parser.add_argument("--no-plot", action="store_true", help="skip bench.png")


def load_config(args: argparse.Namespace) -> BenchConfig:
    if args.config is not None:
        config = matrix.load(args.config)
    elif DEFAULT_CONFIG.exists():
        config = matrix.load(DEFAULT_CONFIG)
    else:
        config = matrix.default_config()
    if args.repetitions is not None and args.repetitions < 1:
        raise BenchConfigError("--repetitions: at least 1")
    config = matrix.narrow(
        config,
        transports=args.transport,
        profiles=args.profile,
        workloads=args.workload,
        repetitions=args.repetitions,
        seed=args.seed,
    )
    if args.quick:
        config = matrix.quick_version(config)
    if args.inprocess:
        config = config.model_copy(update={"server": "inprocess"})
    return config


def results_document(
    config: BenchConfig, runs: list[RunResult], started: datetime.datetime, seconds: float, quick: bool
) -> dict[str, Any]:
    """The JSON results: the config, each profile's impairment, every run, and the summary."""
    workloads = [name for name, _ in config.workloads.enabled()]
    profiles = [p.name for p in config.profiles]
    run_dicts = [r.as_dict() for r in runs]
    mtu = config.packet.udp_payload if config.packet.enforce and not config.packet.pmtud else None
    return {
        "mux_bench": 1,
        "started": started.isoformat(timespec="seconds"),
        "seconds": seconds,
        "quick": quick,
        "host": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "config": config.model_dump(mode="json"),
        "transports": list(config.transports),
        "workloads": workloads,
        "profile_names": profiles,
        "profiles": [
            {"name": p.name, "up": asdict(p.impairment("up", mtu)), "down": asdict(p.impairment("down", mtu))}
            for p in config.profiles
        ],
        "runs": run_dicts,
        "summary": report.summarise(run_dicts, workloads, profiles, list(config.transports)),
    }


def _json_safe(value: Any) -> Any:
    """NaN is not JSON: missing figures become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _quiet_failed_connects(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """``mux.client.connect`` leaves an unretrieved ConnectionClosed behind when a handshake times out; the bench
    has already counted that as a failed handshake, so it is not printed through the progress bar."""
    if isinstance(context.get("exception"), ConnectionClosed) and "never retrieved" in str(context.get("message")):
        return
    loop.default_exception_handler(context)


async def _run(config: BenchConfig, out: Path, progress: Progress) -> list[RunResult]:
    asyncio.get_running_loop().set_exception_handler(_quiet_failed_connects)
    peer: Peer = LocalPeer() if config.server == "inprocess" else RemotePeer(out / "worker.log")
    total = len(matrix.plan(config))
    task = progress.add_task("starting", total=total)

    def on_start(spec: RunSpec) -> None:
        progress.update(
            task, description=f"{spec.workload:<9} {spec.profile:<12} {spec.transport:<5} rep {spec.rep + 1}"
        )

    def on_done(spec: RunSpec, result: RunResult) -> None:
        progress.advance(task)
        if result.status in ("error", "timeout"):
            progress.console.print(
                f"[yellow]{spec.workload} {spec.profile} {spec.transport} rep {spec.rep + 1}: "
                f"{result.status}[/] {result.note}"
            )

    try:
        return await run_matrix(config, peer, on_start, on_done)
    finally:
        await peer.close()
        progress.update(task, description="done")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
    except BenchConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"bench: cannot create {out}: {exc}", file=sys.stderr)
        return 2
    # warnings (a self-signed certificate, connections closed at stop) would tear through the progress bar
    logging.getLogger("mux").setLevel(logging.ERROR)
    console = Console()
    status = Console(stderr=True)
    started = datetime.datetime.now(datetime.UTC)
    began = time.monotonic()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=status, transient=False) as progress:

        async def main() -> list[RunResult]:
            return await _run(config, out, progress)

        try:
            runs = run_loop(main())
        except KeyboardInterrupt:
            return 130
    results = results_document(config, runs, started, time.monotonic() - began, args.quick)
    (out / "results.json").write_text(json.dumps(_json_safe(results), indent=1) + "\n")
    report.write_csv(results, out / "results.csv")
    report.print_tables(results, console)
    written = [out / "results.json", out / "results.csv"]
    if not args.no_plot:
        report.write_plot(results, out / "bench.png")
        written.append(out / "bench.png")
    errors = [r for r in runs if r.status == "error"]
    status.print(f"{len(runs)} runs in {time.monotonic() - began:.1f} s; wrote {', '.join(map(str, written))}")
    if errors:
        status.print(f"[red]{len(errors)} run(s) failed with an error[/] (see the table and results.json)")
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to the ``mux`` command."""
    parser = subparsers.add_parser(
        "bench",
        help="compare transports with one behaviour through the impairment proxy",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mux.bench", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
