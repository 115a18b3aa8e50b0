"""``mux.quic.fast_send`` against aioquic's own send path, in memory, on a seeded lossy link with a virtual clock.

The fast path writes 1-RTT packets itself and registers them with aioquic's loss recovery; these runs check that
what the peer (plain aioquic) receives is exactly what was sent, through loss, retransmission, flow control and
several streams, and that the fast path really carried the traffic.
"""

from __future__ import annotations

import heapq
import random
import ssl
from collections.abc import Callable
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamDataReceived

from mux.quic import core as quic_core
from mux.quic.certs import self_signed
from mux.quic.core import MuxQuicConnection

SERVER, CLIENT = ("127.0.0.1", 4433), ("127.0.0.1", 50000)


class Link:
    """Two endpoints, a one-way delay, a loss rate and a virtual clock: run until ``done`` or ``limit`` seconds."""

    def __init__(self, seed: int, loss: float, delay: float = 0.002) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.delay = delay
        self.now = 1.0
        self.queue: list[tuple[float, int, str, bytes]] = []
        self.seq = 0

    def send(self, to: str, datagrams: list[tuple[bytes, Any]]) -> None:
        for data, _ in datagrams:
            if self.rng.random() < self.loss:
                continue
            self.seq += 1
            heapq.heappush(self.queue, (self.now + self.delay, self.seq, to, data))

    def run(
        self,
        client: QuicConnection,
        server: QuicConnection,
        on_server_event: Callable[[Any], None],
        on_client_event: Callable[[Any], None],
        done: Callable[[], bool],
        limit: float = 120.0,
    ) -> None:
        end = self.now + limit
        while not done():
            self.send("server", client.datagrams_to_send(self.now))
            self.send("client", server.datagrams_to_send(self.now))
            times = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
            if self.queue:
                times.append(self.queue[0][0])
            assert times, "the exchange stalled with nothing in flight and no timer"
            self.now = max(self.now, min(times))
            assert self.now < end, "the exchange did not finish in time"
            while self.queue and self.queue[0][0] <= self.now:
                _, _, to, data = heapq.heappop(self.queue)
                if to == "server":
                    server.receive_datagram(data, CLIENT, self.now)
                else:
                    client.receive_datagram(data, SERVER, self.now)
            for conn, handler in ((client, on_client_event), (server, on_server_event)):
                if conn.get_timer() is not None and conn.get_timer() <= self.now:  # type: ignore[operator]
                    conn.handle_timer(self.now)
                event = conn.next_event()
                while event is not None:
                    handler(event)
                    event = conn.next_event()


def connect(link: Link) -> tuple[QuicConnection, MuxQuicConnection]:
    certfile, keyfile = self_signed("127.0.0.1")
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["echo"], max_datagram_size=1200)
    server_config.load_cert_chain(certfile, keyfile)
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True, alpn_protocols=["echo"], verify_mode=ssl.CERT_NONE, max_datagram_size=1200
        )
    )
    client.connect(SERVER, now=link.now)
    first = client.datagrams_to_send(link.now)
    from aioquic.buffer import Buffer  # type: ignore[attr-defined]
    from aioquic.quic.packet import pull_quic_header

    header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8)
    server = MuxQuicConnection(configuration=server_config, original_destination_connection_id=header.destination_cid)
    for data, _ in first:
        server.receive_datagram(data, CLIENT, link.now)
    link.run(client, server, lambda e: None, lambda e: None, lambda: bool(server._handshake_confirmed))
    return client, server


