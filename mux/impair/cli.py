"""The ``mux impair`` command (also ``python -m mux.impair``): run the impairment proxy from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mux.impair.model import JITTER_DISTRIBUTIONS, Impairment
from mux.impair.proxy import Address, ImpairProxy, ProxyStats, parse_address
from mux.loop import run as run_loop

DESCRIPTION = """\
A UDP proxy that adds loss, delay, jitter, reordering, duplication, a rate limit and an MTU between clients and
one server (QUIC and SCTP-over-UDP alike). Each client address gets its own upstream socket.

Every knob applies to both directions; --up-KNOB and --down-KNOB (e.g. --up-loss 2%, --down-delay 5ms) set it
for one direction only and win over --KNOB there. "up" is client -> server, "down" is server -> client.

Units: fractions as 1% or 0.01; times as 20ms, 1s, 500us; rates as 50mbit, 10Mbps (bits), 2MBps (bytes);
queue sizes as 64kb (1 kb = 1024 bytes), 1500 (bytes) or 100p (packets)."""

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"


def parse_fraction(text: str) -> float:
    """``1%`` or ``0.01`` -> 0.01."""
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1] if percent else raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction: write 1% or 0.01") from None
    if percent:
        value /= 100.0
    if not 0.0 <= value <= 1.0:
        hint = f"; did you mean {raw}%?" if not percent and 1.0 < value <= 100.0 else ""
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: between 0% and 100% (0 and 1){hint}")
    return value


_TIME_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_duration_ms(text: str) -> float:
    """``20ms``, ``1s``, ``500us`` -> milliseconds; a bare number is ambiguous, so only ``0`` goes without a unit."""
    match = re.fullmatch(_NUMBER + r"\s*(us|µs|ms|s)?", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write 20ms, 1s or 500us")
    value = float(match.group(1))
    unit = match.group(2)
    if unit is None:
        if value != 0.0:
            raise argparse.ArgumentTypeError(f"{text!r} needs a unit: 20ms, 1s or 500us")
        return 0.0
    result = value * _TIME_UNITS[unit]
    if not math.isfinite(result):
        raise argparse.ArgumentTypeError(f"{text!r} is too large")
    return result


_RATE_PREFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_rate_mbit(text: str) -> float:
    """``50mbit``, ``10Mbps``, ``500kbit`` (bits/s) or ``2MBps``, ``2MB/s`` (bytes/s) -> Mbit/s; prefixes are 1000s."""
    match = re.fullmatch(_NUMBER + r"\s*([kKmMgG]?)((?i:bit)|bps|b/s|Bps|B/s)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate: write 50mbit, 10Mbps or 2MBps")
    bits = float(match.group(1)) * _RATE_PREFIX[match.group(2).lower()]
    if match.group(3) in ("Bps", "B/s"):
        bits *= 8
    if not (bits > 0 and math.isfinite(bits)):
        raise argparse.ArgumentTypeError(f"{text!r}: the rate must be above 0")
    return bits / 1e6


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}
_PACKET_UNITS = ("p", "pkt", "pkts", "packets")


@dataclass(frozen=True, slots=True)
class QueueLimit:
    bytes: int | None
    packets: int | None


def parse_queue(text: str) -> QueueLimit:
    """``64kb``, ``1500`` (bytes) or ``100p`` (packets)."""
    match = re.fullmatch(_NUMBER + r"\s*([a-zA-Z]*)", text.strip())
    unit = match.group(2).lower() if match else ""
    if match is None or (unit not in _SIZE_UNITS and unit not in _PACKET_UNITS):
        raise argparse.ArgumentTypeError(f"{text!r} is not a queue size: write 64kb, 1500 (bytes) or 100p (packets)")
    if unit in _PACKET_UNITS:
        count = float(match.group(1))
        if count < 1 or count != int(count):
            raise argparse.ArgumentTypeError(f"{text!r}: a whole number of packets, at least 1")
        return QueueLimit(bytes=None, packets=int(count))
    size = round(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the queue must hold at least 1 byte")
    return QueueLimit(bytes=size, packets=None)


def parse_count(text: str) -> int:
    """A whole number >= 1 (MTU in bytes, packet limits)."""
    try:
        value = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def parse_jitter_dist(text: str) -> str:
    value = text.strip().lower()
    if value not in JITTER_DISTRIBUTIONS:
        raise argparse.ArgumentTypeError(f"{text!r}: choose one of {', '.join(JITTER_DISTRIBUTIONS)}")
    return value


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0 seconds")
    return value


@dataclass(frozen=True, slots=True)
class Knob:
    flag: str
    field: str  # the Impairment field it sets ("" for --queue, which sets two)
    parse: Callable[[str], Any]
    help: str


KNOBS = (
    Knob("loss", "loss", parse_fraction, "random loss, e.g. 1%%"),
    Knob(
        "ge-p",
        "ge_good_to_bad",
        parse_fraction,
        "bursty loss (Gilbert-Elliott): chance per datagram of good -> bad (p); 0 = off",
    ),
    Knob("ge-r", "ge_bad_to_good", parse_fraction, "Gilbert-Elliott: chance of bad -> good (r); bursts last 1/r"),
    Knob("ge-loss-good", "ge_loss_good", parse_fraction, "Gilbert-Elliott: loss in the good state, 1-k (default 0%%)"),
    Knob("ge-loss-bad", "ge_loss_bad", parse_fraction, "Gilbert-Elliott: loss in the bad state, 1-h (default 100%%)"),
    Knob("delay", "delay_ms", parse_duration_ms, "added one-way delay, e.g. 20ms"),
    Knob("jitter", "jitter_ms", parse_duration_ms, "delay jitter (never reorders by itself), e.g. 5ms"),
    Knob(
        "jitter-dist", "jitter_dist", parse_jitter_dist, "uniform: delay +- jitter (default); normal: jitter = std dev"
    ),
    Knob("reorder", "reorder", parse_fraction, "share of datagrams held back so later ones overtake, e.g. 1%%"),
    Knob(
        "reorder-delay", "reorder_delay_ms", parse_duration_ms, "how long a reordered one is held back (default 10ms)"
    ),
    Knob("duplicate", "duplicate", parse_fraction, "share of datagrams sent twice, e.g. 0.5%%"),
    Knob("rate", "rate_mbit", parse_rate_mbit, "rate limit, e.g. 50mbit; unlimited by default"),
    Knob("queue", "", parse_queue, "rate limiter's tail-drop queue: 64kb or 100p (default 1000p)"),
    Knob("mtu", "mtu", parse_count, "drop datagrams longer than this many bytes of UDP payload"),
    Knob("limit", "limit_packets", parse_count, "most datagrams held at once per direction (default 20000)"),
)


_METAVARS: dict[Callable[[str], Any], str] = {
    parse_fraction: "FRAC",
    parse_duration_ms: "TIME",
    parse_rate_mbit: "RATE",
    parse_queue: "SIZE",
    parse_count: "N",
    parse_jitter_dist: "DIST",
}


def _dest(direction: str, flag: str) -> str:
    return f"{direction}_{flag.replace('-', '_')}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", required=True, metavar="HOST:PORT", help="HOST:PORT to receive clients on (port 0: any)"
    )
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT", help="HOST:PORT of the server")
    parser.add_argument("--seed", type=int, default=1, help="random seed; the same traffic gives the same result")
    parser.add_argument(
        "--stats-interval", type=parse_seconds, default=10.0, help="seconds between stats lines; 0 = only on exit"
    )
    parser.add_argument("--json", action="store_true", help="print stats as JSON lines")
    parser.add_argument("--idle-timeout", type=parse_seconds, default=60.0, help="forget idle clients after (s)")
    parser.add_argument("--max-clients", type=parse_count, default=1024, help="most client mappings at once")
    both = parser.add_argument_group("impairments (both directions)")
    for knob in KNOBS:
        metavar = _METAVARS.get(knob.parse, "X")
        both.add_argument(
            f"--{knob.flag}", dest=_dest("all", knob.flag), type=knob.parse, metavar=metavar, help=knob.help
        )
    per = parser.add_argument_group(
        "per direction", "every knob above also as --up-KNOB (client -> server) and --down-KNOB (server -> client)"
    )
    for direction in ("up", "down"):
        for knob in KNOBS:
            per.add_argument(
                f"--{direction}-{knob.flag}", dest=_dest(direction, knob.flag), type=knob.parse, help=argparse.SUPPRESS
            )


def settings_for(args: argparse.Namespace, direction: str) -> Impairment:
    """The Impairment of ``direction`` ("up"/"down"); raises ValueError when the combination is invalid."""

    def pick(flag: str) -> Any:
        value = getattr(args, _dest(direction, flag), None)
        return value if value is not None else getattr(args, _dest("all", flag), None)

    kwargs: dict[str, Any] = {}
    for knob in KNOBS:
        value = pick(knob.flag)
        if value is None:
            continue
        if isinstance(value, QueueLimit):
            kwargs["queue_bytes"] = value.bytes
            kwargs["queue_packets"] = value.packets
        else:
            kwargs[knob.field] = value
    return Impairment(**kwargs)


def format_stats(stats: ProxyStats) -> str:
    parts = []
    for name, s in (("up", stats.up), ("down", stats.down)):
        parts.append(
            f"{name}: rx {s.received} ({s.bytes_received} B) tx {s.delivered} ({s.bytes_delivered} B) "
            f"lost {s.dropped_loss} queue-drop {s.dropped_queue} mtu-drop {s.dropped_mtu} limit-drop {s.dropped_limit} "
            f"dup {s.duplicated} reord {s.reordered}"
        )
    parts.append(
        f"clients {stats.clients} (opened {stats.clients_opened}, expired {stats.clients_expired}, "
        f"evicted {stats.clients_evicted}) send-failed {stats.send_failed}"
    )
    return " | ".join(parts)


def _describe(settings: Impairment) -> str:
    changed = settings.changed()
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "none"


async def serve(args: argparse.Namespace, listen: Address, upstream: Address, up: Impairment, down: Impairment) -> int:
    """Run until SIGINT/SIGTERM, printing stats every ``--stats-interval`` and once more at the end."""
    proxy = ImpairProxy(
        listen,
        upstream,
        up=up,
        down=down,
        seed=args.seed,
        idle_timeout=args.idle_timeout or None,
        max_clients=args.max_clients,
    )
    try:
        await proxy.start()
    except OSError as exc:
        print(f"impair: cannot start: {exc}", file=sys.stderr)
        proxy.close()
        return 1

    def report() -> None:
        stats = proxy.stats()
        print(json.dumps(stats.as_dict()) if args.json else format_stats(stats), flush=True)

    host, port = proxy.address
    route = f"{host}:{port} -> {upstream[0]}:{upstream[1]}"
    print(f"impair: {route}; up: {_describe(up)}; down: {_describe(down)}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread or no support: Ctrl-C then arrives as KeyboardInterrupt, still reported below
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), args.stats_interval or None)
            except TimeoutError:
                report()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        report()
        proxy.close()
    return 0


def run(args: argparse.Namespace) -> int:
    """The subcommand: validate everything before binding anything."""
    try:
        listen = parse_address(args.listen, "0.0.0.0")
        upstream = parse_address(args.upstream)
        up = settings_for(args, "up")
        down = settings_for(args, "down")
    except ValueError as exc:
        print(f"impair: {exc}", file=sys.stderr)
        return 2
    try:
        return run_loop(serve(args, listen, upstream, up, down))
    except KeyboardInterrupt:
        return 130


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``impair`` to the ``mux`` command."""
    parser = subparsers.add_parser(
        "impair",
        help="run a UDP proxy that adds loss, delay, reordering and a rate limit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mux.impair", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
