"""Our client's socket outlives an association it shut down (``mux.sctp.client.LINGER``), as a kernel stack's port.

We send the last packet of our own graceful close, the SHUTDOWN-COMPLETE. When it is lost, the peer retransmits its
SHUTDOWN-ACK after its T2 and must get a SHUTDOWN-COMPLETE with the T bit back (RFC 9260 §8.4 item 5) to end its
side; with the socket gone, nobody answers. A relay here drops our first SHUTDOWN-COMPLETE, and the peer (a mux
server, usrsctp's tsctp) must still end gracefully. Everything runs on real loopback sockets on ephemeral ports.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from mux import connect, registry
from mux.sctp import client as sctp_client
from mux.sctp.chunks import ShutdownAckChunk, ShutdownCompleteChunk
from mux.sctp.packet import ParseError, parse_packet
from tests import usrsctp
from tests.conftest import ServerFactory
from tests.test_sctp_interop import Recorder, assert_graceful
from tests.udp_relay import UdpRelay

pytestmark = pytest.mark.skipif("sctp" not in registry.plugins(), reason="mux has no sctp transport registered")

ROOT = Path(__file__).resolve().parent.parent
SCTP_PORT = 7
TSCTP_PORT = 5001


class Server(Recorder):
    """The mux server's side of each association."""

    instances: ClassVar[list[Recorder]] = []


@pytest.fixture(autouse=True)
def fresh_instances() -> None:
    Recorder.instances.clear()
    Server.instances.clear()


async def mux_server(make_server: ServerFactory) -> int:
    server = await make_server(
        f"{__name__}:Server",
        [{"transport": "sctp", "host": "127.0.0.1", "port": 0, "sctp_port": SCTP_PORT, "name": "sctp"}],
    )
    return int(server.listener("sctp").address[1])


@dataclass
class Seen:
    """One packet through the relay: when, which way, and its chunks."""

    at: float
    up: bool
    chunks: list[Any] = field(default_factory=list)


class DropRelay(UdpRelay):
    """A UDP relay (one upstream socket per client address) that drops the first ``drop`` SHUTDOWN-COMPLETEs our
    client sends, and keeps every packet it saw, parsed, in ``seen``."""

    def __init__(self, upstream: tuple[str, int], drop: int = 1) -> None:
        super().__init__(upstream)
        self.drop = drop
        self.dropped: list[float] = []
        self.seen: list[Seen] = []

    def _note(self, data: bytes, up: bool) -> list[Any]:
        try:
            chunks = list(parse_packet(data).chunks)
        except ParseError:
            chunks = []
        self.seen.append(Seen(time.monotonic(), up, chunks))
        return chunks

    def up(self, data: bytes, addr: Any) -> bool:
        chunks = self._note(data, True)
        if chunks and type(chunks[0]) is ShutdownCompleteChunk and len(self.dropped) < self.drop:
            self.dropped.append(time.monotonic())
            return False
        return True

    def down(self, data: bytes, addr: Any) -> None:
        self._note(data, False)

    def shutdown_completes(self) -> list[Seen]:
        return [s for s in self.seen if s.up and any(type(c) is ShutdownCompleteChunk for c in s.chunks)]

    def shutdown_acks(self) -> list[Seen]:
        return [s for s in self.seen if not s.up and any(type(c) is ShutdownAckChunk for c in s.chunks)]


def t_bits(seen: list[Seen]) -> list[bool]:
    return [c.t_bit for s in seen for c in s.chunks if type(c) is ShutdownCompleteChunk]


async def lingering_sockets() -> int:
    await asyncio.sleep(0)  # let a cancelled linger task run its ``finally``
    return len(sctp_client._LINGERING)


# -- the tests ------------------------------------------------------------------------------------------------------


