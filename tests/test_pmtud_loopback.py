"""Path MTU discovery end to end, on real loopback sockets: both transports climb above Ethernet's 1500 bytes, fall
back when the path shrinks under a transfer (the impairment proxy's ``mtu``), and stay interoperable: a usrsctp
peer takes our HEARTBEAT + PAD probes, and an aioquic client our PING + PADDING ones."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from typing import Any

import pytest
from aioquic.asyncio.client import connect as aioquic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived

from mux import Connection, ConnectionBehaviour, Stream, connect
from mux.behaviours.bench import BenchClient
from mux.impair.proxy import ImpairProxy
from tests import usrsctp
from tests.conftest import ServerFactory, client_target, listener
from tests.udp_relay import RebindingRelay


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)
    assert check(), what


def pmtud_state(conn: Connection) -> dict[str, Any]:
    state = conn.stats()["pmtud"]
    assert state is not None, "no path MTU discovery on this connection"
    return dict(state)


async def test_reaches_above_1500_bytes_on_loopback(make_server: ServerFactory, transport: str) -> None:
    server = await make_server("mux.behaviours.bench:BenchServer", [listener(transport)])
    url, options = client_target(server, transport)
    client = BenchClient()
    conn = await connect(client, url, options=options)
    counted, _ = await client.upload(4 << 20, 16384, 30.0)
    assert counted == 4 << 20
    await wait_until(lambda: pmtud_state(conn)["state"] == "search_complete", 10, "the search never ended")
    state = pmtud_state(conn)
    assert state["pmtu"] > 1500, state
    # what the sender builds its packets at: QUIC's UDP payload, SCTP's packet (its UDP payload)
    assert conn.stats()["mtu"] > 1500 - 28, conn.stats()
    if transport == "sctp":  # the server probed us too: its PAD chunks were skipped as padding, not unrecognized
        sctp = conn.stats()["sctp"]
        assert sctp["unrecognized_chunks"] == 0 and sctp["state"] == "established", sctp
    conn.close()


async def test_the_size_falls_back_when_the_path_shrinks_mid_transfer(
    make_server: ServerFactory, transport: str
) -> None:
    server = await make_server("mux.behaviours.bench:BenchServer", [listener(transport)])
    _, options = client_target(server, transport)
    upstream = server.listener(transport).address[:2]
    async with ImpairProxy(("127.0.0.1", 0), upstream, seed=8899) as proxy:
        host, port = proxy.address[:2]
        client = BenchClient()
        conn = await connect(client, f"{transport}://{host}:{port}", options=options)
        total = 16 << 20
        # messages within the base's fragmentation point: an SCTP chunk keeps its size once sent (mux.sctp.pmtud)
        upload = asyncio.ensure_future(client.upload(total, 1000, 120.0))
        await wait_until(lambda: conn.stats()["mtu"] > 4000, 20, "never climbed above 4000 bytes")
        proxy.set_mtu(1472)  # an Ethernet hop appears: 1500-byte IP packets, nothing larger gets through
        counted, _ = await asyncio.wait_for(upload, 120)
        assert counted == total  # the transfer completed through the black hole
        stats = conn.stats()
        assert stats["mtu"] <= 1472, stats
        assert pmtud_state(conn)["pmtu"] <= 1500
        assert proxy.stats().up.dropped_mtu > 0  # the path really shrank under the transfer
        assert pmtud_state(conn)["fallbacks"] == 1  # one black hole, found once
        conn.close()


# -- interop ---------------------------------------------------------------------------------------------------


_no_usrsctp = usrsctp.missing("echo_server")


class Echoed(ConnectionBehaviour):
    def init(self, opts: dict[str, Any]) -> None:
        self.got: list[bytes] = []

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        self.got.append(data)


@pytest.mark.skipif(_no_usrsctp is not None, reason=_no_usrsctp or "")
async def test_a_usrsctp_peer_answers_our_probes() -> None:
    echo_udp, client_udp = usrsctp.free_udp_ports(2)
    with usrsctp.running(usrsctp.echo_server(echo_udp, client_udp)):
        client = Echoed()
        conn = await connect(
            client,
            f"sctp://127.0.0.1:{echo_udp}",
            options={"sctp_port": usrsctp.ECHO_PORT, "local_udp_port": client_udp},
        )
        assert pmtud_state(conn)["state"] == "idle"  # nothing to send yet: no probes
        stream = conn.open_stream()
        message = bytes(range(256)) * 16  # 4 KiB: several chunks at the base (the search begins), one at the size found
        await stream.send(message)
        await wait_until(lambda: b"".join(client.got) == message, 10, "no echo while probing")
        await wait_until(lambda: pmtud_state(conn)["state"] == "search_complete", 20, "the search never ended")
        state = pmtud_state(conn)
        assert state["pmtu"] > 1500, state  # usrsctp acknowledged HEARTBEATs padded beyond Ethernet's size
        client.got.clear()
        await stream.send(message)
        await wait_until(lambda: b"".join(client.got) == message, 10, "no echo after probing")
        assert conn.stats()["sctp"]["state"] == "established"
        conn.close()


class MtuReporter(ConnectionBehaviour):
    """Answers each message with the connection's packet size (``stats()['mtu']``) and its search's fallbacks."""

    async def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        stats = self.conn.stats()
        await stream.send(json.dumps([stats["mtu"], stats["pmtud"]["fallbacks"]]).encode())


class Replies(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.data:
            self.replies.put_nowait(event.data)


async def test_an_aioquic_client_acknowledges_our_probes(make_server: ServerFactory) -> None:
    server = await make_server(f"{__name__}:MtuReporter", [listener("quic")])
    host, port = server.listener("quic").address[:2]
    config = QuicConfiguration(is_client=True, alpn_protocols=["test"], verify_mode=ssl.CERT_NONE)
    async with aioquic_connect(host, port, configuration=config, create_protocol=Replies) as client:
        assert isinstance(client, Replies)
        stream_id = client._quic.get_next_available_stream_id()
        mtu = 0
        async with asyncio.timeout(10):
            while mtu <= 1500:
                client._quic.send_stream_data(stream_id, b"mtu?")
                client.transmit()
                mtu, _ = json.loads(await client.replies.get())
                await asyncio.sleep(0.05)
        assert mtu > 1500  # the server's datagram size rose: aioquic acknowledged its PING + PADDING probes


async def test_a_quic_peer_that_migrates_is_searched_again_from_the_base(make_server: ServerFactory) -> None:
    server = await make_server(f"{__name__}:MtuReporter", [listener("quic")])
    _, options = client_target(server, "quic")
    async with RebindingRelay(tuple(server.listener("quic").address[:2])) as relay:
        client = Echoed()
        conn = await connect(client, f"quic://127.0.0.1:{relay.port}", options=options)
        stream = conn.open_stream()

        async def ask() -> tuple[int, int]:
            client.got.clear()
            await stream.send(b"mtu?")
            await wait_until(lambda: bool(client.got), 5, "no answer")
            mtu, fallbacks = json.loads(client.got[0])
            return int(mtu), int(fallbacks)

        async with asyncio.timeout(10):
            while (await ask())[0] <= 1500:  # the server's search climbs toward us
                await asyncio.sleep(0.05)
        assert (await ask())[1] == 0
        relay.rebind()  # the server sees us at a new address: a path it knows nothing of
        async with asyncio.timeout(10):
            while (answer := await ask())[1] == 0:
                await asyncio.sleep(0.05)
        assert answer[1] == 1
        async with asyncio.timeout(10):
            while (await ask())[0] <= 1500:  # and it searches the new path up again
                await asyncio.sleep(0.05)
        conn.close()
