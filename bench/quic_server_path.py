"""Server-side cost of one echo request: mux's QUIC path against raw aioquic's, in memory.

The socket benchmark (``quic_vs_aioquic.py``) measures what a user sees, but its round trip is
mostly the client and the kernel, so a few microseconds of server work drown in scheduling noise.
This one isolates the server: a plain aioquic client and the server exchange datagrams through
in-memory sockets inside one event loop, and only the server's handling of each request datagram
is timed, from the readiness callback to the first reply ``sendto`` (the part on the round trip's
critical path) and to the callback's return (all the work that datagram caused).

* mux: ``QuicListener`` and its ``Driver`` with ``mux.behaviours.echo:Echo`` behind the acceptor pool;
* raw: aioquic's own ``QuicServer`` and a ``QuicConnectionProtocol`` that echoes in
  ``quic_event_received``, as ``quic_vs_aioquic.py`` runs it.

Both get the same configuration and the same 64-byte requests on one stream, alternating A B A B.
Reads cost neither side a syscall here, except mux's after-datagram SIOCINQ probe, which is real (on
an idle socket), so mux pays slightly more than it would beside a raw server's C-level read.
Prints microseconds per request, median [min..max] over ``--reps``, and the ratio raw / mux.
Usage: python bench/quic_server_path.py [--reps 7] [--rounds 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from aioquic.asyncio.server import QuicServer
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import HandshakeCompleted, QuicEvent, StreamDataReceived

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.quic_vs_aioquic import SETTINGS, RawEcho, client_config, loop_factory, raw_server_config  # noqa: E402
from mux.pool import AcceptorPool  # noqa: E402
from mux.quic import listener as quic_listener  # noqa: E402
from mux.quic.certs import self_signed  # noqa: E402
from mux.quic.options import QuicListenerOptions  # noqa: E402

SERVER = ("127.0.0.1", 4433)
CLIENT = ("127.0.0.1", 50000)
perf = time.perf_counter_ns


class Clock:
    """When the server first sent during the datagram being timed."""

    first_send = 0


class MemorySocket:
    """Stands in for the listener's UDP socket: reads from a queue, records what is sent."""

    def __init__(self, clock: Clock) -> None:
        self._real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # only for fileno()
        self.inbox: deque[tuple[bytes, Any]] = deque()
        self.outbox: list[bytes] = []
        self.clock = clock

    def recvfrom(self, size: int) -> tuple[bytes, Any]:
        if not self.inbox:
            raise BlockingIOError
        return self.inbox.popleft()

    def sendto(self, data: bytes, addr: Any) -> int:
        if not self.clock.first_send:
            self.clock.first_send = perf()
        self.outbox.append(data)
        return len(data)

    def fileno(self) -> int:
        return self._real.fileno()

    def getsockname(self) -> Any:
        return SERVER

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        self._real.close()


class MemoryTransport:
    """aioquic's side of the same thing: a datagram transport that records what is sent."""

    def __init__(self, clock: Clock) -> None:
        self.outbox: list[bytes] = []
        self.clock = clock

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if not self.clock.first_send:
            self.clock.first_send = perf()
        self.outbox.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return SERVER if name == "sockname" else default

    def close(self) -> None:
        pass


class Side:
    """One server under test: ``feed`` hands it a datagram the way its event loop would."""

    name: str
    outbox: list[bytes]

    def feed(self, data: bytes) -> None:
        raise NotImplementedError


class MuxSide(Side):
    name = "mux"

    def __init__(self, clock: Clock, certfile: str, keyfile: str) -> None:
        self.sock = MemorySocket(clock)
        self.outbox = self.sock.outbox
        from mux.behaviours.echo import Echo

        self.pool = AcceptorPool(Echo)
        options = QuicListenerOptions(
            port=SERVER[1],
            alpn=["echo"],
            certfile=Path(certfile),
            keyfile=Path(keyfile),
            max_datagram_size=SETTINGS["max_datagram_size"],
            # path MTU discovery off, as in quic_vs_aioquic.py: raw aioquic has none, so both send the same
            # packets (with it on, this in-memory exchange stopped echoing after some 50 rounds)
            maximum_mtu=SETTINGS["max_datagram_size"] + 28,
            congestion_control_algorithm=SETTINGS["congestion_control_algorithm"],
            conn_flow_control_window=SETTINGS["conn_flow_control_window"],
            stream_recv_window_default=SETTINGS["stream_recv_window_default"],
            idle_timeout_ms=SETTINGS["idle_timeout_ms"],
        )
        self.listener = quic_listener.QuicListener(options, self.pool)

    async def start(self) -> None:
        quic_listener.open_socket = lambda host, port: self.sock  # type: ignore[assignment]
        await self.listener.start()
        assert self.listener.driver is not None
        self.ready = self.listener.driver._read_ready

    def feed(self, data: bytes) -> None:
        self.sock.inbox.append((data, CLIENT))
        self.ready()


class RawSide(Side):
    name = "raw"

    def __init__(self, clock: Clock, certfile: str, keyfile: str) -> None:
        self.transport = MemoryTransport(clock)
        self.outbox = self.transport.outbox
        config = raw_server_config(certfile, keyfile)
        self.config = config

    async def start(self) -> None:
        self.server = QuicServer(configuration=self.config, create_protocol=RawEcho)
        self.server.connection_made(self.transport)  # type: ignore[arg-type]
        self.received = self.server.datagram_received

    def feed(self, data: bytes) -> None:
        self.received(data, CLIENT)


