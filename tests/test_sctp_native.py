"""SCTP directly on IP (``encapsulation: none``, protocol 132 on raw sockets): mux against mux, against usrsctp's
programs, and beside other SCTP endpoints of the host.

Raw sockets need root (CAP_NET_RAW): without, these tests skip and say so, except the option checks and the one
that runs mux without CAP_NET_RAW on purpose. Raw IP has no kernel port allocation, so no test names a fixed SCTP
port for mux: listeners take ``sctp_port: 0`` (a free port mux reserves host-wide among its endpoints, read back
from ``listener.address``) and clients a random one the same way. usrsctp's servers take the ports their code
fixes (echo_server 7, discard_server 9) or a random one well below the ephemeral range (tsctp); every usrsctp
program drops packets for ports it does not use (``blackhole`` 2), so tests running beside them do not collide.

OTHER_STACKS: a usrsctp program opens raw SCTP sockets whenever it runs as root, even with UDP encapsulation, so
while one runs anywhere on the host (another test, another user) it sees our packets on IP. ``blackhole`` keeps
it quiet except for one case RFC 9260 §8.4 5 answers whatever: a SHUTDOWN-ACK for an association it does not
have draws its SHUTDOWN-COMPLETE (T bit). So the end of a graceful close may see a second SHUTDOWN-COMPLETE,
which our endpoint drops and counts as out of the blue: the tests do not count on ``ootb`` staying 0 there.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mux import Connection, connect
from mux import config as cfg
from mux.sctp import rawip
from mux.sctp.chunks import CookieEchoChunk, DataChunk, InitChunk, ShutdownAckChunk
from mux.sctp.packet import parse_packet, serialize_packet
from mux.server import Server, StartError
from tests import usrsctp
from tests.conftest import ServerFactory
from tests.test_sctp_interop import (
    Discard,
    EchoRecorder,
    Recorder,
    assert_graceful,
    only_instance,
)

ROOT = Path(__file__).resolve().parents[1]


def _raw_unavailable() -> str | None:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, rawip.IPPROTO_SCTP).close()
    except PermissionError:
        return "SCTP on IP needs raw IP sockets: run the tests as root (or with CAP_NET_RAW)"
    except OSError as exc:
        return f"no raw IP sockets here: {exc}"
    return None


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


_no_raw = _raw_unavailable()
needs_raw = pytest.mark.skipif(_no_raw is not None, reason=_no_raw or "")
_no_usrsctp = usrsctp.missing("echo_server", "discard_server", "client", "tsctp")
needs_usrsctp = pytest.mark.skipif(_no_usrsctp is not None, reason=_no_usrsctp or "")
HOSTS = ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback"))]


class DatagramEcho(EchoRecorder):
    """Echoes datagrams too."""

    instances: ClassVar[list[Recorder]] = []

    def dgram_recv(self, conn: Connection, data: bytes, flags: int) -> None:
        conn.send_datagram(data)


class DatagramRecorder(Recorder):
    def init(self, opts: dict[str, Any]) -> None:
        super().init(opts)
        self.datagrams: list[bytes] = []

    def dgram_recv(self, conn: Connection, data: bytes, flags: int) -> None:
        self.datagrams.append(data)
        self.changed.set()


def behaviour_path(cls: type[Recorder]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


@pytest.fixture(autouse=True)
def fresh_instances() -> Iterator[None]:
    for cls in (Recorder, EchoRecorder, Discard, DatagramEcho):
        cls.instances.clear()
    yield


def native_listener(host: str = "127.0.0.1", name: str = "native", **extra: Any) -> dict[str, Any]:
    return {"transport": "sctp", "encapsulation": "none", "host": host, "sctp_port": 0, "name": name, **extra}


async def native_server(
    make_server: ServerFactory, cls: type[Recorder], host: str = "127.0.0.1", **extra: Any
) -> tuple[int, dict[str, int]]:
    """Start a mux server of ``cls`` on IP; the SCTP port it took and its endpoint's counters."""
    listener = (await make_server(behaviour_path(cls), [native_listener(host, **extra)])).listener("native")
    return int(listener.address[1]), listener.counters  # type: ignore[attr-defined]


