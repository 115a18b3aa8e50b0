"""Our SCTP (over UDP, RFC 6951) against usrsctp's own programs, both ways round.

Each test checks the data byte for byte (or message and byte counts for bulk) and that the association ends
with SHUTDOWN, never ABORT, whichever side starts it. The programs come from Debian's libusrsctp-examples
(see tests/usrsctp.py for how they behave); without them the module is skipped.

usrsctp has I-DATA (RFC 8260) but leaves it off, and no example program turns it on; with ``interleaving`` the
programs run with a small LD_PRELOAD shim (``usrsctp.interleaving``) that sets the two socket options every socket
needs for it, so the same tests run over I-DATA and I-FORWARD-TSN too (checked: both ends agreed on it).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from mux import Connection, ConnectionBehaviour, Stream, connect, registry
from mux.sctp import extensions as ext
from tests import usrsctp
from tests.conftest import ServerFactory

_why_not = usrsctp.missing("echo_server", "client", "tsctp") or (
    None if "sctp" in registry.plugins() else "mux has no sctp transport registered"
)
pytestmark = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")

#: the SCTP port our servers listen on inside the UDP encapsulation
SCTP_PORT = 7
TSCTP_PORT = 5001


class Recorder(ConnectionBehaviour):
    """Records messages and the end-of-life callbacks; the base of our servers and clients here."""

    #: one instance per connection, newest last (servers are created by the framework, so tests look here)
    instances: ClassVar[list[Recorder]] = []

    def init(self, opts: dict[str, Any]) -> None:
        self.messages: list[tuple[int, bytes, dict[str, Any]]] = []
        self.events: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()
        type(self).instances.append(self)

    def _note(self, kind: str, detail: Any) -> None:
        self.events.append((kind, detail))
        self.changed.set()

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> Any:
        self.messages.append((stream.id, data, dict(props)))
        self.changed.set()

    def shutdown(self, conn: Connection, error_code: int) -> None:
        self._note("shutdown", error_code)

    def transport_shutdown(self, conn: Connection, props: dict[str, Any]) -> None:
        self._note("transport_shutdown", props)

    def closed(self, conn: Connection, props: dict[str, Any]) -> None:
        self._note("closed", props)

    async def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"{what} within {timeout}s; events so far: {self.events}") from None

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


class EchoRecorder(Recorder):
    """Sends each message back on its stream with the same PPID and ordering."""

    instances: ClassVar[list[Recorder]] = []

    async def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        super().stream_data(stream, data, fin, props)
        await stream.send(data, ppid=props.get("ppid", 0), unordered=props.get("unordered", False))


class Discard(Recorder):
    """Counts messages and bytes instead of keeping them (tsctp sends thousands)."""

    instances: ClassVar[list[Recorder]] = []

    def init(self, opts: dict[str, Any]) -> None:
        super().init(opts)
        self.count = 0
        self.bytes = 0
        self.lengths: set[int] = set()
        self.foreign = 0  # messages holding anything but tsctp's filler byte

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        self.count += 1
        self.bytes += len(data)
        self.lengths.add(len(data))
        if data.count(b"b") != len(data):
            self.foreign += 1


def behaviour_path(cls: type[ConnectionBehaviour]) -> str:
    # this module's own name, however pytest imported it, so the server gets these very classes
    return f"{__name__}:{cls.__name__}"


@pytest.fixture(autouse=True)
def fresh_instances() -> Iterator[None]:
    for cls in (Recorder, EchoRecorder, Discard):
        cls.instances.clear()
    yield


async def sctp_server(make_server: ServerFactory, cls: type[ConnectionBehaviour]) -> int:
    """Start an in-process mux server running ``cls`` and return its UDP port."""
    server = await make_server(
        behaviour_path(cls),
        [{"transport": "sctp", "host": "127.0.0.1", "port": 0, "sctp_port": SCTP_PORT, "name": "sctp"}],
    )
    return int(server.listener("sctp").address[1])


async def only_instance(cls: type[Recorder], timeout: float = 5.0) -> Recorder:
    async with asyncio.timeout(timeout):
        while not cls.instances:
            await asyncio.sleep(0.01)
    assert len(cls.instances) == 1, f"expected one association, got {len(cls.instances)}"
    return cls.instances[0]


def features(recorder: Recorder) -> int:
    """What the recorder's association agreed (``mux.sctp.extensions`` bits)."""
    return int(recorder.conn._tconn.assoc.features)  # type: ignore[attr-defined]


