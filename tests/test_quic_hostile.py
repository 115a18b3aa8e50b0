"""QUIC against hostile peers, through real loopback sockets: admission and receive credit.

The peers here are aioquic connections (or raw datagrams) on their own sockets, pumped by hand so a
test decides what they send and when: garbage Initials, Initials that are then abandoned, a client
held between a Retry and its answer, a client that never grants the server any credit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Any, cast

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent, StreamDataReceived
from aioquic.quic.packet import QuicErrorCode, QuicFrameType, QuicPacketType
from aioquic.quic.packet_builder import QuicPacketBuilder

from mux import connect
from mux import transport as t
from mux.server import Server
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener

Addr = tuple[str, int]


class Peer(asyncio.DatagramProtocol):
    """An aioquic connection on its own loopback socket, pumped on the test's loop.

    ``deaf``: datagrams from the server are dropped unread (an abandoned or spoofed client).
    ``paused``: nothing is sent until ``resume`` (a client held between a Retry and its answer).
    ``timers``: run aioquic's timers (retransmissions); off, the peer sends only when told to.
    """

    def __init__(self, quic: QuicConnection, *, deaf: bool = False, timers: bool = True) -> None:
        self.quic = quic
        self.deaf = deaf
        self.timers = timers
        self.paused = False
        self.events: list[QuicEvent] = []
        self.received = 0
        self.sent = 0
        self.changed = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def start(cls, quic: QuicConnection, server: Addr, **kwargs: Any) -> Peer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(lambda: cls(quic, **kwargs), local_addr=("127.0.0.1", 0))
        quic.connect(server, now=loop.time())
        peer.pump()
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.received += 1
        if self.deaf:
            return
        self.quic.receive_datagram(data, addr, now=asyncio.get_running_loop().time())
        self.pump()

    def pump(self, now: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time() if now is None else now
        while (event := self.quic.next_event()) is not None:
            self.events.append(event)
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            for data, addr in self.quic.datagrams_to_send(now=now):
                self.transport.sendto(data, addr)
                self.sent += 1
        self.changed.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.quic.get_timer()
        if self.timers and at is not None:
            self._timer = loop.call_at(max(at, loop.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.quic.handle_timer(now=asyncio.get_running_loop().time())
        self.pump()

    def resume(self) -> None:
        self.paused = False
        self.pump()

    def retransmit(self) -> None:
        """Send the next probe now, as if the loss timer had fired (its own clock runs ahead)."""
        at = self.quic.get_timer()
        assert at is not None
        self.quic.handle_timer(now=at)
        self.pump(now=at)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()

    def first(self, kind: type[QuicEvent]) -> Any:
        return next((e for e in self.events if isinstance(e, kind)), None)

    async def wait_for(self, kind: type[QuicEvent], timeout: float) -> Any:
        async with asyncio.timeout(timeout):
            while (event := self.first(kind)) is None:
                self.changed.clear()
                await self.changed.wait()
        return event


def client_config(**extra: Any) -> QuicConfiguration:
    return QuicConfiguration(is_client=True, alpn_protocols=["test"], verify_mode=ssl.CERT_NONE, **extra)


def garbage_initial(size: int = 1200) -> bytes:
    """A long header that parses as a v1 Initial (random CIDs, no token), then random bytes.

    It never decrypts, and anyone can send it from any (spoofed) address.
    """
    head = bytes([0xC3]) + struct.pack("!I", 1) + bytes([8]) + os.urandom(8) + bytes([8]) + os.urandom(8) + b"\x00"
    rest = size - len(head) - 2
    return head + struct.pack("!H", 0x4000 | rest) + os.urandom(rest)


def crafted_initial() -> bytes:
    """An Initial that decrypts and parses, whose CRYPTO frame is not a ClientHello TLS accepts.

    Anyone can build it (the keys derive from its DCID): it gets a connection, which TLS then closes.
    """
    dcid = os.urandom(8)
    crypto = CryptoPair()
    crypto.setup_initial(dcid, is_client=True, version=1)
    builder = QuicPacketBuilder(
        host_cid=os.urandom(8), peer_cid=dcid, version=1, is_client=True, max_datagram_size=1200
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    hello = b"\x01\x00\x00\x10" + os.urandom(16)
    buf = builder.start_frame(QuicFrameType.CRYPTO)
    buf.push_uint_var(0)
    buf.push_uint_var(len(hello))
    buf.push_bytes(hello)
    builder.start_frame(QuicFrameType.PADDING).push_bytes(bytes(1100))
    datagrams, _ = builder.flush()
    return bytes(datagrams[0])


def handshaking(server: Server) -> int:
    return int(server.pool.info()["total"]["handshaking"])


async def until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Seconds until ``predicate`` holds; raises TimeoutError after ``timeout``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(step)
    return loop.time() - started


# -- admission ------------------------------------------------------------------------------------


async def test_garbage_initial_flood_takes_no_slot(make_server: ServerFactory) -> None:
    """Done-means: during a flood of spoofed garbage Initials a fresh client connects in under 1 s.

    Before, each garbage Initial took one of the ``num_acceptors`` slots for ``handshake_timeout_ms``.
    """
    server = await make_server("tests.apps:Recording", [listener("quic")])
    lst: Any = server.listener("quic")
    target = lst.address[:2]
    flooders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    for sock in flooders:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
    stop = asyncio.Event()
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while not stop.is_set():
            for sock in flooders:
                for _ in range(25):
                    try:
                        sock.sendto(garbage_initial(), target)
                        sent += 1
                    except BlockingIOError:
                        pass
            await asyncio.sleep(0.01)

    flooding = asyncio.create_task(flood())
    try:
        await until(lambda: sent >= 300, 10)
        url, options = client_target(server, "quic")
        client = tb.Client()
        loop = asyncio.get_running_loop()
        started = loop.time()
        conn = await connect(client, url, options=options, timeout=5)
        elapsed = loop.time() - started
        assert elapsed < 1.0, f"connecting took {elapsed:.2f}s under the flood"
        await client.next("connected")
    finally:
        stop.set()
        await flooding
    await asyncio.sleep(0.05)
    assert handshaking(server) == 0
    assert server.pool.info()["total"]["accepted"] == 1  # the fresh client, and no garbage
    assert lst.counters["undecryptable"] >= 300
    # no reply to garbage: not even a Retry or a version negotiation
    for sock in flooders:
        try:
            sock.recv(2048)
        except BlockingIOError:
            pass
        else:
            raise AssertionError("the server answered a garbage Initial")
        sock.close()
    conn.close()


async def test_abandoned_initials_give_their_slots_back(make_server: ServerFactory) -> None:
    """Real Initials that are then abandoned hold a slot for ``handshake_idle_timeout_ms`` at most,
    even when they keep resending Initials, and under that pressure a fresh client gets in by Retry."""
    idle_ms = 1000
    server = await make_server(
        "tests.apps:Recording",
        [listener("quic", handshake_idle_timeout_ms=idle_ms)],
        pool={"num_acceptors": 8, "handshake_timeout_ms": 20_000},
    )
    lst: Any = server.listener("quic")
    target = lst.address[:2]
    loop = asyncio.get_running_loop()
    # deaf and timer-less: they send their first flight and nothing more unless told to
    peers = [await Peer.start(QuicConnection(configuration=client_config()), target, deaf=True, timers=False)]
    for _ in range(11):
        peers.append(await Peer.start(QuicConnection(configuration=client_config()), target, deaf=True, timers=False))
    # retry: auto takes unproven peers up to half of num_acceptors, then answers with Retry
    await until(lambda: lst.counters["retry_sent"] == 8, 2)
    taken_at = loop.time()
    assert handshaking(server) == 4
    try:
        # some keep resending Initials (new packet numbers): that must not extend their slot
        for delay in (0.3, 0.6):
            await asyncio.sleep(taken_at + delay - loop.time())
            for peer in peers[:6]:
                peer.retransmit()
        # a fresh client is not locked out: it is sent a Retry, comes back proven, and is admitted
        retries = lst.counters["retry_sent"]
        url, options = client_target(server, "quic")
        client = tb.Client()
        conn = await connect(client, url, options=options, timeout=5)
        await client.next("connected")
        assert lst.counters["retry_sent"] > retries
        waited = await until(lambda: handshaking(server) == 0, 5)
        freed_after = loop.time() - taken_at
        assert idle_ms / 1000 - 0.2 <= freed_after <= idle_ms / 1000 + 1.5, (freed_after, waited)
        info = server.pool.info()["total"]
        assert info["active"] == 1
        assert info["errors"].get("handshake_idle_timeout") == 4
        assert lst.counters["handshake_idle_timeout"] == 4
        # silently: an abandoned peer hears nothing after its slot is gone
        heard = [peer.received for peer in peers]
        await asyncio.sleep(0.3)
        assert [peer.received for peer in peers] == heard
        conn.close()
    finally:
        for peer in peers:
            peer.close()


async def test_refuse_retry_then_admitted_or_refused(make_server: ServerFactory) -> None:
    """``refuse: retry`` alone: a client sent a Retry at max_connections comes back with its token and is
    admitted if a slot freed meanwhile (before: "original_destination_connection_id does not match"
    and a handshaking slot held until the timeout), or refused cleanly if not."""
    server = await make_server("tests.apps:Recording", [listener("quic", refuse="retry")], pool={"max_connections": 1})
    lst: Any = server.listener("quic")
    target = lst.address[:2]
    url, options = client_target(server, "quic")
    first = tb.Client()
    first_conn = await connect(first, url, options=options, timeout=5)
    await first.next("connected")

    # still full when it comes back: a clean CONNECTION_REFUSED, no slot taken
    refused = await Peer.start(QuicConnection(configuration=client_config()), target)
    try:
        closed = await refused.wait_for(ConnectionTerminated, 5)
        assert closed.error_code == QuicErrorCode.CONNECTION_REFUSED
        assert refused.quic._retry_source_connection_id is not None  # it was sent a Retry first
        assert refused.first(HandshakeCompleted) is None
        assert handshaking(server) == 0
    finally:
        refused.close()

    # a slot frees between the Retry and the answer: admitted, and the handshake completes
    held = await Peer.start(QuicConnection(configuration=client_config()), target)
    held.paused = True  # its first flight is out; the Initial answering the Retry waits
    try:
        await until(lambda: held.quic._retry_source_connection_id is not None, 5)
        first_conn.close()
        await until(lambda: server.pool.info()["total"]["active"] == 0, 5)
        held.resume()
        await held.wait_for(HandshakeCompleted, 5)
        assert held.first(ConnectionTerminated) is None
        await until(lambda: server.pool.info()["total"]["active"] == 1, 2)
        assert handshaking(server) == 0
        assert lst.counters["retry_sent"] == 2 and lst.counters["refused"] == 1
    finally:
        held.close()


async def test_crafted_initials_log_nothing_above_debug(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Initials that decrypt but carry a ClientHello TLS rejects: each closes its connection.

    Before, aioquic logged a warning per packet (a peer could write the log at its sending rate);
    now it is mux's rate-limited debug line, the closes are counted, and the slots come back.
    """
    server = await make_server("tests.apps:Recording", [listener("quic")])
    target = server.listener("quic").address[:2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(40):
                sock.sendto(crafted_initial(), target)
            await until(lambda: server.pool.info()["total"]["closed"] == 40, 5)
        loud = [r for r in caplog.records if r.levelno >= logging.WARNING and "certificate" not in r.getMessage()]
        assert loud == []
        assert handshaking(server) == 0
        assert sum(server.pool.info()["total"]["errors"].values()) >= 40
    finally:
        sock.close()


# -- receive credit -------------------------------------------------------------------------------


class NeverReads(QuicConnection):
    """A client that never raises MAX_DATA or MAX_STREAM_DATA: it reads nothing the server sends.

    Until ``reading`` is set: then it grants credit as aioquic does.
    """

    reading = False

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        if self.reading:
            super()._write_connection_limits(builder, space)

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if self.reading:
            super()._write_stream_limits(builder, space, stream)


def held_by(server: Server) -> tuple[int, int]:
    """Bytes the server holds for its one connection: (received and not consumed, queued to send)."""
    (conn,) = server.pool.connections
    quic: Any = conn._tconn.quic  # type: ignore[attr-defined]
    inbox = getattr(conn, "inbox_bytes", None)
    if inbox is None:  # before the mailbox counted its bytes
        inbox = sum(len(item.data) for item in conn._mailbox if type(item) is t.StreamData)
    received = inbox + sum(len(stream.receiver._buffer) for stream in quic._streams.values())
    queued = sum(len(stream.sender._buffer) for stream in quic._streams.values())
    return received, queued


async def test_a_peer_that_never_reads_is_held_to_the_windows(make_server: ServerFactory) -> None:
    """An echo whose peer never reads blocks on its send queue; the peer keeps sending regardless.

    Receive credit now follows what the behaviour consumed, so the peer is blocked by flow control
    and the server holds at most ``conn_flow_control_window`` received plus the echo's send queue.
    Before, aioquic doubled the credit as data arrived and the server buffered all of it.
    """
    conn_window, stream_window, high_water = 256 * 1024, 128 * 1024, 64 * 1024
    client_window = 64 * 1024
    total = 8 * 1024 * 1024
    server = await make_server(
        "behaviours.echo:Echo",
        [
            listener(
                "quic",
                conn_flow_control_window=conn_window,
                stream_recv_window_default=stream_window,
                ideal_send_buffer_size=high_water,
            )
        ],
    )
    target = server.listener("quic").address[:2]
    quic = NeverReads(configuration=client_config(max_data=client_window, max_stream_data=client_window))
    peer = await Peer.start(quic, target)
    try:
        await peer.wait_for(HandshakeCompleted, 5)
        stream_id = quic.get_next_available_stream_id()
        quic.send_stream_data(stream_id, b"\x5a" * total)
        peer.pump()
        stream = quic._streams[stream_id]
        sent, still = -1, 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while still < 4 and loop.time() < deadline:  # until it stopped moving for a second
            await asyncio.sleep(0.25)
            progress = stream.sender.highest_offset
            still = still + 1 if progress == sent else 0
            sent = progress
        received, queued = held_by(server)
        # what the peer could send: what the echo wrote (the client's window went out, the send queue
        # up to the high-water mark plus the write that crossed it) plus one stream window of credit
        assert sent <= client_window + high_water + 2 * stream_window, sent
        assert sent < total
        # ... and it is blocked by the server's flow control, not by congestion or loss
        assert sent >= min(stream.max_stream_data_remote, quic._remote_max_data) - 1200
        assert received <= conn_window, received
        (server_conn,) = server.pool.connections
        assert received <= server_conn.stats()["recv_unconsumed"] <= conn_window
        assert queued <= high_water + stream_window, queued
        # the windows still move once the data is consumed: an ordinary client gets its echo
        url, options = client_target(server, "quic")
        client = tb.Client()
        conn = await connect(client, url, options=options, timeout=5)
        echo_stream = conn.open_stream()
        payload = os.urandom(3 * conn_window)
        await echo_stream.send(payload, fin=True)
        await asyncio.wait_for(client.fin_event(echo_stream.id).wait(), 20)
        assert bytes(client.data[echo_stream.id]) == payload
        conn.close()
    finally:
        peer.close()


async def test_empty_streams_behind_a_busy_behaviour_are_held_to_the_stream_limit(make_server: ServerFactory) -> None:
    """Streams carrying only a FIN cost no flow-control credit, and aioquic gives a uni stream's slot
    back as soon as its FIN arrives: a peer could queue an event per stream behind a busy behaviour
    without end. Slots now come back only once the behaviour has caught up."""
    limit = 16
    server = await make_server(
        "behaviours.echo:Echo", [listener("quic", peer_unidi_stream_count=limit, ideal_send_buffer_size=64 * 1024)]
    )
    target = server.listener("quic").address[:2]
    quic = NeverReads(configuration=client_config(max_data=64 * 1024, max_stream_data=64 * 1024))
    peer = await Peer.start(quic, target)
    try:
        await peer.wait_for(HandshakeCompleted, 5)
        (conn,) = server.pool.connections
        blocked = quic.get_next_available_stream_id()
        payload = os.urandom(512 * 1024)
        quic.send_stream_data(blocked, payload, end_stream=True)
        peer.pump()
        await until(lambda: not conn.idle and held_by(server)[1] >= 64 * 1024, 5)  # the echo waits to send
        opened = 0
        for _ in range(20):
            while quic._local_next_stream_id_uni // 4 < quic._remote_max_streams_uni:
                quic.send_stream_data(quic.get_next_available_stream_id(is_unidirectional=True), b"", end_stream=True)
                opened += 1
            peer.pump()
            await asyncio.sleep(0.05)
        assert opened == limit
        assert quic._remote_max_streams_uni == limit
        assert len(conn._mailbox) <= limit + 2
        # the peer reads again: the echo drains, catches up, and the slots come back
        quic.reading = True
        peer.pump()
        await until(lambda: quic._remote_max_streams_uni > limit, 10)

        def echoed() -> bytes:
            return b"".join(e.data for e in peer.events if isinstance(e, StreamDataReceived) and e.stream_id == blocked)

        await until(lambda: len(echoed()) == len(payload), 10)
        assert echoed() == payload
    finally:
        peer.close()


# -- the core in memory: credit for bytes that will never be consumed -----------------------------


class Link:
    """A client aioquic connection and a server ``MuxQuicConnection`` wired back to back in memory.

    The server side consumes every byte it delivers at once, as a behaviour would.
    """

    CLIENT, SERVER = ("10.0.0.1", 1234), ("10.0.0.2", 4433)

    def __init__(self, window: int) -> None:
        from mux.quic.certs import self_signed
        from mux.quic.core import MuxQuicConnection

        certfile, keyfile = self_signed("127.0.0.1")
        server_config = QuicConfiguration(
            is_client=False, alpn_protocols=["test"], max_data=window, max_stream_data=window
        )
        server_config.load_cert_chain(certfile, keyfile)
        self.now = 0.0
        self.client = QuicConnection(configuration=client_config())
        self.client.connect(self.SERVER, now=self.now)
        self.server = MuxQuicConnection(
            configuration=server_config, original_destination_connection_id=self.client._peer_cid.cid
        )
        self.delivered: dict[int, int] = {}
        self.run()

    def to_server(self, data: bytes) -> None:
        self.server.receive_datagram(data, self.CLIENT, now=self.now)
        while (event := self.server.next_event()) is not None:
            if isinstance(event, StreamDataReceived) and event.data:
                sid = event.stream_id
                self.delivered[sid] = self.delivered.get(sid, 0) + len(event.data)
                self.server.consumed(sid, len(event.data))

    def run(self) -> None:
        """Exchange datagrams until both sides are quiet."""
        for _ in range(10_000):
            self.now += 0.001
            moved = False
            for data, _ in self.client.datagrams_to_send(now=self.now):
                moved = True
                self.to_server(data)
            for data, _ in self.server.datagrams_to_send(now=self.now):
                moved = True
                self.client.receive_datagram(data, self.SERVER, now=self.now)
            while self.client.next_event() is not None:
                pass
            if not moved:
                return

    def send_with_a_gap(self, size: int) -> int:
        """Send ``size`` bytes on a new stream, losing the first datagram and holding back the
        server's ACKs (so nothing is retransmitted); returns the stream id."""
        sid = self.client.get_next_available_stream_id()
        self.client.send_stream_data(sid, b"g" * size)
        first = True
        for _ in range(100):  # up to the client's congestion window
            self.now += 0.001
            out = self.client.datagrams_to_send(now=self.now)
            if not out:
                break
            for data, _ in out:
                if not first:
                    self.to_server(data)
                first = False
        return sid


def test_reset_streams_give_their_undelivered_bytes_back() -> None:
    """Bytes stuck behind a gap when the peer resets the stream will never be consumed: their
    connection credit comes back at once, and the reassembly buffer holding them is freed.

    Four such streams strand more than the whole window; were their bytes not written off, the
    next stream would be blocked for good.
    """
    window = 32 * 1024
    link = Link(window)
    stranded = 0
    for _ in range(4):
        sid = link.send_with_a_gap(20_000)
        stream = link.server._streams.get(sid)
        assert stream is not None, "the client could not send at all: its credit is stranded"
        receiver = stream.receiver
        assert link.delivered.get(sid, 0) == 0
        stranded += len(receiver._buffer)
        link.client.reset_stream(sid, 7)
        link.run()
        assert len(receiver._buffer) == 0
        assert link.delivered.get(sid, 0) == 0
    assert stranded > window
    fresh = link.client.get_next_available_stream_id()
    link.client.send_stream_data(fresh, b"f" * 30_000, end_stream=True)
    link.run()
    assert link.delivered.get(fresh) == 30_000
    limit = link.server._local_max_data
    assert limit.value - limit.used > window // 2  # everything consumed or written off: the credit is back
