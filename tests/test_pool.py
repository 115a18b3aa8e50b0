"""The acceptor pool's limits, timeouts and drain, through real sockets."""

from __future__ import annotations

import asyncio

import pytest

from mux import ConnectionClosed, connect
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener


async def test_max_connections_refuses_and_frees(make_server: ServerFactory, transport: str) -> None:
    server = await make_server("behaviours.echo:Echo", [listener(transport)], pool={"max_connections": 2})
    url, options = client_target(server, transport)
    first = await connect(tb.Client(), url, options=options)
    second = await connect(tb.Client(), url, options=options)
    with pytest.raises(ConnectionClosed):
        await connect(tb.Client(), url, options=options, timeout=5)
    info = server.pool.info()["total"]
    assert info["active"] == 2 and info["refused"] == 1
    assert info["errors"]["refused_max_connections"] == 1
    first.close()
    await asyncio.wait_for(first.wait_closed(), 5)
    await asyncio.sleep(0.1)
    third = await connect(tb.Client(), url, options=options)
    assert third.state == "connected"
    for conn in (second, third):
        conn.close()


async def test_one_pool_shared_by_all_listeners(make_server: ServerFactory) -> None:
    server = await make_server(
        "behaviours.echo:Echo",
        [listener("quic", name="a"), listener("quic", name="b")],
        pool={"max_connections": 1},
    )
    url_a, options = client_target(server, "a")
    url_b, _ = client_target(server, "b")
    conn = await connect(tb.Client(), url_a, options=options)
    with pytest.raises(ConnectionClosed):
        await connect(tb.Client(), url_b, options=options, timeout=5)
    info = server.pool.info()
    assert info["listeners"]["a"]["active"] == 1
    assert info["listeners"]["b"]["refused"] == 1
    assert info["total"]["accepted"] == 1
    conn.close()


async def test_num_acceptors_queues_handshakes(make_server: ServerFactory) -> None:
    """With one acceptor, a second peer waits (its Initial is dropped and retransmitted), then gets in."""
    server = await make_server(
        "tests.apps:SlowNewConn",
        [listener("quic")],
        pool={"num_acceptors": 1},
        options={"delay": 0.6},
    )
    url, options = client_target(server, "quic")
    first, second = await asyncio.gather(
        connect(tb.Client(), url, options=options), connect(tb.Client(), url, options=options)
    )
    assert first.state == second.state == "connected"
    info = server.pool.info()["total"]
    assert info["accepted"] == 2 and info["refused"] == 0
    assert info["errors"]["busy"] >= 1
    first.close()
    second.close()


async def test_handshake_timeout(make_server: ServerFactory, transport: str) -> None:
    server = await make_server(
        "tests.apps:SlowNewConn",
        [listener(transport)],
        pool={"handshake_timeout_ms": 200},
        options={"delay": 3},
    )
    url, options = client_target(server, transport)
    with pytest.raises(ConnectionClosed):
        await connect(tb.Client(), url, options=options, timeout=5)
    await asyncio.sleep(0.2)
    info = server.pool.info()["total"]
    assert info["errors"]["handshake_timeout"] == 1
    assert info["handshaking"] == 0 and info["active"] == 0


async def test_suspend_and_resume(make_server: ServerFactory, transport: str) -> None:
    server = await make_server("behaviours.echo:Echo", [listener(transport)])
    url, options = client_target(server, transport)
    server.pool.suspend()
    with pytest.raises(ConnectionClosed):
        await connect(tb.Client(), url, options=options, timeout=5)
    server.pool.resume()
    conn = await connect(tb.Client(), url, options=options)
    assert conn.state == "connected"
    assert server.pool.info()["total"]["errors"]["refused_suspended"] == 1
    conn.close()


async def test_drain_loses_no_data(make_server: ServerFactory, transport: str) -> None:
    """A transfer under way when drain starts completes intact; new peers are refused meanwhile."""
    server = await make_server("behaviours.echo:Echo", [listener(transport)], pool={"shutdown_timeout_ms": 10_000})
    url, options = client_target(server, transport)
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    chunks = [bytes([i % 251]) * 1000 for i in range(400)]
    await stream.send(chunks[0])
    drain = asyncio.create_task(server.drain())
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionClosed):
        await connect(tb.Client(), url, options=options, timeout=5)
    for chunk in chunks[1:]:
        await stream.send(chunk)
        await asyncio.sleep(0)
    expected = b"".join(chunks)
    async with asyncio.timeout(10):
        while len(client.data.get(stream.id, b"")) < len(expected):
            await client.events.get()
    assert bytes(client.data[stream.id]) == expected
    assert not drain.done()  # still waiting for our connection to finish by itself
    conn.close()
    assert await asyncio.wait_for(drain, 10) is None
    assert server.pool.info()["total"]["active"] == 0


async def test_drain_timeout_closes_the_rest(make_server: ServerFactory, transport: str) -> None:
    server = await make_server("behaviours.echo:Echo", [listener(transport)])
    url, options = client_target(server, transport)
    client = tb.Client()
    await connect(client, url, options=options)
    forced = await asyncio.wait_for(server.pool.drain(timeout_ms=200), 10)
    assert forced == 1
    event = await client.next("shutdown")
    assert event[1] == 0
