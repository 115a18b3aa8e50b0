"""Bulk SCTP-over-UDP throughput: usrsctp's tsctp against itself and against mux, both directions.

Three cases, in rotating order (A B C, B C A, C A B ...) over ``--reps`` repetitions, for each message size:

* A ``tsctp -> tsctp``: usrsctp to usrsctp, the reference;
* B ``tsctp -> mux``: tsctp sends to ``mux serve`` (its own process, behaviour ``Discard`` below);
* C ``mux -> tsctp``: a mux client (this process) sends to a tsctp server.

Every run sends the same ``--mb`` MiB as whole messages of one size on one stream, then shuts down gracefully.
The receiver measures, the same way on both stacks: from its first message until the peer's SHUTDOWN, over the
bytes it got (which must be exactly what was sent, or the run fails). Prints Mbit/s as median [min..max] and the
ratio of each mux case to A.

Both stacks make the same packets: usrsctp assumes an MTU of 1500 over UDP, even on loopback (1472-byte
datagrams: one 1200-byte message each, 1444-byte fragments of bigger ones), so mux runs with ``--pmtu 1500``
and path MTU discovery off (``maximum_mtu`` = ``pmtu``)
(mux's own default is 1280).

Debian builds tsctp with debug logging on: a dozen lines per message, which slows it 2-4x on loopback. By default
it runs as shipped (its output goes to /dev/null when it sends, the cheapest place, and through grep when it
receives); ``--silent-tsctp`` switches the logging off with a tiny LD_PRELOAD library (needs a C compiler), which
is the fairer reference.

Usage: python bench/sctp_vs_tsctp.py [--reps 3] [--mb 24] [--sizes 1200,65000] [--pmtu 1500] [--silent-tsctp]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mux import Connection, ConnectionBehaviour, Stream  # noqa: E402

MIB = 1024 * 1024
SCTP_PORT = 5001  # tsctp's default; our server listens on it too
CASES = ("tsctp -> tsctp", "tsctp -> mux", "mux -> tsctp")


class Discard(ConnectionBehaviour):
    """The mux receiver: counts messages and bytes, and prints one report per association on stdout.

    Timed like tsctp's server: from the first message until the peer's SHUTDOWN (or the end, if none came).
    """

    def init(self, opts: dict[str, Any]) -> None:
        self.messages = 0
        self.bytes = 0
        self.started = 0.0
        self.reported = False

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        if not self.messages:
            self.started = time.perf_counter()
        self.messages += 1
        self.bytes += len(data)

    def _report(self) -> None:
        if not self.reported:
            self.reported = True
            seconds = time.perf_counter() - self.started if self.messages else 0.0
            print(f"mux-discard {self.messages} {self.bytes} {seconds:.6f}", flush=True)

    def shutdown(self, conn: Connection, error_code: int) -> None:
        self._report()

    def closed(self, conn: Connection, props: dict[str, Any]) -> None:
        self._report()


REPORT = re.compile(r"^mux-discard (\d+) (\d+) ([\d.]+)$", re.M)


def mux_config(udp_port: int, pmtu: int) -> str:
    return (
        "behaviour: bench.sctp_vs_tsctp:Discard\n"
        "logging: {level: warning}\n"
        "listeners:\n"
        f"  - {{transport: sctp, name: sctp, host: 127.0.0.1, port: {udp_port}, sctp_port: {SCTP_PORT}, "
        f"pmtu: {pmtu}, maximum_mtu: {pmtu}}}\n"  # path MTU discovery off: usrsctp's packet size
    )


async def mux_send(udp_port: int, length: int, count: int, pmtu: int) -> None:
    """Case C's sender: ``count`` messages of ``length`` bytes, then a graceful close."""
    from mux.client import connect

    conn = await connect(
        ConnectionBehaviour,
        f"sctp://127.0.0.1:{udp_port}",
        options={"sctp_port": SCTP_PORT, "pmtu": pmtu, "maximum_mtu": pmtu},
    )
    stream = conn.open_stream()
    message = b"b" * length
    for _ in range(count):
        await stream.send(message)
    conn.close()
    props = await asyncio.wait_for(conn.wait_closed(), 120)
    if props.get("error"):
        raise RuntimeError(f"mux -> tsctp: association ended badly: {props}")


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} [{min(values):.1f}..{max(values):.1f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--mb", type=int, default=24, help="MiB sent per run")
    parser.add_argument("--sizes", default="1200,65000", help="message sizes in bytes, comma-separated")
    parser.add_argument("--pmtu", type=int, default=1500, help="mux's path MTU (usrsctp uses 1500)")
    parser.add_argument("--silent-tsctp", action="store_true", help="run tsctp without its debug logging")
    args = parser.parse_args()

    from mux.loop import run as run_loop
    from tests import usrsctp

    why = usrsctp.missing("tsctp")
    if why:
        print(why, file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    tsctp_udp, mux_udp, client_udp = usrsctp.free_udp_ports(3)
    tmp = tempfile.mkdtemp(prefix="mux-bench-sctp-")
    conf = Path(tmp, "discard.yaml")
    conf.write_text(mux_config(mux_udp, args.pmtu))

    results: dict[tuple[str, int], list[float]] = {(case, size): [] for case in CASES for size in sizes}
    tsctp_server = usrsctp.tsctp_server(tsctp_udp, SCTP_PORT, silent=args.silent_tsctp)
    mux_server = usrsctp.Program([sys.executable, "-m", "mux.cli", "serve", str(conf)], cwd=ROOT)
    tsctp_reports = mux_reports = 0
    try:
        usrsctp.wait_listening(mux_server, mux_udp, timeout=15)

        def tsctp_sends(udp_port: int, length: int, count: int) -> None:
            sender = usrsctp.tsctp_client(
                remote_udp=udp_port,
                local_udp=client_udp,
                port=SCTP_PORT,
                length=length,
                messages=count,
                quiet=True,
                silent=args.silent_tsctp,
            )
            with usrsctp.running(sender):
                if sender.wait(300) != 0:
                    raise RuntimeError(f"tsctp client exited with {sender.returncode}")

        def tsctp_received(length: int, count: int) -> float:
            nonlocal tsctp_reports
            tsctp_reports += 1
            report = usrsctp.wait_received(tsctp_server, tsctp_reports, 60)[-1]
            if usrsctp.receive_errors(tsctp_server):
                raise RuntimeError(f"tsctp server: {usrsctp.receive_errors(tsctp_server)}")
            if (report.messages, report.bytes) != (count, count * length):
                raise RuntimeError(f"tsctp received {report}, expected {count} x {length}")
            return report.mbit_per_s

        def mux_received(length: int, count: int) -> float:
            nonlocal mux_reports
            mux_reports += 1
            match = mux_server.wait_for(REPORT, 60, mux_reports)[-1]
            messages, got, seconds = int(match[1]), int(match[2]), float(match[3])
            if (messages, got) != (count, count * length):
                raise RuntimeError(f"mux received {messages} messages, {got} bytes; expected {count} x {length}")
            return got * 8 / seconds / 1e6

        def run_case(case: int, size: int, count: int) -> float:
            if case == 0:
                tsctp_sends(tsctp_udp, size, count)
                return tsctp_received(size, count)
            if case == 1:
                tsctp_sends(mux_udp, size, count)
                return mux_received(size, count)
            run_loop(mux_send(tsctp_udp, size, count, args.pmtu))
            return tsctp_received(size, count)

        for rep in range(args.reps):
            # the order rotates (A B C, B C A, C A B): two mux builds differing only in QUIC code, run in a fixed
            # order after tsctp -> tsctp, read 13% apart, and level once their order alternated
            order = [(rep + i) % len(CASES) for i in range(len(CASES))]
            for size in sizes:
                count = max(1, args.mb * MIB // size)
                for case in order:
                    results[(CASES[case], size)].append(run_case(case, size, count))
            print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    finally:
        for program in (tsctp_server, mux_server):
            program.stop()
            program.remove_output()
        conf.unlink()
        os.rmdir(tmp)

    print(
        f"SCTP over UDP bulk, {args.reps} reps rotating A B C, {args.mb} MiB per run, one stream, "
        f"mux pmtu {args.pmtu} (usrsctp: 1500), tsctp debug logging "
        f"{'off' if args.silent_tsctp else 'on (as shipped)'}, receiver-measured Mbit/s"
    )
    print(f"{'':16}" + "".join(f"{f'{size} B messages':>30}" for size in sizes))
    for case in CASES:
        print(f"{case:16}" + "".join(f"{summary(results[(case, size)]):>30}" for size in sizes))
    for case in CASES[1:]:
        ratios = ", ".join(
            f"{size} B {statistics.median(results[(case, size)]) / statistics.median(results[(CASES[0], size)]):.3f}x"
            for size in sizes
        )
        print(f"ratio {case} / {CASES[0]}: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