def native_url(host: str, sctp_port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"sctp://{shown}?encapsulation=none&sctp_port={sctp_port}"


class Sniffer:
    """A raw protocol-132 socket with no filter: every SCTP packet the host receives (other tests' too), kept as
    (IP packet length, source port, destination port, chunk types) for the ports asked about."""

    def __init__(self, family: int = socket.AF_INET) -> None:
        self.sock = socket.socket(family, socket.SOCK_RAW, rawip.IPPROTO_SCTP)
        self.sock.setblocking(False)
        self.v4 = family == socket.AF_INET
        self.seen: list[tuple[int, int, int, list[str]]] = []
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            ip_length = int.from_bytes(data[2:4], "big") if self.v4 else len(data) + 40
            sctp = data[(data[0] & 15) * 4 :] if self.v4 else data
            try:
                packet = parse_packet(sctp)
            except Exception:
                continue
            self.seen.append((ip_length, packet.src_port, packet.dst_port, [type(c).__name__ for c in packet.chunks]))

    def involving(self, *ports: int) -> list[tuple[int, int, int, list[str]]]:
        return [p for p in self.seen if p[1] in ports or p[2] in ports]

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


# -- options (no root needed) -------------------------------------------------------------------------------------


def test_a_udp_port_on_ip_is_refused() -> None:
    from mux import preflight

    data = {"behaviour": "behaviours.echo:Echo", "listeners": [{**native_listener(), "port": 9899}]}
    with pytest.raises(cfg.ConfigError) as caught:
        preflight.check(cfg.parse(data, "<test>"), "<test>")
    assert str(caught.value) == (
        "<test>: listeners[0].port: SCTP directly on IP (encapsulation: none) has no UDP port; expected no port, "
        "and the SCTP port to listen on in sctp_port"
    )


def test_sctp_port_zero_only_on_ip_and_listener_names() -> None:
    from mux import preflight

    data = {"behaviour": "behaviours.echo:Echo", "listeners": [{"transport": "sctp", "port": 0, "sctp_port": 0}]}
    with pytest.raises(cfg.ConfigError, match=r"listeners\[0\].sctp_port: expected 1-65535 inside UDP"):
        preflight.check(cfg.parse(data, "<test>"), "<test>")
    ok = cfg.parse({"behaviour": "behaviours.echo:Echo", "listeners": [{**native_listener(), "name": None}]}, "<t>")
    assert cfg.listener_name(ok.listeners[0]) == "sctp:ip:0"


def test_two_listeners_on_one_sctp_port_on_ip_clash_in_check() -> None:
    from mux import preflight

    listeners = [native_listener(name="a", sctp_port=3868), native_listener("0.0.0.0", name="b", sctp_port=3868)]
    config = cfg.parse({"behaviour": "behaviours.echo:Echo", "listeners": listeners}, "<test>")
    with pytest.raises(
        cfg.ConfigError, match=r"listeners\[1\].sctp_port: SCTP port 3868 on IP clashes with listener 'a'"
    ):
        preflight.check(config, "<test>")
    # a UDP listener on UDP port 3868 is no clash: on IP there is no UDP socket
    listeners[1] = {"transport": "sctp", "host": "127.0.0.1", "port": 3868, "name": "b"}
    preflight.check(cfg.parse({"behaviour": "behaviours.echo:Echo", "listeners": listeners}, "<test>"), "<test>")


async def test_client_options_on_ip_refuse_udp_ports() -> None:
    with pytest.raises(ValueError, match="local_udp_port: SCTP directly on IP"):
        await connect(Recorder, "sctp://127.0.0.1?encapsulation=none&local_udp_port=5000")
    with pytest.raises(ValueError, match=r"port 5000: SCTP directly on IP .* has no UDP port; give the server's"):
        await connect(Recorder, "sctp://127.0.0.1:5000?encapsulation=none")


def test_port_filter_programs() -> None:
    """The BPF programs as the kernel gets them: IPv4 finds the SCTP header after the IP header's own length."""
    v4, v6 = rawip.port_filter(socket.AF_INET, 7), rawip.port_filter(socket.AF_INET6, 7)
    assert len(v4) == 5 * 8 and len(v6) == 4 * 8
    assert v4[:8] == bytes.fromhex("b100000000000000")  # ldxb 4*([0]&0xf)
    assert v6[:2] == (0x28).to_bytes(2, sys.byteorder) and v6[4:8] == (2).to_bytes(4, sys.byteorder)  # ldh [2]


# -- without CAP_NET_RAW ----------------------------------------------------------------------------------------


@needs_raw
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop CAP_NET_RAW")
def test_without_cap_net_raw_serve_and_client_fail_in_one_line(tmp_path: Path) -> None:
    """Root without CAP_NET_RAW (setpriv drops it from the bounding set, as a container without it would): the
    listener fails to start with one line naming it and saying what it needs; so does the client. No traceback."""
    path = tmp_path / "native.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            behaviour: behaviours.echo:Echo
            listeners:
              - {name: signalling, transport: sctp, encapsulation: none, host: 127.0.0.1, sctp_port: 3868}
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    drop = ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", sys.executable, "-m", "mux.cli"]
    serve = subprocess.run([*drop, "serve", str(path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    out = serve.stdout + serve.stderr
    assert serve.returncode == 1, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if "cannot start" in line]
    assert len(lines) == 1, out
    assert lines[0].endswith("cannot start: listener signalling (sctp 127.0.0.1:3868 on IP): " + rawip.NEEDS_ROOT), (
        lines
    )
    client = subprocess.run(
        [*drop, "client", "sctp://127.0.0.1?encapsulation=none&sctp_port=3868"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        input="",
    )
    assert client.returncode == 1 and "Traceback" not in client.stderr, client.stderr
    assert client.stderr.strip() == f"mux client: {rawip.NEEDS_ROOT}", client.stderr


# -- mux against mux -----------------------------------------------------------------------------------------------


@needs_raw
@pytest.mark.parametrize("host", HOSTS)
async def test_echo_streams_datagrams_and_graceful_close(make_server: ServerFactory, host: str) -> None:
    port, stats = await native_server(make_server, DatagramEcho, host)
    client = DatagramRecorder()
    conn = await connect(client, native_url(host, port))
    assert conn.peer_address[:2] == (host, port)  # on IP the peer is (address, SCTP port)
    rng = random.Random(132)
    ordered = [b"hello", rng.randbytes(1300), rng.randbytes(30000), b"z"]
    unordered = [rng.randbytes(n) for n in (7, 3000)]
    first, second = conn.open_stream(), conn.open_stream()
    for data in ordered:
        await first.send(data, ppid=51)
    for data in unordered:
        await second.send(data, unordered=True)
    conn.send_datagram(b"a datagram")
    total = len(ordered) + len(unordered)
    await client.until(lambda: len(client.messages) >= total and client.datagrams != [], 10, "not all came back")
    assert [data for sid, data, _ in client.messages if sid == first.id] == ordered
    assert sorted(data for sid, data, _ in client.messages if sid == second.id) == sorted(unordered)
    assert [data for sid, data, p in client.messages if p.get("ppid") == 51] == ordered
    assert client.datagrams == [b"a datagram"]

    conn.close()
    await asyncio.wait_for(conn.wait_closed(), 10)
    assert_graceful(client, by="local")
    server = await only_instance(DatagramEcho)
    await server.until(lambda: "closed" in server.kinds(), 5, "server association never closed")
    assert_graceful(server, by="peer")
    # the kernel's filter gave the listener its own packets only, with good checksums (not ``ootb``: a usrsctp
    # program elsewhere on the host answers our SHUTDOWN-ACK too, see OTHER_STACKS, and its SHUTDOWN-COMPLETE
    # may come second)
    assert stats["wrong_port"] == stats["bad_crc"] == stats["malformed"] == 0, stats
    assert stats["accepted"] == 1, stats


@needs_raw
@pytest.mark.parametrize("host", HOSTS)
async def test_packets_fill_the_path_mtu_without_a_udp_header(make_server: ServerFactory, host: str) -> None:
    """On IP an SCTP packet gets pmtu - 20 (IPv4) or - 40 (IPv6) bytes, 8 more than in UDP: the biggest IP packets
    a bulk message makes are exactly pmtu long (mux to mux agrees on I-DATA, whose fragments fill the packet)."""
    sniffer = Sniffer(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        # path MTU discovery off: the packets are to fill pmtu, not grow past it
        port, _ = await native_server(make_server, Discard, host, pmtu=1280, maximum_mtu=1280)
        client = Recorder()
        conn = await connect(client, native_url(host, port) + "&pmtu=1280&maximum_mtu=1280")
        stream = conn.open_stream()
        await stream.send(bytes(50_000))
        server = await only_instance(Discard)
        async with asyncio.timeout(10):
            while server.bytes < 50_000:  # Discard counts without waking anyone: poll
                await asyncio.sleep(0.01)
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 10)
        await asyncio.sleep(0.05)
        to_server = [length for length, _, dst, _ in sniffer.involving(port) if dst == port]
    finally:
        sniffer.close()
    assert max(to_server) == 1280, sorted(set(to_server))


@needs_raw
async def test_packets_for_another_sctp_port_are_ignored_not_aborted(make_server: ServerFactory) -> None:
    """Another SCTP endpoint on the host (here a bare raw socket on its own port) gets packets that would each
    draw an answer if they were ours (INIT, DATA, SHUTDOWN-ACK, COOKIE-ECHO out of the blue): mux's listener and
    client, with a live association between them, never see them and never answer them."""
    port, stats = await native_server(make_server, EchoRecorder)
    client = Recorder()
    conn = await connect(client, native_url("127.0.0.1", port))
    stream = conn.open_stream()
    await stream.send(b"before")
    await client.until(lambda: len(client.messages) == 1, 5, "no echo")
    server = await only_instance(EchoRecorder)
    client_stats: dict[str, int] = conn._tconn._counters  # type: ignore[attr-defined]
    stray_counts = ("wrong_port", "ootb", "init", "bad_init", "bad_cookie", "bad_vtag", "malformed", "rx")
    strays_seen = lambda: {k: (stats[k], client_stats[k]) for k in stray_counts}  # noqa: E731
    await asyncio.sleep(0.5)  # the delayed SACKs (sackdelay 200 ms) are out of the way: nothing more is due

    other = rawip.open_raw("127.0.0.1", 0)  # the other endpoint, reading what comes to its port
    stranger = rawip.open_raw("127.0.0.1", 0)  # a peer of it, sending from its own port
    sniffer = Sniffer()
    try:
        strays = [
            [InitChunk(0x1234, 65536, 1, 1, 1)],
            [DataChunk(1, 0, 0, 0, b"stray")],
            [ShutdownAckChunk()],
            [CookieEchoChunk(b"\x00" * 64)],
        ]
        for chunks in strays:
            stranger.sendto(
                serialize_packet(stranger.port, other.port, 0 if chunks[0].TYPE == 1 else 0xBAD, chunks),
                ("127.0.0.1", other.port),
            )
        seen_before = strays_seen()
        await asyncio.sleep(0.3)
        seen_after = strays_seen()
        arrived = []
        other.setblocking(False)
        while True:
            try:
                arrived.append(parse_packet(other.recvfrom(65536)[0]))
            except BlockingIOError:
                break
        # what anyone sent back to the stranger, but the SHUTDOWN-COMPLETE a usrsctp program on the host may send
        answers = [p for p in sniffer.seen if p[2] == stranger.port and p[3] != ["ShutdownCompleteChunk"]]
        await stream.send(b"after")
        await client.until(lambda: len(client.messages) == 2, 5, "the association did not survive")
    finally:
        sniffer.close()
        other.close()
        stranger.close()
    assert len(arrived) == len(strays)  # they were sent, to the host, to the other port
    assert answers == []  # nobody answered
    # mux's listener and client never even saw them: the kernel's filter kept them out
    assert seen_after == seen_before
    assert "transport_shutdown" not in client.kinds() and "transport_shutdown" not in server.kinds()
    conn.close()
    await asyncio.wait_for(conn.wait_closed(), 10)


@needs_raw
async def test_two_listeners_and_their_clients_share_protocol_132(make_server: ServerFactory) -> None:
    """Two listeners on IP (two SCTP ports) in one process, a client each at once: each gets its own association
    and none of the other's packets."""
    server = await make_server(behaviour_path(EchoRecorder), [native_listener(name="one"), native_listener(name="two")])
    ports = [int(server.listener(name).address[1]) for name in ("one", "two")]
    assert ports[0] != ports[1]
    clients = [Recorder(), Recorder()]
    conns: list[Connection] = [
        await connect(c, native_url("127.0.0.1", p)) for c, p in zip(clients, ports, strict=True)
    ]
    for i, conn in enumerate(conns):
        stream = conn.open_stream()
        for n in range(20):
            await stream.send(f"client {i} message {n}".encode())
    for i, client in enumerate(clients):
        await client.until(lambda c=client: len(c.messages) == 20, 10, "not every echo came back")  # type: ignore[misc]
        assert [data for _, data, _ in client.messages] == [f"client {i} message {n}".encode() for n in range(20)]
    for conn in conns:
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 10)
    for name in ("one", "two"):
        stats = server.listener(name).counters  # type: ignore[attr-defined]
        assert stats["accepted"] == 1 and stats["wrong_port"] == 0, (name, stats)


@needs_raw
async def test_an_sctp_port_is_reserved_host_wide(make_server: ServerFactory) -> None:
    """A second listener on a taken SCTP port fails in one line, in this process or in another."""
    port, _ = await native_server(make_server, EchoRecorder)
    config = cfg.parse(
        {"behaviour": behaviour_path(EchoRecorder), "listeners": [native_listener(sctp_port=port)]}, "<t>"
    )
    second = Server(config)
    with pytest.raises(
        StartError, match=f"listener native \\(sctp 127.0.0.1:{port} on IP\\): SCTP port {port} is already used"
    ):
        await second.start()
    probe = "\n".join(
        [
            "from mux.sctp import rawip",
            "try:",
            f"    rawip.open_raw('127.0.0.1', {port})",
            "except rawip.PortTaken as exc:",
            "    print(exc)",
        ]
    )
    other = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert other.stdout.strip() == f"SCTP port {port} is already used by another mux endpoint on this host", other


@needs_raw
async def test_a_lingering_client_gives_its_sctp_port_to_the_next(make_server: ServerFactory) -> None:
    """A client that closed gracefully keeps its raw socket a while (to answer a retransmitted SHUTDOWN-ACK), and
    with it its SCTP port's reservation; a new client configured with that port takes it over, as over UDP."""
    from mux.sctp import client as sctp_client

    port, stats = await native_server(make_server, EchoRecorder)
    mine = usrsctp_port()
    for round_ in range(2):
        client = Recorder()
        conn = await connect(client, native_url("127.0.0.1", port) + f"&local_sctp_port={mine}")
        assert conn.local_address[1] == mine
        stream = conn.open_stream()
        await stream.send(b"round %d" % round_)
        await client.until(lambda c=client: len(c.messages) == 1, 5, "no echo")  # type: ignore[misc]
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 10)
        assert_graceful(client, by="local")
        lingering = [d for d in sctp_client._LINGERING if isinstance(d.sock, rawip.RawSctpSocket)]
        assert [d.sock.getsockname()[1] for d in lingering] == [mine]
    assert stats["accepted"] == 2


# -- usrsctp on IP ------------------------------------------------------------------------------------------------


def usrsctp_port() -> int:
    """A port for a usrsctp server: below the ephemeral range clients (theirs and ours) draw from, and not one a
    mux endpoint holds right now."""
    while True:
        port = random.randrange(20000, 49152)
        token = rawip._reserve(socket.AF_INET, port)
        if token is not None:
            token.close()
            return port


@needs_raw
@needs_usrsctp
@pytest.mark.parametrize("host", HOSTS)
async def test_usrsctp_client_on_ip_against_our_echo_server(make_server: ServerFactory, host: str) -> None:
    port, stats = await native_server(make_server, EchoRecorder, host)
    lines = [b"hello\n", b"SCTP on IP " + b"0123456789" * 6 + b"\n", b"last line \xc3\xa9\t!\n"]
    program = usrsctp.client(b"".join(lines), remote_udp=0, local_udp=0, port=port, host=host)
    with usrsctp.running(program) as (client,):
        code = await asyncio.to_thread(client.wait, 20)
        out = client.raw_output()
    assert code == 0, out.decode(errors="replace")
    assert out.startswith(b"".join(lines)), out[:400]
    assert b"SCTP_SHUTDOWN_COMP" in out and b"SCTP_COMM_LOST" not in out, out.decode(errors="replace")
    server = await only_instance(EchoRecorder)
    await server.until(lambda: "closed" in server.kinds(), 5, "server association never closed")
    assert [data for _, data, _ in server.messages] == lines
    assert_graceful(server, by="peer")
    assert stats["bad_crc"] == 0


@needs_raw
@needs_usrsctp
async def test_our_client_on_ip_against_usrsctp_echo_server() -> None:
    rng = random.Random(4960)
    messages = [(b"hello", 0), (rng.randbytes(1300), 53), (rng.randbytes(usrsctp.ECHO_MAX), 0xFFFFFFFF), (b"z", 1)]
    with usrsctp.running(usrsctp.echo_server(0, 0)) as (echo,):
        client = Recorder()
        conn = await connect(client, native_url("127.0.0.1", usrsctp.ECHO_PORT))
        stream = conn.open_stream()
        for data, ppid in messages:
            await stream.send(data, ppid=ppid)
        await client.until(lambda: len(client.messages) >= len(messages), 15, "not every message came back")
        assert [(data, p["ppid"]) for _, data, p in client.messages] == messages
        before = len(usrsctp.notification_lengths(echo))
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 10)
        assert_graceful(client, by="local")
        ends = await asyncio.to_thread(echo.wait_for, usrsctp.NOTIFICATION, 5, before + len(usrsctp.ECHO_GRACEFUL_END))
        assert [int(m[1]) for m in ends[before:]] == usrsctp.ECHO_GRACEFUL_END, echo.tail()
        assert sorted(usrsctp.echoed_messages(echo)) == sorted((len(d), p) for d, p in messages)


@needs_raw
@needs_usrsctp
async def test_our_client_on_ip_against_usrsctp_discard_server() -> None:
    lengths = [1, 100, 1200, 5000, 10240]
    with usrsctp.running(usrsctp.discard_server(0, 0)) as (discard,):
        client = Recorder()
        conn = await connect(client, native_url("127.0.0.1", usrsctp.DISCARD_PORT))
        stream = conn.open_stream()
        for n in lengths:
            await stream.send(b"d" * n, ppid=n)
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 10)
        assert_graceful(client, by="local")
        seen = await asyncio.to_thread(discard.wait_for, usrsctp.RECEIVED, 5, len(lengths))
    assert [(int(m[1]), int(m[2])) for m in seen] == [(n, n) for n in lengths]