def assert_graceful(recorder: Recorder, *, by: str) -> None:
    """The association ended by SHUTDOWN: no transport_shutdown (ABORT, timeout...) and a clean ``closed``."""
    kinds = recorder.kinds()
    assert "transport_shutdown" not in kinds, f"association was not shut down gracefully: {recorder.events}"
    assert kinds[-1] == "closed", recorder.events
    props = recorder.events[-1][1]
    assert props.get("by") == by and "error" not in props, props
    if by == "peer":
        assert kinds == ["shutdown", "closed"] and recorder.events[0][1] == 0, recorder.events
    else:
        assert kinds == ["closed"], recorder.events


async def test_usrsctp_client_against_our_echo_server(make_server: ServerFactory) -> None:
    server_udp = await sctp_server(make_server, EchoRecorder)
    client_udp = usrsctp.free_udp_port()
    # the client reads lines with fgets into 80 bytes: keep each (newline included) within 79
    lines = [b"hello\n", b"\n", b"mux interop " + b"0123456789" * 6 + b"abcde\n", b"last line \xc3\xa9\t!\n"]
    assert all(len(line) <= 79 for line in lines)
    with usrsctp.running(usrsctp.client(b"".join(lines), remote_udp=server_udp, local_udp=client_udp)) as (client,):
        code = await asyncio.to_thread(client.wait, 20)
        out = client.raw_output()
    assert code == 0, out.decode(errors="replace")
    # replies are written raw as they come, before the (block-buffered) notification text
    assert out.startswith(b"".join(lines)), out[:400]
    assert b"SCTP_SHUTDOWN_COMP" in out and b"SCTP_COMM_LOST" not in out, out.decode(errors="replace")

    server = await only_instance(EchoRecorder)
    await server.until(lambda: "closed" in server.kinds(), 5, "server association never closed")
    assert [data for _, data, _ in server.messages] == lines
    assert {(sid, props["ppid"], props["unordered"]) for sid, _, props in server.messages} == {(0, 0, False)}
    assert_graceful(server, by="peer")


@pytest.mark.parametrize("interleaving", [False, True])
async def test_our_client_against_usrsctp_echo_server(interleaving: bool) -> None:
    echo_udp, client_udp = usrsctp.free_udp_ports(2)
    rng = random.Random(6951)
    ordered = [
        (b"hello", 0),
        (bytes(range(256)) * 4, 51),  # 1 KiB: one chunk
        (rng.randbytes(1300), 53),  # just over one chunk at pmtu 1280
        (rng.randbytes(4321), 0x7FFFFFFF),
        (rng.randbytes(usrsctp.ECHO_MAX), 0xFFFFFFFF),  # the most echo_server takes, 9 fragments
        (b"z", 1),
    ]
    unordered = [(rng.randbytes(n), 99) for n in (7, 3000, 10000)]
    with usrsctp.running(usrsctp.echo_server(echo_udp, client_udp, interleaving=interleaving)) as (echo,):
        client = Recorder()
        conn = await connect(
            client,
            f"sctp://127.0.0.1:{echo_udp}",
            options={"sctp_port": usrsctp.ECHO_PORT, "local_udp_port": client_udp},
        )
        assert bool(features(client) & ext.IDATA) == interleaving
        first, second = conn.open_stream(), conn.open_stream()
        for data, ppid in ordered:
            await first.send(data, ppid=ppid)
        for data, ppid in unordered:
            await second.send(data, ppid=ppid, unordered=True)
        total = len(ordered) + len(unordered)
        await client.until(lambda: len(client.messages) >= total, 15, "not every message came back")

        got_first = [(data, p["ppid"]) for sid, data, p in client.messages if sid == first.id]
        got_second = [(data, p["ppid"]) for sid, data, p in client.messages if sid == second.id]
        assert got_first == ordered  # same bytes, same PPID, same order
        assert sorted(got_second) == sorted(unordered)
        assert {p["unordered"] for sid, _, p in client.messages if sid == second.id} == {True}
        assert {p["unordered"] for sid, _, p in client.messages if sid == first.id} == {False}

        before = len(usrsctp.notification_lengths(echo))
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 10)
        assert_graceful(client, by="local")
        # and the peer's view: its notifications must show a graceful end, not an ABORT
        for count in range(1, len(usrsctp.ECHO_GRACEFUL_END) + 1):
            ends = await asyncio.to_thread(echo.wait_for, usrsctp.NOTIFICATION, 5, before + count)
            got = [int(m[1]) for m in ends[before:]]
            assert got == usrsctp.ECHO_GRACEFUL_END[:count], f"not a graceful end (28 = ABORT):\n{echo.tail()}"
        # what echo_server itself saw: every message whole (never a partial delivery), PPIDs intact
        seen = usrsctp.echoed_messages(echo)
        expected = [(len(data), ppid) for data, ppid in ordered + unordered]
        assert sorted(seen) == sorted(expected), echo.tail()


