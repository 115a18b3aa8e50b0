"""SCTP endpoint against hostile or moving peers (issue 9): cookies bound to the whole UDP address, following a
peer's new UDP port (RFC 6951 §5.4), the cap on what an INIT-ACK reflects, unique local tags, and a client that
does not answer INITs with cookies. In memory with tests/sctp_link.py, and through real loopback sockets."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, cast

import pytest

from mux import Connection, ConnectionBehaviour, Stream, connect, registry
from mux.sctp import events as ev
from mux.sctp.association import ESTABLISHED, Association
from mux.sctp.chunks import (
    AbortChunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    InitAckChunk,
    InitChunk,
    ShutdownCompleteChunk,
)
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import MAX_UNRECOGNIZED_REPORT, PORT_HOLD_DOWN, Endpoint
from mux.sctp.listener import SctpListener
from mux.sctp.packet import parse_packet, serialize_packet
from mux.sctp.params import Param, UnknownParam, UnrecognizedParam, param_action
from tests.conftest import ServerFactory
from tests.sctp_link import Network, Node, RawPeer, cookie_of, drain, handshake, init_ack_for, raw_connect

pytestmark = pytest.mark.skipif("sctp" not in registry.plugins(), reason="mux has no sctp transport registered")

A = ("10.0.0.1", 40001)
A_NEW = ("10.0.0.1", 40777)  # the same host from another UDP port: its NAT rebound the mapping
A_THIRD = ("10.0.0.1", 40999)
B = ("10.0.0.2", 40002)
NOW = 1000.0


def server_endpoint(rng: random.Random | None = None, **kw: Any) -> Endpoint:
    return Endpoint(SctpConfig(), local_port=5000, secret=b"s" * 32, rng=rng or random.Random(7), **kw)


def established_raw() -> tuple[Endpoint, Association, RawPeer]:
    server = server_endpoint()
    assoc, peer, _ = raw_connect(server, A, NOW)
    drain(assoc)
    return server, assoc, peer


def rebind(net: Network, node: Node, new_addr: tuple[str, int]) -> None:
    """``node``'s NAT maps it to a new UDP port: what is on its way to the old one is lost."""
    del net.nodes[node.addr]
    node.addr = new_addr
    net.nodes[new_addr] = node


# -- the cookie binds the UDP port ---------------------------------------------------------------------------------


def test_cookie_replayed_from_another_udp_port_is_a_bad_cookie() -> None:
    server = server_endpoint()
    ack = init_ack_for(server, A, NOW)
    echo = serialize_packet(6000, 5000, ack.initiate_tag, [CookieEchoChunk(cookie_of(ack))])
    # the same host, the same SCTP port, another UDP port: not where the INIT came from
    assert server.receive_datagram(echo, A_NEW, NOW) is None
    assert server.stats["bad_cookie"] == 1 and server.stats["accepted"] == 0
    assert list(server.associations) == [] and server.next_event() is None
    assert server.datagrams_to_send(NOW) == []  # silently discarded (§5.1.5)
    first = server.receive_datagram(echo, A, NOW)
    assert first is not None and first.peer_addr == A
    # replayed again once the association exists: still no second one, and it does not move the first
    assert server.receive_datagram(echo, A_NEW, NOW + 0.1) is None
    assert server.stats["bad_cookie"] == 2 and server.stats["accepted"] == 1
    assert list(server.associations) == [first] and first.peer_addr == A
    assert server.stats["port_changes"] == 0


# -- following a peer's new UDP port -------------------------------------------------------------------------------


def test_peer_port_change_is_followed_and_reported() -> None:
    server, assoc, peer = established_raw()
    server.receive_datagram(peer.packet(peer.data(b"moved")), A_NEW, NOW + 0.1)
    event = server.next_event()
    assert isinstance(event, ev.PeerAddressChanged)
    assert event.association is assoc and event.previous == A
    assert server.next_event() is None
    assert assoc.peer_addr == A_NEW and assoc.state == ESTABLISHED
    assert drain(assoc) == [ev.DataReceived(0, b"moved", 0, False)]
    out = assoc.datagrams_to_send(NOW + 0.1)
    assert out and {addr for _data, addr in out} == {A_NEW}  # the SACK goes to the new port
    assert server.stats["port_changes"] == 1 and server.stats["ootb"] == 0
    # the new address now finds it directly; removing it forgets both the address and its tag
    assert server.receive_datagram(peer.packet(peer.data(b"again")), A_NEW, NOW + 0.2) is assoc
    assert server.stats["port_changes"] == 1
    server.remove(assoc)
    assert list(server.associations) == []
    server.receive_datagram(peer.packet(peer.data(b"late")), A_THIRD, NOW + 5)
    assert server.stats["ootb"] == 1 and server.stats["port_changes"] == 1