@needs_raw
@needs_usrsctp
async def test_tsctp_on_ip_into_our_server(make_server: ServerFactory) -> None:
    port, _ = await native_server(make_server, Discard, pmtu=1500)
    count, length = 3000, 1200
    program = usrsctp.tsctp_client(remote_udp=0, local_udp=0, port=port, length=length, messages=count)
    with usrsctp.running(program) as (tsctp,):
        code = await asyncio.to_thread(tsctp.wait, 30)
        sent = usrsctp.parse_sent(tsctp.output())
    assert code == 0 and sent is not None, tsctp.tail()
    server = await only_instance(Discard)
    assert isinstance(server, Discard)
    await server.until(lambda: "closed" in server.kinds(), 10, "server association never closed")
    assert (server.count, server.bytes) == (count, count * length)
    assert server.lengths == {length} and server.foreign == 0
    assert_graceful(server, by="peer")


@needs_raw
@needs_usrsctp
async def test_our_bulk_on_ip_into_tsctp_server() -> None:
    port = usrsctp_port()
    count, length = 300, 9000
    with usrsctp.running(usrsctp.tsctp_server(0, port)) as (tsctp,):
        client = Recorder()
        conn = await connect(client, native_url("127.0.0.1", port) + "&pmtu=1500")
        stream = conn.open_stream()
        for _ in range(count):
            await stream.send(b"b" * length)
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 20)
        assert_graceful(client, by="local")
        (report,) = await asyncio.to_thread(usrsctp.wait_received, tsctp, 1, 10)
        errors = usrsctp.receive_errors(tsctp)
    assert errors == [], errors
    assert (report.length, report.messages, report.bytes, report.recv_calls) == (length, count, count * length, count)