@pytest.fixture
def fast_count(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    count = {"fast": 0, "general": 0}
    real = quic_core.fast_datagrams

    def counted(conn: Any, now: float) -> Any:
        out = real(conn, now)
        count["fast" if out is not None else "general"] += 1
        return out

    monkeypatch.setattr(quic_core, "fast_datagrams", counted)
    return count


def echo_rounds(
    seed: int, loss: float, rounds: int, size: int, before_round: Callable[[int, MuxQuicConnection], None] | None = None
) -> tuple[bytes, bytes]:
    """``rounds`` requests of ``size`` bytes on one stream, each echoed by the server once it arrives."""
    link = Link(seed, loss)
    client, server = connect(link)
    sid = client.get_next_available_stream_id()
    rng = random.Random(seed + 1)
    sent = bytearray()
    got = bytearray()

    def server_event(event: Any) -> None:
        if isinstance(event, StreamDataReceived):
            server.send_stream_data(event.stream_id, event.data, event.end_stream)

    def client_event(event: Any) -> None:
        if isinstance(event, StreamDataReceived):
            got.extend(event.data)

    for i in range(rounds):
        if before_round is not None:
            before_round(i, server)
        request = rng.randbytes(size)
        sent += request
        client.send_stream_data(sid, request, end_stream=i == rounds - 1)
        target = len(sent)
        link.run(client, server, server_event, client_event, lambda: len(got) == target)  # noqa: B023
    return bytes(sent), bytes(got)


def test_request_response_echo_through_loss(fast_count: dict[str, int]) -> None:
    sent, got = echo_rounds(seed=7, loss=0.1, rounds=200, size=64)
    assert got == sent
    # the fast path carried the replies; aioquic's handled the rest (ACK-only packets, retransmissions after PTO...)
    assert fast_count["fast"] >= 150, fast_count


def test_large_echo_spans_many_packets_through_loss(fast_count: dict[str, int]) -> None:
    sent, got = echo_rounds(seed=3, loss=0.05, rounds=20, size=20_000)
    assert got == sent
    assert fast_count["fast"] >= 20, fast_count


def test_bulk_on_several_streams_with_flow_control_through_loss(fast_count: dict[str, int]) -> None:
    """The server sends 3 x 400 kB; the client's stream windows (64 kB) make the sender wait for MAX_STREAM_DATA."""
    link = Link(seed=11, loss=0.03)
    client, server = connect(link)
    rng = random.Random(5)
    payloads = {}
    for _ in range(3):
        sid = server.get_next_available_stream_id()
        payloads[sid] = rng.randbytes(400_000)
        server.send_stream_data(sid, payloads[sid], end_stream=True)
    got: dict[int, bytearray] = {sid: bytearray() for sid in payloads}
    ended: set[int] = set()

    def client_event(event: Any) -> None:
        if isinstance(event, StreamDataReceived):
            got[event.stream_id].extend(event.data)
            if event.end_stream:
                ended.add(event.stream_id)

    client._local_max_stream_data_bidi_remote = 64_000  # type: ignore[attr-defined]
    link.run(client, server, lambda e: None, client_event, lambda: ended == set(payloads))
    assert {sid: bytes(data) for sid, data in got.items()} == payloads
    assert fast_count["fast"] >= 100, fast_count


def test_the_general_path_gives_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = echo_rounds(seed=21, loss=0.08, rounds=60, size=300)
    monkeypatch.setattr(quic_core, "fast_datagrams", lambda conn, now: None)
    general = echo_rounds(seed=21, loss=0.08, rounds=60, size=300)
    assert fast[1] == fast[0] and general[1] == general[0] and fast[0] == general[0]


def test_anything_but_stream_data_and_acks_goes_to_aioquic(fast_count: dict[str, int]) -> None:
    """A DATAGRAM frame or a PING pending: the fast path stands aside, and the frame still goes."""
    link = Link(seed=1, loss=0.0)
    client, server = connect(link)
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"x", end_stream=False)
    link.run(client, server, lambda e: None, lambda e: None, lambda: bool(server._streams))
    before = dict(fast_count)
    server.send_ping(7)
    server.send_stream_data(sid, b"y", end_stream=False)
    out = server.datagrams_to_send(link.now)
    assert out and fast_count["general"] == before["general"] + 1 and fast_count["fast"] == before["fast"]
    assert not server._ping_pending


def test_a_key_update_mid_exchange(fast_count: dict[str, int]) -> None:
    """The fast path writes the key phase and encrypts through aioquic's pair, which performs a requested update."""
    phases = []

    def before_round(i: int, server: MuxQuicConnection) -> None:
        if i in (0, 39):
            phases.append(server._cryptos[quic_core.tls.Epoch.ONE_RTT].send.key_phase)  # type: ignore[attr-defined]
        if i == 20:
            server.request_key_update()

    sent, got = echo_rounds(seed=4, loss=0.05, rounds=40, size=100, before_round=before_round)
    assert got == sent
    assert phases[0] != phases[1]
    assert fast_count["fast"] >= 30, fast_count


def test_a_reset_goes_out_beside_another_streams_data(fast_count: dict[str, int]) -> None:
    from aioquic.quic.events import StreamReset

    link = Link(seed=9, loss=0.0)
    client, server = connect(link)
    first, second = server.get_next_available_stream_id(), server.get_next_available_stream_id() + 4
    server.send_stream_data(first, b"a" * 100)
    server.send_stream_data(second, b"b" * 100)
    resets: list[int] = []
    got: dict[int, bytearray] = {first: bytearray(), second: bytearray()}

    def client_event(event: Any) -> None:
        if isinstance(event, StreamDataReceived):
            got[event.stream_id].extend(event.data)
        elif isinstance(event, StreamReset):
            resets.append(event.stream_id)

    link.run(client, server, lambda e: None, client_event, lambda: len(got[first]) == len(got[second]) == 100)
    before = fast_count["general"]
    server.reset_stream(first, 7)
    server.send_stream_data(second, b"c" * 100)
    link.run(client, server, lambda e: None, client_event, lambda: bool(resets) and len(got[second]) == 200)
    assert resets == [first] and bytes(got[second]) == b"b" * 100 + b"c" * 100
    assert fast_count["general"] > before  # the RESET_STREAM went through aioquic's builder