def test_port_change_in_memory_keeps_the_association_working_both_ways() -> None:
    net = Network(31)
    a = net.add(A)
    b = net.add(B)
    ca, sa = handshake(net, a, b)
    ca.send(0, b"before")
    assert net.run_until(lambda: bool(b.of(sa, ev.DataReceived)), 5)
    rebind(net, a, A_NEW)
    sa.send(1, b"towards the old port")  # lost with the old mapping; retransmitted to the new one
    ca.send(0, b"after")
    assert net.run_until(lambda: len(b.of(sa, ev.DataReceived)) == 2 and len(a.of(ca, ev.DataReceived)) == 1, 30)
    for i in range(20):
        ca.send(i % 4, b"up %d" % i)
        sa.send(i % 4, b"down %d" % i)
    assert net.run_until(lambda: len(b.of(sa, ev.DataReceived)) == 22 and len(a.of(ca, ev.DataReceived)) == 21, 30)
    assert [e.data for e in b.of(sa, ev.DataReceived)] == [b"before", b"after"] + [b"up %d" % i for i in range(20)]
    assert [e.data for e in a.of(ca, ev.DataReceived)] == [b"towards the old port"] + [
        b"down %d" % i for i in range(20)
    ]
    assert sa.peer_addr == A_NEW and ca.state == sa.state == ESTABLISHED
    assert b.endpoint.stats["port_changes"] == 1 and b.endpoint.stats["ootb"] == 0
    assert list(b.endpoint.associations) == [sa]
    assert not a.of(ca, ev.AssociationAborted) and not b.of(sa, ev.AssociationAborted)
    assert not any(isinstance(c, AbortChunk) for s in net.sent for c in s.chunks())
    # everything the server sent after the move went to the new port
    moved_at = next(t for t, src, _d in b.received if src == A_NEW)
    assert {s.dst for s in net.sent_by(B) if s.time > moved_at} == {A_NEW}


def _next(peer: RawPeer) -> DataChunk:
    """The peer's next DATA chunk without using up its TSN and SSN (the packet carrying it is refused)."""
    return peer.data(b"x", tsn=peer.next_tsn, ssn=peer.ssn.get(0, 0))


def _wrong_tag(peer: RawPeer) -> bytes:
    return peer.packet(_next(peer), vtag=peer.peer_tag ^ 1)


@pytest.mark.parametrize(
    "what,build,src",
    [
        ("another tag", _wrong_tag, A_NEW),
        ("reflected ABORT, the peer's tag", lambda p: p.packet(AbortChunk(t_bit=True), vtag=p.tag), A_NEW),
        ("T-bit ABORT with our tag", lambda p: p.packet(AbortChunk(t_bit=True)), A_NEW),
        ("T-bit SHUTDOWN-COMPLETE with our tag", lambda p: p.packet(ShutdownCompleteChunk(t_bit=True)), A_NEW),
        ("our tag from another host", lambda p: p.packet(_next(p)), ("10.0.0.9", A[1])),
        (
            "our tag from another SCTP port",
            lambda p: serialize_packet(p.port + 1, 5000, p.peer_tag, [_next(p)]),
            A_NEW,
        ),
        ("INIT", lambda p: serialize_packet(p.port, 5000, 0, [InitChunk(0x99, 65536, 4, 4, 7, [])]), A_NEW),
        ("COOKIE-ECHO with our tag", lambda p: p.packet(CookieEchoChunk(b"c" * 81)), A_NEW),
    ],
)
def test_packets_that_do_not_prove_the_association_never_move_it(
    what: str, build: Callable[[RawPeer], bytes], src: tuple[str, int]
) -> None:
    server, assoc, peer = established_raw()
    server.receive_datagram(build(peer), src, NOW + 0.1)
    assert assoc.peer_addr == A, what
    assert assoc.state == ESTABLISHED and drain(assoc) == []
    assert server.stats["port_changes"] == 0 and server.next_event() is None
    assert list(server.associations) == [assoc]
    # and it still works where it was
    server.receive_datagram(peer.packet(peer.data(b"still here")), A, NOW + 0.2)
    assert drain(assoc) == [ev.DataReceived(0, b"still here", 0, False)]


