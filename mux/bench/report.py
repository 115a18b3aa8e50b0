"""What a matrix run leaves behind: a summary per figure, the terminal table, results.json/csv and the plot.

Everything here works from the JSON-able results document, so a plot or table can be redrawn from results.json.
Each figure is the median of its repetitions with min and max; B is compared with A as a ratio of medians.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mux.bench.stats import ratio, spread
from mux.bench.workloads import METRICS

SUMMARY_FIELDS = ("workload", "profile", "metric", "unit", "transport", "median", "min", "max", "ok", "runs", "status")


def summarise(
    runs: Iterable[dict[str, Any]], workloads: Sequence[str], profiles: Sequence[str], transports: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per workload x profile x metric x transport: median/min/max over its ``ok`` runs."""
    by_cell: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        by_cell.setdefault((run["workload"], run["profile"], run["transport"]), []).append(run)
    rows: list[dict[str, Any]] = []
    for workload in workloads:
        for profile in profiles:
            for metric in METRICS[workload]:  # type: ignore[index]
                for transport in transports:
                    cell = by_cell.get((workload, profile, transport), [])
                    ok = [r for r in cell if r["status"] == "ok"]
                    values = [float(r["metrics"][metric.key]) for r in ok if metric.key in r["metrics"]]
                    median, low, high = spread(values)
                    statuses = Counter(r["status"] for r in cell if r["status"] != "ok")
                    status = "ok" if ok else (statuses.most_common(1)[0][0] if statuses else "missing")
                    rows.append(
                        {
                            "workload": workload,
                            "profile": profile,
                            "metric": metric.key,
                            "unit": metric.unit,
                            "transport": transport,
                            "median": median,
                            "min": low,
                            "max": high,
                            "ok": len(ok),
                            "runs": len(cell),
                            "status": status,
                        }
                    )
    return rows


def number(value: float) -> str:
    """About three significant figures, never in exponent form."""
    if math.isnan(value):
        return "-"
    size = abs(value)
    if size >= 100 or value == 0:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cell(row: dict[str, Any], footnotes: dict[str, int]) -> str:
    if not row["ok"]:
        key = f"{row['workload']}/{row['transport']}/{row['status']}"
        mark = f" [dim]({footnotes[key]})[/]" if key in footnotes else ""
        return f"[yellow]{row['status']}[/]{mark}"
    text = number(row["median"])
    if row["ok"] > 1:
        text += " [dim]" + escape(f"[{number(row['min'])}-{number(row['max'])}]") + "[/]"
    failed = row["runs"] - row["ok"]
    if failed:
        text += f" [red]{failed}/{row['runs']} failed[/]"
    return text


def tables(results: dict[str, Any]) -> list[tuple[Table, list[str]]]:
    """One table per workload (a row per profile and shown figure, a column per transport, B/A ratios), with the
    footnotes that say why a cell has no figure."""
    transports: list[str] = results["transports"]
    rows = {(r["workload"], r["profile"], r["metric"], r["transport"]): r for r in results["summary"]}
    reps = results["config"]["repetitions"]
    out: list[tuple[Table, list[str]]] = []
    for workload in results["workloads"]:
        footnotes: dict[str, int] = {}
        texts: list[str] = []
        for run in results["runs"]:
            if run["workload"] == workload and run["status"] != "ok" and run["note"]:
                key = f"{workload}/{run['transport']}/{run['status']}"
                if key not in footnotes:
                    footnotes[key] = len(footnotes) + 1
                    texts.append(f"({footnotes[key]}) {run['transport']} {run['status']}: {run['note']}")
        table = Table(
            title=escape(f"{workload}: median [min-max] of {reps} run{'s' if reps != 1 else ''}, A B alternated"),
            title_justify="left",
            title_style="bold",
        )
        table.add_column("profile", no_wrap=True)
        table.add_column("figure", no_wrap=True)
        for transport in transports:
            table.add_column(transport, justify="right")
        for other in transports[1:]:
            table.add_column(f"{other}/{transports[0]}", justify="right", no_wrap=True)
        shown = [m for m in METRICS[workload] if m.shown]
        for p_index, profile in enumerate(results["profile_names"]):
            for m_index, metric in enumerate(shown):
                arrow = "↑" if metric.higher_is_better else "↓"
                cells = [rows[(workload, profile, metric.key, t)] for t in transports]
                ratios = []
                for cell in cells[1:]:
                    value = ratio(cell["median"], cells[0]["median"]) if cell["ok"] and cells[0]["ok"] else math.nan
                    if cell["median"] < 0 or cells[0]["median"] < 0:
                        value = math.nan  # a difference of two figures (interleave's added, hol): no "times"
                    ratios.append("-" if math.isnan(value) else f"{value:.2f}")
                unit = f" {metric.unit}" if metric.unit else ""
                table.add_row(
                    profile if m_index == 0 else "",
                    f"{arrow} {metric.label}{unit}",
                    *(_cell(c, footnotes) for c in cells),
                    *ratios,
                    end_section=m_index == len(shown) - 1 and p_index < len(results["profile_names"]) - 1,
                )
        out.append((table, texts))
    return out


