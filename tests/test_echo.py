"""The shipped echo behaviour under input a peer is allowed to send."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mux import connect
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener


async def test_a_datagram_from_a_peer_that_accepts_none_is_dropped_not_a_crash(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 9221 is one-sided: a client may send DATAGRAM frames without advertising that it takes any."""
    server = await make_server("behaviours.echo:Echo", [listener("quic")])
    url, options = client_target(server, "quic")
    client = tb.Client()
    conn = await connect(client, url, options={**options, "datagrams": False})
    conn.send_datagram(b"no way back")
    stream = conn.open_stream()
    await stream.send(b"ping", fin=True)
    await asyncio.wait_for(client.fin_event(stream.id).wait(), 5)
    assert bytes(client.data[stream.id]) == b"ping"  # the connection is alive and well
    assert conn.state == "connected"
    (server_conn,) = server.pool.connections
    assert server_conn.behaviour.dropped_datagrams == 1  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    conn.close()
    await conn.wait_closed()


async def test_a_datagram_too_big_to_send_back_does_not_block_the_ones_after_it(make_server: ServerFactory) -> None:
    """A peer with a bigger datagram size than ours: its big datagram cannot go back, the small ones still do."""
    server = await make_server("behaviours.echo:Echo", [listener("quic")])
    url, options = client_target(server, "quic")
    client = tb.Client()
    conn = await connect(client, url, options={**options, "max_datagram_size": 1500})
    conn.send_datagram(b"B" * 1400)  # fits the client's packets, not the server's 1200-byte ones
    for i in range(3):
        conn.send_datagram(b"small %d" % i)
    got = [(await client.next("dgram"))[1] for _ in range(3)]
    assert got == [b"small 0", b"small 1", b"small 2"]
    (server_conn,) = server.pool.connections
    assert server_conn.behaviour.dropped_datagrams == 1  # type: ignore[attr-defined]
    assert server_conn.stats()["dgram_send_queued"] == 0
    conn.close()
    await conn.wait_closed()


async def test_datagrams_the_path_cannot_carry_are_dropped_not_queued_without_end(make_server: ServerFactory) -> None:
    server = await make_server("behaviours.echo:Echo", [listener("quic")])
    url, options = client_target(server, "quic")
    conn = await connect(tb.Client(), url, options=options)
    for i in range(5000):  # far faster than a congestion window lets them leave: most must be dropped
        conn.send_datagram(i.to_bytes(4, "big"))
    stats = conn.stats()
    assert stats["dgram_send_queued"] <= 256 and stats["dgram_send_dropped"] >= 5000 - 256 - 64
    conn.close()
    await conn.wait_closed()