def test_a_peer_alternating_ports_moves_its_association_once_per_hold_down() -> None:
    """Reordering across a rebinding (or a peer flapping on purpose) neither flaps the association back nor
    turns every packet into a ``peer_address_changed``; the data all arrives."""
    server, assoc, peer = established_raw()
    n = 400
    for i in range(n):
        src = A_NEW if i % 2 == 0 else A
        server.receive_datagram(peer.packet(peer.data(b"%d" % i)), src, NOW + 0.1 + i * 0.001)
    got = drain(assoc)
    assert [e.data for e in got if isinstance(e, ev.DataReceived)] == [b"%d" % i for i in range(n)]
    assert server.stats["port_changes"] == 1 and server.stats["port_changes_held"] == n // 2
    assert assoc.peer_addr == A_NEW
    moves = []
    while (e := server.next_event()) is not None:
        moves.append(e)
    assert len(moves) == 1
    # once the hold-down has passed, a genuine second rebinding is followed
    later = NOW + 0.1 + PORT_HOLD_DOWN + 0.5
    server.receive_datagram(peer.packet(peer.data(b"third")), A_THIRD, later)
    event = server.next_event()
    assert isinstance(event, ev.PeerAddressChanged) and event.previous == A_NEW
    assert assoc.peer_addr == A_THIRD and server.stats["port_changes"] == 2
    assert [e.data for e in drain(assoc) if isinstance(e, ev.DataReceived)] == [b"third"]


class RepeatingRng(random.Random):
    """Draws the same verification tag again and again at first: an unlucky (or broken) generator."""

    def __init__(self, tag: int, repeats: int) -> None:
        super().__init__(5)
        self.tag = tag
        self.repeats = repeats

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        if start == 1 and stop == 1 << 32 and self.repeats > 0:
            self.repeats -= 1
            return self.tag
        return super().randrange(start, stop, step)


def test_local_tags_are_unique_per_endpoint_and_the_right_association_moves() -> None:
    server = server_endpoint(RepeatingRng(0x0BAD_7A65, 40))
    peers = [raw_connect(server, (f"10.0.1.{i}", 41000 + i), NOW, port=6000 + i) for i in range(3)]
    tags = [assoc.local_vtag for assoc, _peer, _out in peers]
    assert len(set(tags)) == 3, [hex(t) for t in tags]
    # the second peer rebinds: its association, and no other, follows it
    assoc, peer, _ = peers[1]
    server.receive_datagram(peer.packet(peer.data(b"from the new port")), ("10.0.1.1", 49999), NOW + 0.1)
    assert assoc.peer_addr == ("10.0.1.1", 49999)
    assert [p[0].peer_addr for p in peers] == [("10.0.1.0", 41000), ("10.0.1.1", 49999), ("10.0.1.2", 41002)]
    assert drain(assoc)[-1] == ev.DataReceived(0, b"from the new port", 0, False)

    client = Endpoint(SctpConfig(), local_port=5000, rng=RepeatingRng(0x0BAD_7A65, 40))
    first = client.connect(("10.0.2.1", 40000), 5000, NOW)
    second = client.connect(("10.0.2.2", 40000), 5000, NOW)
    assert first.local_vtag != second.local_vtag
    for assoc in (first, second):
        ((data, _addr),) = assoc.datagrams_to_send(NOW)
        init = parse_packet(data).chunks[0]
        assert isinstance(init, InitChunk) and init.initiate_tag == assoc.local_vtag


# -- what an INIT-ACK reflects ----------------------------------------------------------------------------------------


def _reportable(params: list[Param]) -> list[bytes]:
    """The parameters an INIT-ACK may report, serialized, in order (up to a stop-type one)."""
    out: list[bytes] = []
    for p in params:
        if isinstance(p, UnknownParam):
            stop, report = param_action(p.type)
            if report:
                out.append(p.serialize())
            if stop:
                break
    return out