def print_tables(results: dict[str, Any], console: Console) -> None:
    for table, footnotes in tables(results):
        console.print(table)
        for text in footnotes:
            console.print(escape(text), style="dim", highlight=False)
        console.print()


def write_csv(results: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        for row in results["summary"]:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})


def _profile_axes(results: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Profile -> (loss % of the client -> server direction, added RTT in ms)."""
    out: dict[str, tuple[float, float]] = {}
    for profile in results["profiles"]:
        up, down = profile["up"], profile["down"]
        out[profile["name"]] = (100.0 * float(up["loss"]), float(up["delay_ms"]) + float(down["delay_ms"]))
    return out


def write_plot(results: dict[str, Any], path: Path) -> None:
    """Goodput against loss per transport (a line per added RTT), and the request/response latency CDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    transports: list[str] = results["transports"]
    axes_of = _profile_axes(results)
    styles = ("-", "--", ":", "-.")
    markers = ("o", "s", "^", "D")
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))

    goodput = [r for r in results["summary"] if r["workload"] == "bulk" and r["metric"] == "goodput_mbit_s"]
    for t_index, transport in enumerate(transports):
        groups: dict[float, list[tuple[float, float, float, float]]] = {}
        for row in goodput:
            if row["transport"] != transport or not row["ok"]:
                continue
            loss, rtt = axes_of[row["profile"]]
            groups.setdefault(rtt, []).append((loss, row["median"], row["min"], row["max"]))
        for g_index, (rtt, points) in enumerate(sorted(groups.items())):
            points.sort()
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            errors = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
            left.errorbar(
                xs,
                ys,
                yerr=errors,
                linestyle=styles[g_index % len(styles)],
                marker=markers[t_index % len(markers)],
                color=f"C{t_index}",
                capsize=3,
                label=f"{transport}, +{rtt:g} ms RTT",
            )
    left.set_xlabel("loss per direction (%)")
    left.set_ylabel("goodput (Mbit/s), median with min-max")
    left.set_title("bulk goodput against loss")
    medians = [r["median"] for r in goodput if r["ok"] and r["median"] > 0]
    if medians and max(medians) > 20 * min(medians):
        left.set_yscale("log")  # a transport ten times slower would sit flat on the axis
    else:
        left.set_ylim(bottom=0)
    left.grid(True, which="both", alpha=0.3)
    if goodput:
        left.legend(fontsize="small")

    drawn = False
    for p_index, profile in enumerate(results["profile_names"]):
        for t_index, transport in enumerate(transports):
            samples = sorted(
                s
                for run in results["runs"]
                if run["workload"] == "rr"
                and run["status"] == "ok"
                and run["profile"] == profile
                and run["transport"] == transport
                for s in run["samples"]
                if s > 0
            )
            if not samples:
                continue
            ys = [(i + 1) / len(samples) for i in range(len(samples))]
            right.step(
                samples,
                ys,
                where="post",
                color=f"C{p_index}",
                linestyle=styles[t_index % len(styles)],
                label=f"{transport}, {profile}",
            )
            drawn = True
    right.set_xscale("log")
    right.set_xlabel("request/response round trip (ms)")
    right.set_ylabel("fraction of requests")
    right.set_title("request/response latency CDF")
    right.grid(True, which="both", alpha=0.3)
    if drawn:
        right.legend(fontsize="small", ncol=2)
    config = results["config"]
    fig.suptitle(
        f"mux bench: {' vs '.join(transports)}, {config['packet']['udp_payload']}-byte UDP payloads, "
        f"{config['repetitions']} repetition(s)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
