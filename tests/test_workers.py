"""``workers: N``: the steering programs on real reuseport sockets, and `mux serve --workers 2` end to end."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mux import connect, steering
from mux.sctp import cookie as ck
from mux.sctp.chunks import InitAckChunk, InitChunk
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import Endpoint
from mux.sctp.packet import parse_packet, serialize_packet
from mux.workers import bind_group, per_worker
from tests import apps as tb
from tests.udp_relay import RebindingRelay

ROOT = Path(__file__).resolve().parent.parent


# -- the programs, on a real reuseport group ---------------------------------------------------------------------


def _receiver(socks: list[socket.socket], payload: bytes) -> int:
    """Which socket of the group ``payload`` reaches, sent from a fresh UDP port each time."""
    port = socks[0].getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(payload, ("127.0.0.1", port))
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        for index, sock in enumerate(socks):
            try:
                if sock.recv(2048) == payload:
                    return index
            except BlockingIOError:
                pass
        time.sleep(0.001)
    raise AssertionError("the datagram reached no socket")


@pytest.fixture
def group(request: pytest.FixtureRequest) -> Iterator[list[socket.socket]]:
    transport, count = request.param
    socks = bind_group("127.0.0.1", 0, count, transport)
    for sock in socks:
        sock.setblocking(False)
    yield socks
    for sock in socks:
        sock.close()


def short_header(cid: bytes) -> bytes:
    return bytes([0x40]) + cid + os.urandom(24)


def long_header(dcid: bytes) -> bytes:
    return bytes([0xC0]) + b"\x00\x00\x00\x01" + bytes([len(dcid)]) + dcid + b"\x08" + os.urandom(8) + bytes(1200)


@pytest.mark.parametrize("group", [("quic", 2), ("quic", 3)], indirect=True)
def test_quic_packets_reach_the_worker_their_connection_id_names(group: list[socket.socket]) -> None:
    count = len(group)
    for index in range(count):
        for _ in range(4):  # from a new UDP port each time: the 4-tuple hash alone would scatter these
            cid = steering.quic_cid(index, count)
            assert steering.quic_owner(cid, count) == index
            assert _receiver(group, short_header(cid)) == index
            assert _receiver(group, long_header(cid)) == index
    # a client's first Initial: its random DCID decides, the same way for every retransmission
    for _ in range(6):
        dcid = os.urandom(8)
        owner = steering.quic_owner(dcid, count)
        assert {_receiver(group, long_header(dcid)) for _ in range(3)} == {owner}


@pytest.mark.parametrize("group", [("sctp", 2)], indirect=True)
def test_sctp_packets_reach_the_worker_their_verification_tag_names(group: list[socket.socket]) -> None:
    rng = random.Random(7)
    for index in (0, 1):
        for _ in range(4):
            tag = steering.sctp_tag(rng, index, 2)
            assert tag % 2 == index and tag != 0
            packet = serialize_packet(5000, 7, tag, [])
            assert _receiver(group, packet) == index
    # INITs (tag 0) go by the kernel's hash of the 4-tuple: from many ports, both workers get some
    init = serialize_packet(5000, 7, 0, [InitChunk(1234, 65536, 10, 10, 1, [])])
    assert {_receiver(group, init) for _ in range(40)} == {0, 1}


def test_a_bound_port_is_refused_not_joined() -> None:
    """A port some other reuseport group holds (another server of ours) is an error, not a silent join."""
    theirs = bind_group("127.0.0.1", 0, 2, "sctp")
    try:
        with pytest.raises(OSError):
            bind_group("127.0.0.1", theirs[0].getsockname()[1], 2, "sctp")
    finally:
        for sock in theirs:
            sock.close()


def test_a_workers_endpoint_answers_inits_with_tags_of_its_own_index() -> None:
    for index in (0, 1, 2):
        server = Endpoint(SctpConfig(), local_port=7, secret=b"s" * 32, tag_residue=(index, 3))
        for n in range(20):
            init = InitChunk(1000 + n, 65536, 10, 10, 1, [])
            server.receive_datagram(serialize_packet(5000, 7, 0, [init]), ("10.0.0.1", 4000 + n), 0.0)
        answers = [parse_packet(data).chunks[0] for data, _ in server.datagrams_to_send(0.0)]
        assert len(answers) == 20
        for ack in answers:
            assert isinstance(ack, InitAckChunk)
            assert ack.initiate_tag % 3 == index
            cookie = ck.decode(ack.params[0].cookie, b"s" * 32, ("10.0.0.1", 4000 + answers.index(ack)))  # type: ignore[attr-defined]
            assert cookie is not None and cookie.local_tag == ack.initiate_tag


def test_the_pool_limits_are_divided_among_the_workers() -> None:
    from mux import config as cfg

    config = cfg.parse(
        {
            "behaviour": "behaviours.echo:Echo",
            "pool": {"max_connections": 1001, "num_acceptors": 100},
            "listeners": [{"transport": "sctp", "port": 0}],
        }
    )
    shared = per_worker(config, 2)
    assert (shared.pool.max_connections, shared.pool.num_acceptors) == (501, 50)
    assert shared.pool.handshake_timeout_ms == config.pool.handshake_timeout_ms


# -- mux serve --workers 2 ---------------------------------------------------------------------------------------


@dataclass
class Workers:
    proc: subprocess.Popen[str]
    ports: dict[str, int]
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # a thread drains the server's stderr all along: a full pipe would block the workers' logging
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def read_until(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        """The first log line from ``start`` on that matches ``pattern``, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log[start:]:
                found = re.search(pattern, line)
                if found:
                    return found
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} not seen; the server said:\n{''.join(self.log)}")