@pytest.mark.parametrize(
    "params",
    [
        [UnknownParam(0xC100 + i, b"") for i in range(200)],  # 4-byte parameters: the wrapper doubles each
        [UnknownParam(0xC100 + i, bytes(12)) for i in range(100)],
        [UnknownParam(0xC100 + i, bytes(60)) for i in range(30)],
        [UnknownParam(0xC100, bytes(2000))] + [UnknownParam(0xC101 + i, b"ab") for i in range(40)],
        [UnknownParam(0x8100 + i, bytes(5)) for i in range(20)]
        + [UnknownParam(0xC100 + i, bytes(9)) for i in range(90)],
    ],
    ids=["empty", "12-byte", "60-byte", "huge-first", "silent-then-reported"],
)
def test_init_ack_reflects_a_bounded_report(params: list[Param]) -> None:
    server = server_endpoint()
    bare = serialize_packet(6000, 5000, 0, [InitChunk(77, 65536, 4, 4, 1, [])])
    server.receive_datagram(bare, A, NOW)
    ((bare_ack, _a),) = server.datagrams_to_send(NOW)
    cookie_overhead = len(bare_ack) - len(bare)  # the state cookie: what every INIT-ACK carries and an INIT not

    init = serialize_packet(6000, 5000, 0, [InitChunk(77, 65536, 4, 4, 1, params)])
    server.receive_datagram(init, A, NOW)
    ((data, addr),) = server.datagrams_to_send(NOW)
    (ack,) = parse_packet(data).chunks
    assert isinstance(ack, InitAckChunk) and addr == A
    reported = [p.param for p in ack.params if isinstance(p, UnrecognizedParam)]
    reportable = _reportable(params)
    assert reported == reportable[: len(reported)]  # whole parameters, in the INIT's order
    assert sum(len(UnrecognizedParam(r).serialize()) for r in reported) <= MAX_UNRECOGNIZED_REPORT
    assert len(reported) < len(reportable) and server.stats["init_report_capped"] == 1
    assert len(data) <= len(init) + cookie_overhead
    assert len(data) <= len(bare_ack) + MAX_UNRECOGNIZED_REPORT
    # and the handshake still completes with that cookie
    echo = serialize_packet(6000, 5000, ack.initiate_tag, [CookieEchoChunk(cookie_of(ack))])
    assert server.receive_datagram(echo, A, NOW + 0.1) is not None


def test_a_small_honest_report_is_whole() -> None:
    server = server_endpoint()
    params: list[Param] = [UnknownParam(0xC00B, bytes(4)), UnknownParam(0x8003, bytes(6)), UnknownParam(0xC00A, b"")]
    server.receive_datagram(serialize_packet(6000, 5000, 0, [InitChunk(77, 65536, 4, 4, 1, params)]), A, NOW)
    ((data, _a),) = server.datagrams_to_send(NOW)
    (ack,) = parse_packet(data).chunks
    assert isinstance(ack, InitAckChunk)
    assert [p.param for p in ack.params if isinstance(p, UnrecognizedParam)] == _reportable(params)
    assert server.stats["init_report_capped"] == 0


def test_stateless_replies_to_an_init_flood_hold_bounded_bytes() -> None:
    """Nobody drains the endpoint while big INITs pour in: what it holds is a bounded count of small replies."""
    server = server_endpoint()
    big = [UnknownParam(0xC100 + i, bytes(60)) for i in range(120)]  # about 8 KB each
    for i in range(1500):
        init = InitChunk(0x1000 + i, 65536, 8, 8, i, big)
        server.receive_datagram(serialize_packet(6000, 5000, 0, [init]), ("10.1.0.1", 9000 + i), NOW)
    out = server.datagrams_to_send(NOW)
    assert len(out) == 1024 and server.stats["stateless_dropped"] == 1500 - 1024
    bare_ack = 12 + 20 + 88
    assert max(len(d) for d, _a in out) <= bare_ack + MAX_UNRECOGNIZED_REPORT
    assert list(server.associations) == []


# -- a client does not hand out cookies -------------------------------------------------------------------------------