class Client:
    """A plain aioquic client driven by hand; its own work is never timed."""

    def __init__(self) -> None:
        config = client_config()
        self.quic = QuicConnection(configuration=config)
        self.received = 0
        self.connected = False
        self.skew = 0.0

    def take(self, outbox: list[bytes]) -> None:
        now = self.now()
        for data in outbox:
            self.quic.receive_datagram(data, SERVER, now)
        outbox.clear()
        event: QuicEvent | None = self.quic.next_event()
        while event is not None:
            if isinstance(event, StreamDataReceived):
                self.received += len(event.data)
            elif isinstance(event, HandshakeCompleted):
                self.connected = True
            event = self.quic.next_event()

    def now(self) -> float:
        """The client's own clock: real time, jumped ahead whenever its pacer holds a packet."""
        return time.perf_counter() + self.skew

    def datagrams(self) -> list[bytes]:
        now = self.now()
        out = [data for data, _ in self.quic.datagrams_to_send(now)]
        pacing_at = self.quic._pacing_at
        if not out and pacing_at is not None:
            self.skew += pacing_at - now
            out = [data for data, _ in self.quic.datagrams_to_send(self.now())]
        return out


async def settle() -> None:
    """Let the server's loop run what it deferred (mailbox tasks, call_soon flushes)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def arrive(side: Side, clock: Clock, datagrams: list[bytes]) -> tuple[int, int, int]:
    """Hand datagrams to the server from a bare loop callback, as a socket's readiness would.

    Outside any task, as in a real server (mux's driver dispatches eagerly only there). Returns the
    perf_counter_ns when the last datagram was handed over, when the first reply was sent and when
    the callback returned; a reply deferred to a later loop step is waited for, since it is on the
    round trip too.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, int]] = loop.create_future()

    def callback() -> None:
        for data in datagrams[:-1]:
            side.feed(data)
        clock.first_send = 0
        started = perf()
        side.feed(datagrams[-1])
        done.set_result((started, perf()))

    loop.call_soon(callback)
    started, ended = await done
    while not clock.first_send:
        await asyncio.sleep(0)
        ended = perf()
    return started, clock.first_send, ended


async def measure(side: Side, clock: Clock, rounds: int) -> tuple[float, float]:
    """Median microseconds per request: to the first reply sendto, and to the callback's return."""
    client = Client()
    client.quic.connect(SERVER, now=client.now())
    for _ in range(20):  # the handshake
        await arrive(side, clock, client.datagrams())
        await settle()
        client.take(side.outbox)
        if client.connected:
            break
    assert client.connected, f"{side.name}: handshake did not complete"
    datagrams = client.datagrams()
    if datagrams:
        await arrive(side, clock, datagrams)
    await settle()
    client.take(side.outbox)

    stream_id = client.quic.get_next_available_stream_id()
    payload = b"q" * 64
    to_send: list[float] = []
    to_end: list[float] = []
    for i in range(rounds):
        client.quic.send_stream_data(stream_id, payload, False)
        started, sent, ended = await arrive(side, clock, client.datagrams())
        to_send.append((sent - started) / 1000)
        to_end.append((ended - started) / 1000)
        await settle()
        client.take(side.outbox)
        if client.received != (i + 1) * len(payload):
            raise AssertionError(f"{side.name}: echo incomplete after round {i}")
    return statistics.median(to_send), statistics.median(to_end)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} [{min(values):.2f}..{max(values):.2f}]"


async def run(reps: int, rounds: int, only: str | None = None) -> dict[str, dict[str, list[float]]]:
    certfile, keyfile = (str(p) for p in self_signed("127.0.0.1"))
    clock = Clock()
    results: dict[str, dict[str, list[float]]] = {"mux": {"send": [], "end": []}, "raw": {"send": [], "end": []}}
    for rep in range(reps):
        names = ("mux", "raw") if rep % 2 == 0 else ("raw", "mux")
        for name in names:
            if only is not None and name != only:
                continue
            side: MuxSide | RawSide = (MuxSide if name == "mux" else RawSide)(clock, certfile, keyfile)
            await side.start()
            send, end = await measure(side, clock, rounds)
            results[name]["send"].append(send)
            results[name]["end"].append(end)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument(
        "--only", choices=("mux", "raw"), help="run one side (under callgrind, say: instructions per request)"
    )
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        results = runner.run(run(args.reps, args.rounds, args.only))
    if args.only:
        r = results[args.only]
        print(f"{args.only}: to first sendto {summary(r['send'])} us, whole datagram {summary(r['end'])} us")
        return 0
    loop_name = "uvloop" if loop_factory() else "asyncio"
    print(f"QUIC echo server path, in memory, {args.reps} reps alternating, {args.rounds} requests, loop {loop_name}")
    print(f"{'':6} {'to first sendto us':>26} {'whole datagram us':>26}")
    for name in ("mux", "raw"):
        r = results[name]
        print(f"{name:6} {summary(r['send']):>26} {summary(r['end']):>26}")
    m, r = results["mux"], results["raw"]
    crit = statistics.median(r["send"]) / statistics.median(m["send"])
    whole = statistics.median(r["end"]) / statistics.median(m["end"])
    print(f"ratio raw/mux (higher is better for mux): critical path {crit:.3f}x, whole datagram {whole:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
