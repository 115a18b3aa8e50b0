"""``mux bench``: the matrix file, the run order, the statistics, timeouts, and one quick run end to end.

The end-to-end run goes through ``mux.cli.main`` with the worker process, over every registered transport, and
checks the files and that the figures respond to the impairments the way physics says they must: 5% loss lowers
goodput, and 10 ms of delay each way puts every request/response round trip above 20 ms. No other time is asserted.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from behaviours.bench import COUNT, HEADER, MAGIC, MODE_ECHO, BenchClient, BenchError, _Sink
from mux import cli, registry
from mux.bench import matrix
from mux.bench.matrix import BenchConfigError, RunSpec
from mux.bench.peer import LocalPeer
from mux.bench.report import summarise, tables
from mux.bench.runner import run_one
from mux.bench.stats import percentile, ratio, spread
from mux.bench.workloads import METRICS
from mux.client import connect
from mux.sctp.options import SctpOptions
from tests.apps import Client
from tests.conftest import TRANSPORTS, ServerFactory, client_target, listener

ROOT = Path(__file__).resolve().parents[1]
AB = ROOT / "conf" / "ab.yaml"

# -- statistics -----------------------------------------------------------------------------------------------------


def test_percentile_matches_the_inclusive_method() -> None:
    values = [7.0, 1.0, 3.0, 9.0, 4.0, 12.0, 2.0]
    quantiles = statistics.quantiles(values, n=100, method="inclusive")
    for q in (1, 10, 25, 50, 90, 99):
        assert percentile(values, q) == pytest.approx(quantiles[q - 1])
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 12.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_spread_is_median_min_max_and_skips_missing() -> None:
    assert spread([5.0, 1.0, math.nan, 3.0]) == (3.0, 1.0, 5.0)
    assert spread([2.0, 4.0]) == (3.0, 2.0, 4.0)
    assert all(math.isnan(v) for v in spread([math.nan]))
    assert ratio(6.0, 3.0) == 2.0
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))


def _run(transport: str, profile: str, status: str, value: float | None, rep: int = 0) -> dict[str, Any]:
    metrics = {"goodput_mbit_s": value, "seconds": 1.0, "bytes": 1.0} if value is not None else {}
    return {
        "transport": transport,
        "profile": profile,
        "workload": "bulk",
        "rep": rep,
        "status": status,
        "metrics": metrics,
        "note": "",
    }


def test_summary_counts_only_runs_that_finished() -> None:
    runs = [
        _run("quic", "clean", "ok", 10.0),
        _run("quic", "clean", "ok", 30.0, 1),
        _run("quic", "clean", "timeout", None, 2),
        _run("sctp", "clean", "unavailable", None),
        _run("sctp", "clean", "unavailable", None, 1),
    ]
    rows = summarise(runs, ["bulk"], ["clean"], ["quic", "sctp"])
    goodput = {r["transport"]: r for r in rows if r["metric"] == "goodput_mbit_s"}
    assert goodput["quic"]["median"] == 20.0
    assert (goodput["quic"]["min"], goodput["quic"]["max"]) == (10.0, 30.0)
    assert (goodput["quic"]["ok"], goodput["quic"]["runs"], goodput["quic"]["status"]) == (2, 3, "ok")
    assert goodput["sctp"]["status"] == "unavailable"
    assert goodput["sctp"]["ok"] == 0
    assert math.isnan(goodput["sctp"]["median"])


def test_no_ratio_of_a_negative_difference() -> None:
    # interleave's added and hol are differences of two percentiles: noise can take them below zero
    def run(transport: str, busy: float, hol: float) -> dict[str, Any]:
        metrics = dict.fromkeys((m.key for m in METRICS["interleave"]), 1.0)
        metrics.update(busy_p99_ms=busy, hol_p99_ms=hol)
        return {"transport": transport, "profile": "clean", "workload": "interleave", "status": "ok",
                "metrics": metrics, "note": ""}  # fmt: skip

    runs = [run("quic", 10.0, -2.0), run("sctp", 30.0, 20.0)]
    results = {
        "transports": ["quic", "sctp"],
        "workloads": ["interleave"],
        "profile_names": ["clean"],
        "config": {"repetitions": 1},
        "runs": runs,
        "summary": summarise(runs, ["interleave"], ["clean"], ["quic", "sctp"]),
    }
    [(table, _)] = tables(results)
    labels = list(table.columns[1]._cells)
    ratios = list(table.columns[-1]._cells)
    assert ratios[labels.index("↓ p99 busy ms")] == "3.00"
    assert ratios[labels.index("↓ hol p99 ms")] == "-"
    assert table.columns[2]._cells[labels.index("↓ hol p99 ms")] == "-2.00"


# -- the matrix file --------------------------------------------------------------------------------------------------


def test_runs_alternate_a_and_b_with_the_same_seed() -> None:
    config = matrix.load(AB)
    runs = matrix.plan(config)
    cells = len(config.profiles) * len(config.workloads.enabled()) * config.repetitions
    assert len(runs) == cells * len(config.transports)
    assert [r.transport for r in runs[:6]] == ["quic", "sctp"] * 3
    for a, b in zip(runs[::2], runs[1::2], strict=True):
        assert (a.transport, b.transport) == ("quic", "sctp")
        assert (a.profile, a.workload, a.rep, a.seed) == (b.profile, b.workload, b.rep, b.seed)
    assert len({r.seed for r in runs}) == cells  # each repetition of each cell meets its own draws


def test_ab_yaml_covers_three_profiles_and_every_workload() -> None:
    config = matrix.load(AB)
    assert config.transports == ["quic", "sctp"]
    assert len(config.profiles) >= 3
    assert [name for name, _ in config.workloads.enabled()] == list(matrix.WORKLOAD_NAMES)
    quick = matrix.quick_version(config)
    assert quick.repetitions == 1
    assert {p.name for p in quick.profiles} == {"clean", "loss5", "rtt20"}
    assert quick.workloads.bulk is not None and config.workloads.bulk is not None
    assert quick.workloads.bulk.bytes < config.workloads.bulk.bytes
    assert quick.workloads.bulk.chunk == config.workloads.bulk.chunk  # merged, not replaced


def test_built_in_matrix_is_ab_yaml() -> None:
    # ``mux bench`` with no file and no conf/ab.yaml around runs the same matrix
    assert matrix.default_config() == matrix.load(AB)


def test_packet_size_is_one_number_for_both_transports() -> None:
    config = matrix.load(AB)
    udp = config.packet.udp_payload
    assert matrix.client_options(config, "quic")["max_datagram_size"] == udp
    assert matrix.listener_options(config, "quic")["max_datagram_size"] == udp
    # SCTP's pmtu is an IP MTU: 20 bytes of IPv4 and 8 of UDP on top of the same UDP payload
    assert matrix.client_options(config, "sctp")["pmtu"] == udp + 28
    assert matrix.listener_options(config, "sctp")["pmtu"] == udp + 28
    impairment = config.profile("loss5").impairment("up", udp)
    assert (impairment.loss, impairment.mtu) == (0.05, udp)
    delayed = config.profile("rtt20")
    assert delayed.impairment("up").delay_ms + delayed.impairment("down").delay_ms == 20.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"profiles": [{"name": "x", "loss": "5"}]}, "profiles[0].loss: '5' is out of range"),
        ({"profiles": [{"name": "x", "delay": 20}]}, "profiles[0].delay: '20' needs a unit"),
        ({"profiles": [{"name": "x", "up": {"los": "1%"}}]}, "profiles[0].up.los: unknown key"),
        ({"profiles": [{"name": "x"}, {"name": "x"}]}, "duplicate profile name 'x'"),
        ({"workloads": {"bulk": {"byte": 1}}}, "workloads.bulk.byte: unknown key"),
        ({"transport_options": {"sctp": {"pmtu": 1500}}}, "pmtu are set by the bench"),
        ({"transport_options": {"tcp": {}}}, "transport_options.tcp: not one of transports"),
        ({"quick": {"profiles": ["nope"]}}, "quick.profiles: no such profile: nope"),
        ({"packet": {"udp_payload": 1000}}, "packet.udp_payload"),
        # the interleave message must fit SCTP's buffers (1 MiB each by default), or the run could only abort
        ({"workloads": {"interleave": {"message": 1048576}}}, "transport_options.sctp.recbuf: 1048576 cannot hold"),
        (
            {
                "transport_options": {"sctp": {"recbuf": 4194304}},
                "workloads": {"interleave": {"message": 1048576}},
            },
            "transport_options.sctp.sndbuf: 1048576 cannot hold the interleave workload's 1048576-byte message; "
            "set it to at least 2097152",
        ),
        ({"workloads": {"interleave": {"piece": 1500}}}, "workloads.interleave.piece"),
    ],
)
def test_matrix_errors_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(BenchConfigError) as info:
        matrix.validate(data, "ab.yaml")
    assert str(info.value).startswith("ab.yaml: ")
    assert message in str(info.value)


def test_interleave_buffers_are_checked_only_where_sctp_runs() -> None:
    # the check's idea of SCTP's defaults is SCTP's own
    assert SctpOptions().recbuf == SctpOptions().sndbuf == matrix.SCTP_BUFFER_DEFAULT
    big = {"workloads": {"interleave": {"message": 1048576}}}
    assert matrix.validate({"transports": ["quic"], **big}, "<test>").workloads.interleave is not None
    ab = matrix.load(AB)
    assert ab.workloads.interleave is not None and ab.workloads.interleave.message == 1048576
    sctp = ab.transport_options["sctp"]
    assert sctp["recbuf"] >= 2 * 1048576 and sctp["sndbuf"] >= 2 * 1048576
    quick = matrix.quick_version(ab)
    assert quick.workloads.interleave is not None
    assert quick.workloads.interleave.message < ab.workloads.interleave.message
    assert quick.workloads.interleave.piece == ab.workloads.interleave.piece  # merged, not replaced


def test_bad_file_exits_2_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("repetitions: 0\n")
    assert cli.main(["bench", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert f"{bad}: repetitions:" in capsys.readouterr().err


# -- the behaviours and the runner ----------------------------------------------------------------------------------


async def test_bench_server_echoes_after_the_header_and_stops_strangers(
    make_server: ServerFactory, transport: str
) -> None:
    server = await make_server("behaviours.bench:BenchServer", [listener(transport)])
    url, options = client_target(server, transport)
    conn = await connect(Client, url, options=options)
    client = conn.behaviour
    assert isinstance(client, Client)
    stream = conn.open_stream()
    await stream.send(HEADER.pack(MAGIC, MODE_ECHO, 0) + b"x" * 20)
    while len(client.data.get(stream.id, b"")) < 20:
        await client.next("data")
    assert bytes(client.data[stream.id]) == b"x" * 20  # everything after the header, and nothing of it
    await conn.open_stream().send(HEADER.pack(b"HTTP", MODE_ECHO, 0))
    await client.next("shutdown")  # not a bench peer: the server closes the connection
    await client.next("closed")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_dead_path_ends_as_a_timeout_not_a_hang(transport: str) -> None:
    config = matrix.validate(
        {
            "transports": [transport],
            "profiles": [{"name": "dead", "loss": "100%"}],
            "workloads": {"rr": {"timeout_s": 0.5}},
        },
        "<test>",
    )
    peer = LocalPeer()
    try:
        result = await run_one(config, RunSpec(0, "dead", "rr", 0, transport, 1), peer)
    finally:
        await peer.close()
    assert result.status == "timeout"
    assert result.metrics == {}
    assert result.peer["proxy"]["up"]["dropped_loss"] > 0  # the client did try
    assert result.peer["proxy"]["down"]["received"] == 0


async def test_a_transport_that_is_not_installed_is_unavailable() -> None:
    config = matrix.validate({"transports": ["quic", "tcp"], "profiles": [{"name": "clean"}]}, "<test>")
    result = await run_one(config, RunSpec(0, "clean", "bulk", 0, "tcp", 1), LocalPeer())
    assert result.status == "unavailable"
    assert "not installed" in result.note


async def test_sink_reports_count_exactly_to_the_message() -> None:
    failures: list[Exception] = []
    sink = _Sink(1000, asyncio.get_running_loop().create_future(), failures.append)
    report = COUNT.pack(400) + COUNT.pack(1000)
    sink(report[:5])  # reports may arrive split anywhere
    assert sink.counted == 0 and not sink.done.done()
    sink(report[5:])
    assert sink.counted == 1000 and sink.done.done() and not failures
    sink(COUNT.pack(1001))  # more than was sent: the protocol is broken, not a figure
    assert len(failures) == 1 and isinstance(failures[0], BenchError)


def _interleave_config(transport: str, **params: Any) -> matrix.BenchConfig:
    workload = {"message": 131072, "idle_seconds": 0.1, "interval_ms": 1, "settle_seconds": 0.05, "timeout_s": 20}
    workload.update(params)
    return matrix.validate(
        {
            "transports": [transport],
            "transport_options": {"sctp": {"nodelay": True}} if transport == "sctp" else {},
            "profiles": [{"name": "clean"}],
            "workloads": {"interleave": workload},
        },
        "<test>",
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_interleave_runs_through_the_proxy_with_consistent_figures(transport: str) -> None:
    config = _interleave_config(transport)
    peer = LocalPeer()
    try:
        result = await run_one(config, RunSpec(0, "clean", "interleave", 0, transport, 1), peer)
    finally:
        await peer.close()
    assert result.status == "ok", result.note
    m = result.metrics
    assert set(m) == {metric.key for metric in METRICS["interleave"]}
    assert all(math.isfinite(v) for v in m.values()), m
    for phase in ("idle", "pieces", "busy"):
        assert 0 < m[f"{phase}_p50_ms"] <= m[f"{phase}_p99_ms"], (phase, m)
        assert m[f"{phase}_records"] >= 1
    assert m["transfer_ms"] > 0 and m["pieces_transfer_ms"] > 0
    # the differences and units are what they say, not separately measured numbers
    packet_ms = m["transfer_ms"] * config.packet.udp_payload / 131072
    assert m["packet_ms"] == pytest.approx(packet_ms)
    assert m["message_mbit_s"] == pytest.approx(131072 * 8 / m["transfer_ms"] / 1000)
    for q in ("p50", "p99"):
        assert m[f"added_{q}_ms"] == pytest.approx(m[f"busy_{q}_ms"] - m[f"idle_{q}_ms"])
        assert m[f"hol_{q}_ms"] == pytest.approx(m[f"busy_{q}_ms"] - m[f"pieces_{q}_ms"])
        assert m[f"added_{q}_packets"] == pytest.approx(m[f"added_{q}_ms"] / packet_ms)
        assert m[f"hol_{q}_packets"] == pytest.approx(m[f"hol_{q}_ms"] / packet_ms)
    # both transfers crossed the proxy, in packets no larger than the packet size
    up = result.peer["proxy"]["up"]
    assert up["bytes_received"] > 2 * 131072
    assert up["dropped_mtu"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_interleave_sinks_count_exactly_the_message(transport: str) -> None:
    config = _interleave_config(transport)
    peer = LocalPeer()
    try:
        host, port = await peer.start(
            {
                "transport": transport,
                "listener": matrix.listener_options(config, transport),
                "up": {},
                "down": {},
                "seed": 1,
            }
        )
        client = BenchClient()
        conn = await connect(client, f"{transport}://{host}:{port}", options=matrix.client_options(config, transport))
        run = await client.interleave(4, 64, 0.001, 0.05, 100_003, 1000, 0.0)
        conn.close()
        await conn.wait_closed()
    finally:
        await peer.close()
    assert run.counted == (100_003, 100_003)  # an odd size: the last piece is short, and nothing is counted twice
    assert run.idle and run.pieces and run.busy
    assert run.transfer > 0 and run.pieces_transfer > 0
    assert all(rtt > 0 for rtt in run.idle + run.pieces + run.busy)


# -- end to end -----------------------------------------------------------------------------------------------------


def _figure(summary: list[dict[str, Any]], workload: str, profile: str, metric: str, transport: str) -> float:
    [row] = [
        r
        for r in summary
        if (r["workload"], r["profile"], r["metric"], r["transport"]) == (workload, profile, metric, transport)
    ]
    assert row["ok"] >= 1, row
    return float(row["median"])


def test_quick_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    assert cli.main(["bench", str(AB), "--quick", "--out", str(out), "--seed", "7"]) == 0
    shown = capsys.readouterr().out
    for word in (*matrix.WORKLOAD_NAMES, "goodput", "hol p99", "quic", "sctp"):
        assert word in shown

    results = json.loads((out / "results.json").read_text())
    png = (out / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(results["summary"])
    interleave_keys = {metric.key for metric in METRICS["interleave"]}
    assert {r["metric"] for r in rows if r["workload"] == "interleave"} == interleave_keys

    transports = results["transports"]
    assert transports == ["quic", "sctp"]
    profiles = results["profile_names"]
    assert profiles == ["clean", "loss5", "rtt20"]
    runs = results["runs"]
    assert len(runs) == len(transports) * len(profiles) * len(matrix.WORKLOAD_NAMES)
    installed = set(registry.plugins())
    for run in runs:
        expected = "ok"
        if run["transport"] not in installed:
            expected = "unavailable"
        assert run["status"] == expected, run
        if expected == "unavailable":
            assert run["metrics"] == {} and run["note"]
            continue
        # both transports kept to the packet size: the proxy dropped nothing for being too long
        proxy = run["peer"]["proxy"]
        assert proxy["up"]["dropped_mtu"] == proxy["down"]["dropped_mtu"] == 0
        metrics = run["metrics"]
        assert all(math.isfinite(v) for v in metrics.values()), run
        # differences of two measured percentiles (interleave's added and hol) may come out below zero
        assert all(v >= 0 for k, v in metrics.items() if not k.startswith(("added_", "hol_"))), run
        if run["workload"] == "bulk":
            assert metrics["goodput_mbit_s"] > 0
            # and they filled their packets alike: bulk data went in (nearly) full-size datagrams
            assert 1000 < proxy["up"]["bytes_received"] / proxy["up"]["received"] <= 1200
        elif run["workload"] in ("rr", "parallel"):
            assert 0 < metrics["p50_ms"] <= metrics["p90_ms"] <= metrics["p99_ms"]
            assert run["workload"] != "rr" or len(run["samples"]) == metrics["requests"]
        elif run["workload"] == "handshake":
            assert metrics["conn_per_s"] > 0 and metrics["failed"] == 0
        elif run["workload"] == "datagrams":
            assert 0 < metrics["delivered_pct"] <= 100
        elif run["workload"] == "interleave":
            for phase in ("idle", "pieces", "busy"):
                assert 0 < metrics[f"{phase}_p50_ms"] <= metrics[f"{phase}_p99_ms"], run
            assert metrics["transfer_ms"] > 0 and metrics["busy_records"] >= 1

    summary = results["summary"]
    for transport in transports:
        if transport not in installed:
            continue
        # goodput falls as loss rises
        clean = _figure(summary, "bulk", "clean", "goodput_mbit_s", transport)
        lossy = _figure(summary, "bulk", "loss5", "goodput_mbit_s", transport)
        assert lossy < clean, (transport, clean, lossy)
        # latency rises with added delay: 10 ms each way adds 20 ms to every round trip
        for workload, metric in (
            ("rr", "p50_ms"),
            ("parallel", "p50_ms"),
            ("parallel", "shared_p50_ms"),
            ("interleave", "idle_p50_ms"),
        ):
            clean = _figure(summary, workload, "clean", metric, transport)
            delayed = _figure(summary, workload, "rtt20", metric, transport)
            assert delayed > clean + 10.0, (transport, workload, metric, clean, delayed)
    # a datagram only comes back if neither direction lost it: over SCTP too, where it is never retransmitted
    for transport in ("quic", "sctp"):
        if transport in installed:
            assert _figure(summary, "datagrams", "loss5", "delivered_pct", transport) < 100.0, transport