def test_non_listening_endpoint_refuses_an_init_with_a_small_abort() -> None:
    client = server_endpoint(listening=False)
    params: list[Param] = [UnknownParam(0xC100 + i, bytes(12)) for i in range(10)]
    init = serialize_packet(6000, 5000, 0, [InitChunk(0x4242, 65536, 4, 4, 1, params)])
    client.receive_datagram(init, B, NOW)
    ((data, addr),) = client.datagrams_to_send(NOW)
    pkt = parse_packet(data)
    assert addr == B and pkt.vtag == 0x4242 and (pkt.src_port, pkt.dst_port) == (5000, 6000)
    (abort,) = pkt.chunks
    assert isinstance(abort, AbortChunk) and not abort.t_bit  # §8.4 3: the INIT's tag, T bit clear
    assert len(data) < len(init)
    assert list(client.associations) == [] and client.stats["refused"] == 1 and client.stats["init"] == 1


def test_non_listening_endpoint_still_handles_an_init_collision() -> None:
    client = server_endpoint(listening=False)
    assoc = client.connect(B, 6000, NOW)
    assoc.datagrams_to_send(NOW)
    client.receive_datagram(serialize_packet(6000, 5000, 0, [InitChunk(0x4242, 65536, 4, 4, 1, [])]), B, NOW)
    ((data, _addr),) = client.datagrams_to_send(NOW)
    (ack,) = parse_packet(data).chunks
    assert isinstance(ack, InitAckChunk) and ack.initiate_tag == assoc.local_vtag  # §5.2.1: our own INIT's tag


# -- through real sockets ---------------------------------------------------------------------------------------------


class Tracker(ConnectionBehaviour):
    """Records messages, address changes and how the connection ended; echoes when ``echo`` is set."""

    instances: ClassVar[list[Tracker]] = []
    echo = False

    def init(self, opts: dict[str, Any]) -> None:
        self.messages: list[bytes] = []
        self.moves: list[tuple[Any, ...]] = []
        self.ends: list[str] = []
        self.changed = asyncio.Event()
        type(self).instances.append(self)

    async def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        self.messages.append(data)
        self.changed.set()
        if self.echo:
            await stream.send(data)

    def peer_address_changed(self, conn: Connection, address: Any) -> None:
        self.moves.append(tuple(address)[:2])
        self.changed.set()

    def transport_shutdown(self, conn: Connection, props: dict[str, Any]) -> None:
        self.ends.append(f"transport_shutdown {props}")
        self.changed.set()

    def closed(self, conn: Connection, props: dict[str, Any]) -> None:
        self.ends.append("closed")
        self.changed.set()

    async def until(self, done: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"{what} within {timeout}s: {self.messages=} {self.moves=} {self.ends=}") from None


class EchoTracker(Tracker):
    instances: ClassVar[list[Tracker]] = []
    echo = True


@pytest.fixture(autouse=True)
def fresh_instances() -> Iterator[None]:
    Tracker.instances.clear()
    EchoTracker.instances.clear()
    yield


async def sctp_server(make_server: ServerFactory) -> SctpListener:
    server = await make_server(
        f"{__name__}:EchoTracker",
        [{"transport": "sctp", "host": "127.0.0.1", "port": 0, "sctp_port": 5000, "name": "sctp"}],
    )
    listener = server.listener("sctp")
    assert isinstance(listener, SctpListener)
    return listener


async def _until(done: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.01)
    assert done(), what


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def _recv_chunk(sock: socket.socket, kind: type[Any], timeout: float = 5.0) -> Any:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            data, _addr = await loop.sock_recvfrom(sock, 65536)
            for chunk in parse_packet(data).chunks:
                if isinstance(chunk, kind):
                    return chunk


async def test_cookie_replayed_from_another_udp_port_through_a_real_listener(make_server: ServerFactory) -> None:
    listener = await sctp_server(make_server)
    target = listener.address[:2]
    counters = listener.counters
    loop = asyncio.get_running_loop()
    with _udp() as first, _udp() as second:
        first.sendto(serialize_packet(6000, 5000, 0, [InitChunk(0x1234, 1 << 20, 16, 16, 1000, [])]), target)
        ack = await _recv_chunk(first, InitAckChunk)
        echo = serialize_packet(6000, 5000, ack.initiate_tag, [CookieEchoChunk(cookie_of(ack))])
        first.sendto(echo, target)
        await _recv_chunk(first, CookieAckChunk)
        second.sendto(echo, target)  # the very same bytes, from another UDP port of the same host
        await _until(lambda: counters["bad_cookie"] + counters["accepted"] >= 2, "the replay was not processed")
        assert counters["bad_cookie"] == 1 and counters["accepted"] == 1
        assert len(list(listener.endpoint.associations)) == 1
        assert len(EchoTracker.instances) == 1
        with pytest.raises(TimeoutError):  # nothing answers the replay
            await asyncio.wait_for(loop.sock_recvfrom(second, 65536), 0.3)
        first.sendto(serialize_packet(6000, 5000, ack.initiate_tag, [AbortChunk()]), target)
        await _until(lambda: not list(listener.endpoint.associations), "the ABORT did not end the association")