def workers_config(tmp_path: Path, sctp_extra: str = "", head: str = "") -> Path:
    config = tmp_path / "workers.yaml"
    config.write_text(
        "behaviour: tests.apps:WhichWorker\n"
        f"{head}"
        "listeners:\n"
        "  - {name: quic, transport: quic, host: 127.0.0.1, port: 0, alpn: [test]}\n"
        f"  - {{name: sctp, transport: sctp, host: 127.0.0.1, port: 0{sctp_extra}}}\n"
    )
    return config


def start_workers(tmp_path: Path, count: int = 2, sctp_extra: str = "", head: str = "") -> Workers:
    config = workers_config(tmp_path, sctp_extra, head)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mux.cli", "serve", str(config), "--workers", str(count)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    server = Workers(proc, {})
    for name in ("quic", "sctp"):
        found = server.read_until(rf"serving {name} on \('127.0.0.1', (\d+)\) with {count} workers")
        server.ports[name] = int(found[1])
    for index in range(count):
        server.read_until(rf"mux.server\[{index}\]: serving sctp")
    return server


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    server = start_workers(tmp_path)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)


def target(server: Workers, transport: str) -> tuple[str, dict[str, Any]]:
    if transport == "quic":
        return f"quic://127.0.0.1:{server.ports['quic']}", {"alpn": ["test"], "verify": "none"}
    return f"sctp://127.0.0.1:{server.ports['sctp']}", {}


async def ask(client: tb.Client, conn: Any, message: bytes) -> bytes:
    """Send ``message`` on a new stream; the worker index the server answered with."""
    stream = conn.open_stream()
    await stream.send(message)
    while True:
        event = await client.next("data", timeout=10)
        if event[1] == stream.id:
            worker, _, echoed = bytes(event[2]).partition(b":")
            assert echoed == message
            return worker


async def one_connection(url: str, options: dict[str, Any], gate: asyncio.Semaphore) -> bytes:
    async with gate:
        client = tb.Client()
        conn = await connect(client, url, options=options, timeout=20)
        try:
            return await ask(client, conn, b"which")
        finally:
            conn.close(0, "done")
            await asyncio.wait_for(conn.wait_closed(), 10)


@pytest.mark.parametrize("transport", ["quic", "sctp"])
async def test_200_connections_all_succeed_and_land_on_both_workers(workers: Workers, transport: str) -> None:
    url, options = target(workers, transport)
    gate = asyncio.Semaphore(25)
    served = await asyncio.gather(*(one_connection(url, options, gate) for _ in range(200)))
    assert len(served) == 200
    counts = {worker: served.count(worker) for worker in set(served)}
    assert set(counts) == {b"0", b"1"}, counts
    assert min(counts.values()) >= 40, counts  # a hash spreads 200 peers; all on one would be 1 in 2**199


