"""SCTP-over-UDP bulk transfer through loss and reordering: usrsctp's tsctp into tsctp, against tsctp into mux.

Two cases, run A B A B ... over ``--reps`` repetitions:

* A ``tsctp -> tsctp``: usrsctp to usrsctp, the reference;
* B ``tsctp -> mux``: the same tsctp sender into ``mux serve`` (its own process, bench/sctp_vs_tsctp.py's
  ``Discard``).

Each run goes through a fresh impairment proxy (``python -m mux.impair``, its own process) with the same settings
both ways (``--loss``, ``--reorder``, ``--reorder-delay``, ``--delay``), seeded ``--seed`` + the repetition's
index: A and B of one repetition get the same seed, so the same random draws (which packets they hit still depends
on how each receiver's SACKs interleave with the data). The sender sends ``--mb`` MiB as ``--size``-byte messages on
one stream, reliably, then shuts down. The receiver measures (as in bench/sctp_vs_tsctp.py) from its first message
to the end: mux's at the peer's SHUTDOWN, tsctp's when its association is over (its recv sees the end only at the
SHUTDOWN-COMPLETE, one round trip later); the bytes it got must be exactly what was sent, or the run fails. Prints
the transfer time in seconds as median [min..max] per case, the medians of the proxy's counts (packets it got,
dropped and held back; "down" is the receiver's SACKs), and the ratio of the medians B / A: the issue's bar is at
most 1.25.

tsctp exits right after its SHUTDOWN-COMPLETE; when that packet is lost, the receiver's retransmitted SHUTDOWN-ACK
is answered by a stand-in on tsctp's UDP port (tests/usrsctp.py ``ShutdownAckAnswerer``), as the sender's host
would. A tsctp receiver stops its clock only then, so such a run of A counts one retransmission timeout more; the
runs where the stand-in answered are listed.

Both stacks make the same packets: usrsctp assumes an MTU of 1500 over UDP, so mux runs with ``--pmtu 1500``.
``--silent-tsctp`` switches Debian's debug logging off in tsctp (an LD_PRELOAD shim built with ``cc``): as shipped
it costs the tsctp receiver of A, not mux, a dozen log lines per message.

Usage: python bench/sctp_tsctp_loss.py [--reps 5] [--mb 10] [--size 1200] [--loss 5%] [--reorder 5%] [--seed 1]
       [--silent-tsctp]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sctp_vs_tsctp import REPORT, SCTP_PORT, mux_config  # noqa: E402
from mux.impair.cli import parse_duration_ms, parse_fraction  # noqa: E402

MIB = 1024 * 1024
CASES = ("tsctp -> tsctp", "tsctp -> mux")
_PROXY_READY = re.compile(r"^impair: [^ ]+:(\d+) -> ", re.M)
_PROXY_STATS = re.compile(r"^\{.*\}$", re.M)


def summary(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}..{max(values):.{digits}f}]"


def counts(stats: list[dict[str, Any]], name: str) -> str:
    """The median of a proxy counter over the runs, up/down."""
    known = [s for s in stats if s]
    if not known:
        return "?"
    return "/".join(f"{statistics.median(s[way][name] for s in known):.0f}" for way in ("up", "down"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--mb", type=float, default=10, help="MiB sent per run")
    parser.add_argument("--size", type=int, default=1200, help="message size in bytes")
    parser.add_argument("--loss", type=parse_fraction, default=0.05, help="random loss each way, e.g. 5%%")
    parser.add_argument("--reorder", type=parse_fraction, default=0.05, help="share held back each way, e.g. 5%%")
    parser.add_argument("--reorder-delay", type=parse_duration_ms, default=10.0, help="how long (default 10ms)")
    parser.add_argument("--delay", type=parse_duration_ms, default=0.0, help="added one-way delay, e.g. 5ms")
    parser.add_argument("--seed", type=int, default=1, help="the proxy's seed of the first repetition")
    parser.add_argument("--pmtu", type=int, default=1500, help="mux's path MTU (usrsctp uses 1500)")
    parser.add_argument("--silent-tsctp", action="store_true", help="run tsctp without its debug logging")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one run may take")
    args = parser.parse_args()

    from tests import usrsctp

    why = usrsctp.missing("tsctp")
    if why:
        print(why, file=sys.stderr)
        return 2
    count = max(1, int(args.mb * MIB) // args.size)
    tsctp_udp, mux_udp, client_udp = usrsctp.free_udp_ports(3)
    tmp = tempfile.mkdtemp(prefix="mux-bench-sctp-loss-")
    conf = Path(tmp, "discard.yaml")
    conf.write_text(mux_config(mux_udp, args.pmtu))
    impairment = [
        f"--loss={args.loss}",
        f"--reorder={args.reorder}",
        f"--reorder-delay={args.reorder_delay}ms",
        f"--delay={args.delay}ms",
    ]

    seconds: dict[str, list[float]] = {case: [] for case in CASES}
    path: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
    stand_ins = dict.fromkeys(CASES, 0)
    tsctp_server = usrsctp.tsctp_server(tsctp_udp, SCTP_PORT, silent=args.silent_tsctp)
    mux_server = usrsctp.Program([sys.executable, "-m", "mux.cli", "serve", str(conf)], cwd=ROOT)
    tsctp_reports = mux_reports = 0
    try:
        usrsctp.wait_listening(mux_server, mux_udp, timeout=15)

        def through_proxy(
            case: str, upstream: int, seed: int, received: Callable[[], float]
        ) -> tuple[float, dict[str, Any]]:
            """tsctp sends through a fresh proxy to ``upstream``; the receiver's time (``received``, waited for before
            the proxy goes: a lost SHUTDOWN-COMPLETE still needs it) and the proxy's counts."""
            proxy = usrsctp.Program(
                [sys.executable, "-m", "mux.impair", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream}",
                 *impairment, f"--seed={seed}", "--stats-interval", "0", "--json"],
                cwd=ROOT,
            )  # fmt: skip
            try:
                (ready,) = proxy.wait_for(_PROXY_READY, 15)
                sender = usrsctp.tsctp_client(
                    remote_udp=int(ready[1]),
                    local_udp=client_udp,
                    port=SCTP_PORT,
                    length=args.size,
                    messages=count,
                    quiet=True,
                    silent=args.silent_tsctp,
                )
                with usrsctp.running(sender):
                    if sender.wait(args.timeout) != 0:
                        raise RuntimeError(f"tsctp client exited with {sender.returncode}")
                with usrsctp.ShutdownAckAnswerer(client_udp) as stand_in:
                    took = received()
                stand_ins[case] += stand_in.answered > 0
            finally:
                proxy.stop()  # SIGTERM: it prints its counters and exits
                stats = _PROXY_STATS.findall(proxy.output())
                proxy.remove_output()
            return took, json.loads(stats[-1]) if stats else {}

        def tsctp_received() -> float:
            nonlocal tsctp_reports
            tsctp_reports += 1
            report = usrsctp.wait_received(tsctp_server, tsctp_reports, 60)[-1]
            if usrsctp.receive_errors(tsctp_server):
                raise RuntimeError(f"tsctp server: {usrsctp.receive_errors(tsctp_server)}")
            if (report.messages, report.bytes) != (count, count * args.size):
                raise RuntimeError(f"tsctp received {report}, expected {count} x {args.size}")
            return report.seconds

        def mux_received() -> float:
            nonlocal mux_reports
            mux_reports += 1
            match = mux_server.wait_for(REPORT, 60, mux_reports)[-1]
            messages, got, took = int(match[1]), int(match[2]), float(match[3])
            if (messages, got) != (count, count * args.size):
                raise RuntimeError(f"mux received {messages} messages, {got} bytes; expected {count} x {args.size}")
            return took

        for rep in range(args.reps):
            seed = args.seed + rep
            for case, upstream, received in ((CASES[0], tsctp_udp, tsctp_received), (CASES[1], mux_udp, mux_received)):
                took, stats = through_proxy(case, upstream, seed, received)
                seconds[case].append(took)
                path[case].append(stats)
            print(
                f"rep {rep + 1}/{args.reps} (seed {seed}): "
                + ", ".join(f"{case} {seconds[case][-1]:.2f} s" for case in CASES),
                file=sys.stderr,
            )
    finally:
        for program in (tsctp_server, mux_server):
            program.stop()
            program.remove_output()
        conf.unlink()
        os.rmdir(tmp)

    print(
        f"SCTP over UDP bulk through loss {args.loss:.1%} and reordering {args.reorder:.1%} "
        f"(held {args.reorder_delay:g} ms) each way, delay {args.delay:g} ms, {args.reps} reps alternating A B, "
        f"seeds {args.seed}..{args.seed + args.reps - 1}, {args.mb:g} MiB per run as {count} x {args.size} B on one "
        f"stream, mux pmtu {args.pmtu}, tsctp debug logging {'off' if args.silent_tsctp else 'on (as shipped)'}; "
        "receiver-measured transfer time"
    )
    print(f"{'':16}{'seconds':>26}{'Mbit/s':>26}{'packets up/down':>18}{'lost up/down':>16}{'held back up/down':>20}")
    for case in CASES:
        mbit = [count * args.size * 8 / s / 1e6 for s in seconds[case]]
        print(
            f"{case:16}{summary(seconds[case]):>26}{summary(mbit, 1):>26}"
            f"{counts(path[case], 'received'):>18}{counts(path[case], 'dropped_loss'):>16}"
            f"{counts(path[case], 'reordered'):>20}"
        )
    if any(stand_ins.values()):
        print(
            "runs whose sender's SHUTDOWN-COMPLETE was lost (its SHUTDOWN-ACK answered by a stand-in): "
            + ", ".join(f"{case} {n}" for case, n in stand_ins.items())
        )
    ratio = statistics.median(seconds[CASES[1]]) / statistics.median(seconds[CASES[0]])
    print(f"ratio of median times {CASES[1]} / {CASES[0]}: {ratio:.3f}x (bar: at most 1.25x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