class Nat:
    """A loopback UDP NAT for one client. The client talks to an outside socket; the server sees it at the inside
    one. ``rebind_inside`` gives the server-facing side a new port (a mapping that expired and came back);
    ``add_outside`` makes the server's packets reach the client from a new port."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.loop = asyncio.get_running_loop()
        self.server = server
        self.client: tuple[str, int] | None = None
        self.outside: list[socket.socket] = []
        self.inside = self._open(self._from_server)
        self.add_outside()

    @property
    def address(self) -> tuple[str, int]:
        return cast(tuple[str, int], self.outside[0].getsockname())

    def _open(self, handler: Callable[[bytes, Any], None]) -> socket.socket:
        sock = _udp()
        self.loop.add_reader(sock.fileno(), self._drain, sock, handler)
        return sock

    def _drain(self, sock: socket.socket, handler: Callable[[bytes, Any], None]) -> None:
        for _ in range(64):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            handler(data, addr)

    def _from_client(self, data: bytes, addr: Any) -> None:
        self.client = addr
        self.inside.sendto(data, self.server)

    def _from_server(self, data: bytes, addr: Any) -> None:
        if self.client is not None:
            self.outside[-1].sendto(data, self.client)

    def _close(self, sock: socket.socket) -> None:
        self.loop.remove_reader(sock.fileno())
        sock.close()

    def rebind_inside(self) -> int:
        old, self.inside = self.inside, self._open(self._from_server)
        self._close(old)
        return int(self.inside.getsockname()[1])

    def add_outside(self) -> int:
        self.outside.append(self._open(self._from_client))
        return int(self.outside[-1].getsockname()[1])

    def drop_outside(self, index: int) -> None:
        self._close(self.outside.pop(index))

    def close(self) -> None:
        for sock in [self.inside, *self.outside]:
            self._close(sock)


async def test_port_changes_through_real_sockets_on_both_sides(make_server: ServerFactory) -> None:
    listener = await sctp_server(make_server)
    nat = Nat(listener.address[:2])
    try:
        client = Tracker()
        conn = await connect(client, f"sctp://127.0.0.1:{nat.address[1]}", options={"sctp_port": 5000})
        stream = conn.open_stream()
        await stream.send(b"one")
        await client.until(lambda: client.messages == [b"one"], "no echo before the rebinding")
        (server,) = EchoTracker.instances

        # the client's side of the NAT rebinds: the server must follow it, not ABORT it
        inside = nat.rebind_inside()
        await stream.send(b"two")
        await client.until(lambda: client.messages == [b"one", b"two"], "no echo after the client's port changed")
        await server.until(lambda: bool(server.moves), "the server behaviour heard of no move")
        assert server.moves == [("127.0.0.1", inside)]
        assert listener.counters["port_changes"] == 1 and listener.counters["ootb"] == 0

        # the server's packets now reach the client from another port: the client follows them
        outside = nat.add_outside()
        await stream.send(b"three")  # still through the first outside port; the echo comes from the new one
        await client.until(lambda: client.messages[-1:] == [b"three"], "no echo from the server's new port")
        await client.until(lambda: bool(client.moves), "the client behaviour heard of no move")
        assert client.moves == [("127.0.0.1", outside)]
        assert conn.peer_address[:2] == ("127.0.0.1", outside)
        nat.drop_outside(0)
        for i in range(5):
            await stream.send(b"four %d" % i)
        await client.until(lambda: len(client.messages) == 8, "not every echo arrived after both moves")
        assert client.messages == [b"one", b"two", b"three"] + [b"four %d" % i for i in range(5)]
        assert server.messages == client.messages

        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 10)
        await server.until(lambda: "closed" in server.ends, "the server side did not close")
        assert client.ends == ["closed"] and server.ends == ["closed"]  # graceful both ways: nothing aborted
        assert listener.counters["port_changes"] == 1
    finally:
        nat.close()