@pytest.mark.parametrize("transport", ["quic", "sctp"])
async def test_a_client_that_changes_its_udp_port_keeps_its_worker(workers: Workers, transport: str) -> None:
    """Eight rebindings: with the kernel's 4-tuple hash each would find the other worker half the time."""
    async with RebindingRelay(("127.0.0.1", workers.ports[transport])) as relay:
        _, options = target(workers, transport)
        client = tb.Client()
        conn = await connect(client, f"{transport}://127.0.0.1:{relay.port}", options=options, timeout=20)
        first = await ask(client, conn, b"before")
        ports = relay.server_facing_ports()
        for n in range(8):
            relay.rebind()
            assert not relay.server_facing_ports() & ports
            ports |= relay.server_facing_ports()
            assert await ask(client, conn, b"after %d" % n) == first
            if transport == "sctp":
                await asyncio.sleep(1.05)  # the endpoint follows a peer's new port at most once a second
        assert conn.state == "connected"
        conn.close(0, "done")
        await asyncio.wait_for(conn.wait_closed(), 10)


async def test_sigterm_drains_both_workers(workers: Workers) -> None:
    """An open connection on each worker: both get a graceful close, both workers exit, then the supervisor."""
    url, options = target(workers, "quic")
    held: dict[bytes, tuple[tb.Client, Any]] = {}
    for _ in range(60):
        client = tb.Client()
        conn = await connect(client, url, options=options, timeout=20)
        worker = await ask(client, conn, b"hello")
        if worker in held:
            conn.close(0, "spare")
            continue
        held[worker] = (client, conn)
        if len(held) == 2:
            break
    assert set(held) == {b"0", b"1"}
    workers.proc.send_signal(signal.SIGTERM)
    for client, conn in held.values():
        await client.next("shutdown", timeout=10)  # the server closed it (the drain's close), not a timeout
        await asyncio.wait_for(conn.wait_closed(), 10)
    code = await asyncio.to_thread(workers.proc.wait, 15)
    assert code == 0
    workers.read_until(r"mux.workers: stopped: 2 workers")
    text = "".join(workers.log)
    for index in (0, 1):
        assert re.search(rf"mux.server\[{index}\]: SIGTERM: draining", text), text
        assert re.search(rf"worker {index} \(pid \d+\) stopped: exit code 0", text), text


async def test_a_crashed_worker_is_forked_again_on_its_socket(workers: Workers) -> None:
    found = workers.read_until(r"mux.workers\[1\]: worker 1 of 2: pid (\d+)")
    os.kill(int(found[1]), signal.SIGKILL)
    workers.read_until(r"worker 1 \(pid \d+\) exited \(signal SIGKILL\)")
    mark = next(i for i, line in enumerate(workers.log) if "exited (signal SIGKILL)" in line)
    workers.read_until(r"mux.server\[1\]: serving sctp", start=mark)
    url, options = target(workers, "sctp")
    gate = asyncio.Semaphore(10)
    served = await asyncio.gather(*(one_connection(url, options, gate) for _ in range(40)))
    assert set(served) == {b"0", b"1"}


async def test_sighup_reloads_every_worker_and_a_new_listener_is_refused(tmp_path: Path) -> None:
    """With workers the supervisor forwards SIGHUP: each worker reloads (new connections get the new options, on
    both workers); a listener added to the file is refused in each (the supervisor holds the sockets) and the
    running config stays."""
    server = start_workers(tmp_path, head="options: {tag: v1}\n")
    try:
        url, options = target(server, "sctp")
        gate = asyncio.Semaphore(10)
        served = await asyncio.gather(*(one_connection(url, options, gate) for _ in range(20)))
        assert set(served) == {b"0/v1", b"1/v1"}
        mark = len(server.log)
        workers_config(tmp_path, head="options: {tag: v2}\n")
        server.proc.send_signal(signal.SIGHUP)
        for index in (0, 1):
            server.read_until(rf"mux\.\w+\[{index}\]: reload 1 of", start=mark)
        served = await asyncio.gather(*(one_connection(url, options, gate) for _ in range(20)))
        assert set(served) == {b"0/v2", b"1/v2"}
        mark = len(server.log)
        config = workers_config(tmp_path, head="options: {tag: v3}\n")
        config.write_text(config.read_text() + "  - {name: more, transport: sctp, host: 127.0.0.1, port: 0}\n")
        server.proc.send_signal(signal.SIGHUP)
        for index in (0, 1):
            server.read_until(
                rf"\[{index}\]: reload failed, keeping the running config: .*set of listeners", start=mark
            )
        served = await asyncio.gather(*(one_connection(url, options, gate) for _ in range(20)))
        assert set(served) == {b"0/v2", b"1/v2"}
        assert server.proc.poll() is None
    finally:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def test_each_worker_captures_to_a_pcap_file_of_its_own(tmp_path: Path) -> None:
    server = start_workers(tmp_path, sctp_extra=f", pcap: {tmp_path / 'cap.pcap'}")
    try:
        url, options = target(server, "sctp")
        gate = asyncio.Semaphore(10)
        served = await asyncio.gather(*(one_connection(url, options, gate) for _ in range(30)))
        assert set(served) == {b"0", b"1"}
    finally:
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.proc.wait, 15)
    files = sorted(p.name for p in tmp_path.glob("cap*.pcap"))
    assert files == ["cap.0.pcap", "cap.1.pcap"]
    for name in files:  # a header and, since both served some of the 30, records
        assert (tmp_path / name).stat().st_size > 24 + 16 * 30