def test_the_lingering_endpoint_answers_shutdown_acks_and_stays_while_the_peer_backs_off() -> None:
    """Sans-IO: a SHUTDOWN-ACK to the lingering endpoint draws a SHUTDOWN-COMPLETE with the T bit and the tag it
    carried; each one heard keeps the socket ``LINGER`` or three times the time since the close (a T2 at 1 s sends
    at +1, +3, +7, +15 s), never past ``LINGER_MAX``."""
    from mux.sctp.config import SctpConfig
    from mux.sctp.endpoint import Endpoint
    from mux.sctp.packet import serialize_packet

    endpoint = Endpoint(SctpConfig(), local_port=50000, admit=lambda _addr: False, listening=False)
    demux = sctp_client._LingeringDemux(endpoint, 100.0)
    sent: list[tuple[bytes, Any]] = []

    driver = SimpleNamespace(loop=SimpleNamespace(time=lambda: 100.0), sendto=lambda d, a: sent.append((d, a)))
    peer = ("127.0.0.1", 40000)
    assert demux.until == 100.0 + sctp_client.LINGER
    untils = []
    for at in (1, 3, 7, 15):
        demux.datagram_received(serialize_packet(5000, 50000, 0xABCD, [ShutdownAckChunk()]), peer, 100.0 + at)
        untils.append(demux.until - 100.0)
    assert untils == [5.0, 12.0, 28.0, sctp_client.LINGER_MAX]
    demux.flush_stateless(driver)  # type: ignore[arg-type]
    assert [addr for _, addr in sent] == [peer] * 4
    answer = parse_packet(sent[0][0])
    assert (answer.src_port, answer.dst_port, answer.vtag) == (50000, 5000, 0xABCD)
    assert answer.chunks == [ShutdownCompleteChunk(t_bit=True)]


async def test_lost_shutdown_complete_is_answered_by_our_lingering_client(make_server: ServerFactory) -> None:
    """We shut down, the relay drops our SHUTDOWN-COMPLETE: our closed connection's socket answers the mux server's
    retransmitted SHUTDOWN-ACK with a SHUTDOWN-COMPLETE with the T bit, and the server's side ends gracefully.
    Our own ``wait_closed`` returns at once, long before that retransmission."""
    server_udp = await mux_server(make_server)
    async with DropRelay(("127.0.0.1", server_udp)) as relay:
        client = Recorder()
        conn = await connect(client, f"sctp://127.0.0.1:{relay.port}", options={"sctp_port": SCTP_PORT})
        stream = conn.open_stream()
        await stream.send(b"bye")
        async with asyncio.timeout(5):
            while not Server.instances or not Server.instances[0].messages:
                await asyncio.sleep(0.01)
        (server,) = Server.instances
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 5)
        closed_at = time.monotonic()
        assert_graceful(client, by="local")
        assert len(relay.dropped) == 1, relay.seen
        assert not relay.shutdown_acks() or relay.shutdown_acks()[-1].at < relay.dropped[0]  # no retransmission yet
        # the server's SHUTDOWN-ACK comes again after its RTO (200 ms at least), and this time it is answered
        await server.until(lambda: "closed" in server.kinds(), 10, "the server's association never closed")
        assert time.monotonic() - closed_at < 5
        assert_graceful(server, by="peer")
        assert t_bits(relay.shutdown_completes()) == [False, True]  # ours, dropped; then the lingering answer
        assert len(relay.shutdown_acks()) == 2
        assert await lingering_sockets() == 1  # still there for another retransmission, until it has been quiet


async def test_tsctp_ends_gracefully_when_our_shutdown_complete_is_lost() -> None:
    """The same with usrsctp's tsctp as the server: it prints its report only once its association is over, which
    takes its retransmitted SHUTDOWN-ACK (after 1 s, usrsctp's RTO.Min) being answered."""
    why = usrsctp.missing("tsctp")
    if why:
        pytest.skip(why)
    (server_udp,) = usrsctp.free_udp_ports(1)
    with usrsctp.running(usrsctp.tsctp_server(server_udp, TSCTP_PORT)) as (tsctp,):
        async with DropRelay(("127.0.0.1", server_udp)) as relay:
            client = Recorder()
            conn = await connect(client, f"sctp://127.0.0.1:{relay.port}", options={"sctp_port": TSCTP_PORT})
            stream = conn.open_stream()
            for _ in range(10):
                await stream.send(b"b" * 1000)
            conn.close()
            await asyncio.wait_for(conn.wait_closed(), 10)
            assert_graceful(client, by="local")
            (report,) = await asyncio.to_thread(usrsctp.wait_received, tsctp, 1, 8)
            errors = usrsctp.receive_errors(tsctp)
    assert errors == [], errors
    assert (report.messages, report.bytes) == (10, 10_000), report
    assert len(relay.dropped) == 1 and t_bits(relay.shutdown_completes()) == [False, True], relay.seen