@pytest.mark.parametrize(
    ("length", "count", "interleaving"), [(1200, 3000, False), (9000, 300, False), (9000, 300, True)]
)
async def test_tsctp_bulk_into_our_server(
    make_server: ServerFactory, length: int, count: int, interleaving: bool
) -> None:
    server_udp = await sctp_server(make_server, Discard)
    client_udp = usrsctp.free_udp_port()
    program = usrsctp.tsctp_client(
        remote_udp=server_udp,
        local_udp=client_udp,
        port=SCTP_PORT,
        length=length,
        messages=count,
        interleaving=interleaving,
    )
    with usrsctp.running(program) as (tsctp,):
        code = await asyncio.to_thread(tsctp.wait, 30)
        sent = usrsctp.parse_sent(tsctp.output())
    assert code == 0 and sent is not None, tsctp.tail()
    assert (sent.messages, sent.length) == (count, length)

    server = await only_instance(Discard)
    assert isinstance(server, Discard)
    await server.until(lambda: "closed" in server.kinds(), 10, "server association never closed")
    assert server.count == sent.messages
    assert server.bytes == sent.bytes == count * length
    assert server.lengths == {length} and server.foreign == 0
    assert bool(features(server) & ext.IDATA) == interleaving
    assert_graceful(server, by="peer")


@pytest.mark.parametrize(
    ("length", "count", "interleaving"), [(1200, 3000, False), (9000, 300, False), (9000, 300, True)]
)
async def test_our_bulk_into_tsctp_server(length: int, count: int, interleaving: bool) -> None:
    server_udp, client_udp = usrsctp.free_udp_ports(2)
    with usrsctp.running(usrsctp.tsctp_server(server_udp, TSCTP_PORT, interleaving=interleaving)) as (tsctp,):
        client = Recorder()
        conn = await connect(
            client,
            f"sctp://127.0.0.1:{server_udp}",
            options={"sctp_port": TSCTP_PORT, "local_udp_port": client_udp},
        )
        assert bool(features(client) & ext.IDATA) == interleaving
        stream = conn.open_stream()
        message = bytes([length % 251]) * length
        for _ in range(count):
            await stream.send(message)
        conn.close()  # graceful: everything queued is delivered first
        await asyncio.wait_for(conn.wait_closed(), 20)
        assert_graceful(client, by="local")
        (report,) = await asyncio.to_thread(usrsctp.wait_received, tsctp, 1, 10)
        errors = usrsctp.receive_errors(tsctp)
    assert errors == [], errors  # tsctp's recv failed: the association was aborted
    assert (report.length, report.messages, report.bytes) == (length, count, count * length)
    assert report.recv_calls == count  # one whole message per recv: nothing split or merged


# -- PR-SCTP (RFC 3758) with usrsctp, through a lossy path --------------------------------------------------------


def _assoc_stats(recorder: Recorder) -> dict[str, Any]:
    stats: dict[str, Any] = recorder.conn._tconn.assoc.stats  # type: ignore[attr-defined]
    return stats


@pytest.mark.parametrize(
    ("policy", "value", "interleaving"), [(2, 0, False), (1, 20, False), (2, 0, True)]
)  # tsctp -P: 2 = rtx (count), 1 = ttl (ms)
async def test_usrsctp_abandons_messages_and_its_forward_tsns_move_us_on(
    make_server: ServerFactory, policy: int, value: int, interleaving: bool
) -> None:
    """tsctp gives lost messages up (PR-SCTP); our receiver follows its FORWARD-TSNs (I-FORWARD-TSNs) and never
    stalls."""
    from mux.impair.model import Impairment
    from mux.impair.proxy import ImpairProxy

    server_udp = await sctp_server(make_server, Discard)
    client_udp = usrsctp.free_udp_port()
    count, length = 600, 1200
    # 10 ms each way: a lost message's repair takes more than its 20 ms lifetime (our SACKs come at once)
    path = Impairment(loss=0.05, delay_ms=10.0)
    async with ImpairProxy(("127.0.0.1", 0), ("127.0.0.1", server_udp), up=path, down=path, seed=9) as proxy:
        program = usrsctp.tsctp_client(
            remote_udp=proxy.address[1],
            local_udp=client_udp,
            port=SCTP_PORT,
            length=length,
            messages=count,
            extra=["-P", policy, "-t", value],
            interleaving=interleaving,
        )
        with usrsctp.running(program) as (tsctp,):
            code = await asyncio.to_thread(tsctp.wait, 60)
        assert code == 0, tsctp.tail()
        server = await only_instance(Discard)
        assert isinstance(server, Discard)
        # tsctp is gone: if its SHUTDOWN-COMPLETE was lost, our SHUTDOWN-ACK is answered as its host would
        with await asyncio.to_thread(usrsctp.ShutdownAckAnswerer, client_udp):
            await server.until(lambda: "closed" in server.kinds(), 20, "server association never closed")
    stats = _assoc_stats(server)
    assert stats.get("forward_tsns_received", 0) > 0, stats  # usrsctp did give messages up, and told us
    assert 0 < server.count < count and server.lengths == {length} and server.foreign == 0
    assert bool(features(server) & ext.IDATA) == interleaving
    assert_graceful(server, by="peer")