def test_workers_flag_and_key_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("behaviour: behaviours.echo:Echo\nworkers: 0\nlisteners: [{transport: sctp, port: 0}]\n")
    run = subprocess.run(
        [sys.executable, "-m", "mux.cli", "check", str(config)], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 2
    assert "workers: " in run.stderr and "or 'auto'" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "mux.cli", "serve", str(config), "--workers", "lots"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "--workers: expected a number of processes" in run.stderr


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        config = tmp_path / "busy.yaml"
        config.write_text(
            f"behaviour: behaviours.echo:Echo\nworkers: 2\nlisteners: [{{transport: sctp, port: {port}}}]\n"
        )
        run = subprocess.run(
            [sys.executable, "-m", "mux.cli", "serve", str(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert run.returncode == 1
    assert f"cannot start: listener sctp:{port} (udp 127.0.0.1:{port}): address already in use" in run.stderr
    assert "Traceback" not in run.stderr and "worker 0" not in run.stderr  # nothing forked


def test_workers_that_keep_failing_at_start_make_the_supervisor_give_up(caplog: pytest.LogCaptureFixture) -> None:
    """A fault a restart cannot fix (each worker exits at once): three tries each, then exit 1, no endless loop."""
    from mux import config as cfg
    from mux.workers import MAX_QUICK_EXITS, Supervisor

    config = cfg.parse({"behaviour": "behaviours.echo:Echo", "listeners": [{"transport": "sctp", "port": 0}]})
    begun = time.monotonic()
    with caplog.at_level("INFO", logger="mux.workers"):
        code = Supervisor(config, 2, lambda config: 3).run()  # in the forked worker: exit code 3 at once
    assert code == 1
    assert time.monotonic() - begun < 15
    restarts = [r.getMessage() for r in caplog.records if "restarting it" in r.getMessage()]
    assert 2 <= len(restarts) <= 2 * (MAX_QUICK_EXITS - 1), restarts  # up to two per worker, then it stops
    assert any("giving up" in r.getMessage() for r in caplog.records)
    assert all("exit code 3" in message for message in restarts)


def test_every_connection_id_a_workers_quic_connection_hands_out_names_it() -> None:
    """The first host CID, the initial source CID the transport parameters carry, and the NEW_CONNECTION_ID
    ones made after the handshake (``_replenish_connection_ids``) all steer to worker 1 of 3."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    from mux.quic.certs import self_signed
    from mux.quic.core import MuxQuicConnection

    certfile, keyfile = self_signed("127.0.0.1")
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["test"])
    server_config.load_cert_chain(certfile, keyfile)
    client_config = QuicConfiguration(is_client=True, alpn_protocols=["test"])
    client_config.verify_mode = ssl.CERT_NONE
    client = QuicConnection(configuration=client_config)
    client.connect(("10.0.0.2", 4433), now=0.0)
    server = MuxQuicConnection(
        configuration=server_config,
        original_destination_connection_id=client._peer_cid.cid,
        cid_factory=lambda length: steering.quic_cid(1, 3, length),
    )
    now = 0.0
    for _ in range(50):
        now += 0.001
        for data, _ in client.datagrams_to_send(now=now):
            server.receive_datagram(data, ("10.0.0.1", 1234), now=now)
        for data, _ in server.datagrams_to_send(now=now):
            client.receive_datagram(data, ("10.0.0.2", 4433), now=now)
    assert server._handshake_complete
    issued = [c.cid for c in server._host_cids]
    assert len(issued) > 1  # some came from NEW_CONNECTION_ID
    assert {steering.quic_owner(cid, 3) for cid in issued} == {1}
    # what the client now knows of ours: every ID it may use reaches worker 1
    known = [client._peer_cid.cid] + [c.cid for c in client._peer_cid_available]
    assert len(known) > 1 and {steering.quic_owner(cid, 3) for cid in known} == {1}