async def test_lingering_sockets_are_bounded_and_close_when_quiet(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short-lived connections one after another: at most ``MAX_LINGERING`` sockets linger (a new one closes the
    oldest), each closes once quiet for ``LINGER``, and an aborted connection's socket does not linger at all."""
    monkeypatch.setattr(sctp_client, "MAX_LINGERING", 2)
    monkeypatch.setattr(sctp_client, "LINGER", 1.5)
    server_udp = await mux_server(make_server)
    drivers = []
    for _ in range(3):
        conn = await connect(Recorder(), f"sctp://127.0.0.1:{server_udp}", options={"sctp_port": SCTP_PORT})
        drivers.append(conn._tconn.driver)  # type: ignore[attr-defined]
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 5)
        await asyncio.sleep(0.1)  # past the 50 ms after which the application releases the socket
    assert await lingering_sockets() == 2
    assert [d.sock.fileno() == -1 for d in drivers] == [True, False, False]  # the oldest made room
    conn = await connect(Recorder(), f"sctp://127.0.0.1:{server_udp}", options={"sctp_port": SCTP_PORT})
    aborted = conn._tconn.driver  # type: ignore[attr-defined]
    conn.close(5, "bye")  # an ABORT: nothing comes after it to answer
    await asyncio.wait_for(conn.wait_closed(), 5)
    await asyncio.sleep(0.1)
    assert aborted.sock.fileno() == -1
    async with asyncio.timeout(5):
        while await lingering_sockets():
            await asyncio.sleep(0.05)
    assert all(d.sock.fileno() == -1 for d in drivers)


async def test_a_configured_local_port_is_taken_back_from_a_lingering_socket(make_server: ServerFactory) -> None:
    """A client with a fixed ``local_udp_port`` reconnects at once: the previous socket, lingering on that port,
    makes way for it."""
    server_udp = await mux_server(make_server)
    (port,) = usrsctp.free_udp_ports(1)
    options = {"sctp_port": SCTP_PORT, "local_udp_port": port}
    for _ in range(2):
        client = Recorder()
        conn = await connect(client, f"sctp://127.0.0.1:{server_udp}", options=options)
        assert conn.local_address[1] == port
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 5)
        assert_graceful(client, by="local")
    assert await lingering_sockets() == 1


_SCRIPT = """
import asyncio, time
from mux import ConnectionBehaviour, config, connect
from mux.server import Server
from mux.sctp.client import _LINGERING

async def main():
    global closed_at
    data = {{"behaviour": "mux.behaviour:ConnectionBehaviour", "options": {{}}, "pool": {{}},
            "listeners": [{{"transport": "sctp", "host": "127.0.0.1", "port": 0, "sctp_port": 7, "name": "s"}}]}}
    server = Server(config.parse(data, "<test>"))
    await server.start()
    port = server.listener("s").address[1]
    conn = await connect(ConnectionBehaviour, f"sctp://127.0.0.1:{{port}}", options={{"sctp_port": 7}})
    conn.close()
    await conn.wait_closed()
    closed_at = time.monotonic()
    assert len(_LINGERING) == 1, _LINGERING
    await server.stop()

{run}
print(f"done {{time.monotonic() - closed_at:.3f}}", flush=True)
"""


@pytest.mark.parametrize(
    "run",
    [
        "asyncio.run(main())",
        "import mux.loop; mux.loop.run(main())",  # as the mux commands run: on uvloop when it is installed
        # a loop closed without cancelling its tasks: the lingering socket goes all the same, without a warning
        "loop = asyncio.new_event_loop(); loop.run_until_complete(main()); loop.close()",
    ],
)
def test_a_process_with_a_lingering_socket_exits_at_once_and_cleanly(run: str) -> None:
    """A script that closes its connection and ends its loop does not wait for the linger (4 s), and leaves no unclosed
    socket, pending task or unretrieved exception behind (warnings are errors, asyncio in debug mode)."""
    script = textwrap.dedent(_SCRIPT).format(run=run)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONASYNCIODEBUG": "1"}
    env.pop("PYTHONTRACEMALLOC", None)
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stdout.startswith("done "), done.stderr
    for bad in ("ResourceWarning", "Task was destroyed", "unclosed", "Traceback", "never retrieved"):
        assert bad not in done.stderr, done.stderr
    # from our close to the loop's end: the server's stop and the loop's teardown, not the linger
    assert float(done.stdout.split()[1]) < 1.0, done.stdout