@pytest.mark.parametrize(("length", "interleaving"), [(1000, False), (1000, True), (3000, True)])
async def test_our_abandoned_messages_are_skipped_by_usrsctp(length: int, interleaving: bool) -> None:
    """We give lost messages up (rexmit 0) and usrsctp's receiver follows our FORWARD-TSNs (I-FORWARD-TSNs,
    naming a message by its MID, some of them messages of three chunks) to a graceful end."""
    from mux.impair.model import Impairment
    from mux.impair.proxy import ImpairProxy

    server_udp, client_udp = usrsctp.free_udp_ports(2)
    count = 2000
    tsctp_server = usrsctp.tsctp_server(server_udp, TSCTP_PORT, interleaving=interleaving)
    with usrsctp.running(tsctp_server) as (tsctp,):
        async with ImpairProxy(
            ("127.0.0.1", 0), ("127.0.0.1", server_udp), up=Impairment(loss=0.05), down=Impairment(loss=0.05), seed=3
        ) as proxy:
            client = Recorder()
            conn = await connect(
                client,
                f"sctp://127.0.0.1:{proxy.address[1]}",
                options={"sctp_port": TSCTP_PORT, "local_udp_port": client_udp},
            )
            stream = conn.open_stream()
            message = b"b" * length
            for _ in range(count):
                await stream.send(message, reliability="rexmit", param=0)
            conn.close()
            await asyncio.wait_for(conn.wait_closed(), 30)
            assert_graceful(client, by="local")
            stats = _assoc_stats(client)
            assert bool(features(client) & ext.IDATA) == interleaving
            (report,) = await asyncio.to_thread(usrsctp.wait_received, tsctp, 1, 10)
            errors = usrsctp.receive_errors(tsctp)
    assert errors == [], errors
    assert stats.get("abandoned_messages", 0) > 0 and stats.get("forward_tsns_sent", 0) > 0, stats
    assert report.length == length and 0 < report.messages < count
    assert report.messages + stats["abandoned_messages"] >= count  # what was not given up arrived


# -- reliable transfer through a lossy, reordering path -----------------------------------------------------------


async def test_tsctp_reliable_transfer_through_loss_and_reordering(make_server: ServerFactory) -> None:
    """tsctp sends 1500 reliable messages of 1200 bytes through 5% loss and 5% reordering each way (its DATA and our
    SACKs): every message arrives, whole and once, and the association still ends with SHUTDOWN."""
    from mux.impair.model import Impairment
    from mux.impair.proxy import ImpairProxy

    server_udp = await sctp_server(make_server, Discard)
    client_udp = usrsctp.free_udp_port()
    count, length = 1500, 1200
    lossy = Impairment(loss=0.05, reorder=0.05)
    async with ImpairProxy(("127.0.0.1", 0), ("127.0.0.1", server_udp), up=lossy, down=lossy, seed=21) as proxy:
        program = usrsctp.tsctp_client(
            remote_udp=proxy.address[1], local_udp=client_udp, port=SCTP_PORT, length=length, messages=count
        )
        with usrsctp.running(program) as (tsctp,):
            code = await asyncio.to_thread(tsctp.wait, 60)
            sent = usrsctp.parse_sent(tsctp.output())
        assert code == 0 and sent is not None, tsctp.tail()
        server = await only_instance(Discard)
        assert isinstance(server, Discard)
        # tsctp is gone: if its SHUTDOWN-COMPLETE was lost, our SHUTDOWN-ACK is answered as its host would
        with await asyncio.to_thread(usrsctp.ShutdownAckAnswerer, client_udp):
            await server.until(lambda: "closed" in server.kinds(), 20, "server association never closed")
        path = proxy.stats()
    assert (sent.messages, sent.length) == (count, length)
    assert server.count == count and server.bytes == count * length
    assert server.lengths == {length} and server.foreign == 0
    assert_graceful(server, by="peer")
    # the path did lose and reorder, both ways
    assert path.up.dropped_loss > 0 and path.down.dropped_loss > 0, path
    assert path.up.reordered > 0 and path.down.reordered > 0, path
