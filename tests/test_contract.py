"""The behaviour contract, through real loopback sockets, for every transport."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mux import ConnectionClosed, connect
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener


async def wait_bytes(client: tb.Client, stream_id: int, count: int, timeout: float = 5.0) -> bytes:
    async with asyncio.timeout(timeout):
        while len(client.data.get(stream_id, b"")) < count:
            await client.events.get()
    return bytes(client.data[stream_id])


async def start(make_server: ServerFactory, transport: str, behaviour: str, **pool: int):
    server = await make_server(behaviour, [listener(transport)], pool=pool or None)
    url, options = client_target(server, transport)
    return server, url, options


async def test_echo_and_callback_order(make_server: ServerFactory, transport: str) -> None:
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    for word in (b"alpha", b"beta", b"gamma"):
        await stream.send(word)
    echoed = await wait_bytes(client, stream.id, len(b"alphabetagamma"))
    assert echoed == b"alphabetagamma"
    (server_conn,) = server.pool.connections
    conn.close(0, "bye")
    await asyncio.wait_for(conn.wait_closed(), 5)
    await asyncio.wait_for(server_conn.wait_closed(), 5)
    log = tb.LOG[server_conn.id]
    assert log[:4] == ["init", "new_conn", "connected", f"new_stream:{stream.id}"]
    data = [entry for entry in log if entry.startswith("data:")]
    assert "".join(entry.split(":")[2] for entry in data) == "alphabetagamma"
    assert log[-2:] == ["shutdown:0", "closed"]
    info = server.pool.info()["total"]
    assert (info["accepted"], info["active"], info["closed"]) == (1, 0, 1)


async def test_crash_closes_only_that_connection(
    make_server: ServerFactory, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    _server, url, options = await start(make_server, transport, "tests.apps:Recording")
    healthy, doomed = tb.Client(), tb.Client()
    conn_ok = await connect(healthy, url, options=options)
    conn_bad = await connect(doomed, url, options=options)
    with caplog.at_level(logging.ERROR, logger="mux.connection"):
        await conn_bad.open_stream().send(b"crash")
        event = await doomed.next("closed")
    assert event[1].get("by") in ("peer", "transport")
    assert any("boom, as asked" in (r.exc_text or "") for r in caplog.records), "traceback not logged"
    # the other connection carries on
    stream = conn_ok.open_stream()
    await stream.send(b"still here")
    assert await wait_bytes(healthy, stream.id, 10) == b"still here"
    assert conn_ok.state == "connected"
    crashed = [log for log in tb.LOG.values() if any("crash" in e for e in log)]
    assert crashed and crashed[-1][-1] == "closed"
    conn_ok.close()


async def test_stop_closes_gracefully_with_code(make_server: ServerFactory, transport: str) -> None:
    _server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    await conn.open_stream().send(b"stop")
    event = await client.next("shutdown")
    if transport == "quic":
        assert event[1] == 7
    await client.next("closed")


async def test_reject_in_new_conn_refuses(make_server: ServerFactory, transport: str) -> None:
    server, url, options = await start(make_server, transport, "tests.apps:Refusing")
    with pytest.raises(ConnectionClosed):
        await connect(tb.Client(), url, options=options, timeout=5)
    await asyncio.sleep(0.1)
    total = server.pool.info()["total"]
    assert total["refused"] == 1
    assert total["errors"].get("refused_by_behaviour") == 1


async def test_post_call_and_timers(make_server: ServerFactory, transport: str) -> None:
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    conn = await connect(tb.Client(), url, options=options)
    await asyncio.sleep(0.05)
    (server_conn,) = server.pool.connections
    server_conn.post("hello")
    assert await server_conn.call("ping") == ("reply", "ping")
    with pytest.raises(ValueError, match="call failed"):
        await server_conn.call("fail")
    await asyncio.sleep(0.05)
    # a handle_call that raised crashed its connection like any other callback
    assert server_conn.state in ("closing", "closed")
    log = tb.LOG[server_conn.id]
    assert log.index("info:hello") < log.index("call:ping") < log.index("call:fail")
    await asyncio.wait_for(conn.wait_closed(), 5)


async def test_send_after_fires_in_order(make_server: ServerFactory, transport: str) -> None:
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    conn = await connect(tb.Client(), url, options=options)
    await asyncio.sleep(0.05)
    (server_conn,) = server.pool.connections
    server_conn.send_after(60, "late")
    server_conn.send_after(20, "early")
    cancelled = server_conn.send_after(40, "never")
    server_conn.cancel_timer(cancelled)
    await asyncio.sleep(0.2)
    infos = [e for e in tb.LOG[server_conn.id] if e.startswith("info:")]
    assert infos == ["info:early", "info:late"]
    conn.close()


async def test_closed_connection_rejects_commands(make_server: ServerFactory, transport: str) -> None:
    _server, url, options = await start(make_server, transport, "tests.apps:Recording")
    conn = await connect(tb.Client(), url, options=options)
    stream = conn.open_stream()
    conn.close()
    with pytest.raises(ConnectionClosed):
        await stream.send(b"too late")
    await asyncio.wait_for(conn.wait_closed(), 5)
    with pytest.raises(ConnectionClosed):
        conn.open_stream()


async def test_abort_is_not_a_graceful_close(make_server: ServerFactory, transport: str) -> None:
    """``abort`` ends at once; both ends' ``closed`` props tell it apart from a clean close."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    await stream.send(b"before abort")
    await wait_bytes(client, stream.id, 12)
    (server_conn,) = server.pool.connections
    conn.abort("enough")
    _, props = await asyncio.wait_for(client.next("closed"), 5)
    assert props["by"] == "local"
    if transport == "quic":
        assert props["error_code"] != 0 and props["reason"] == "enough"
    else:
        assert props["error"] == "aborted"
    await asyncio.wait_for(server_conn.wait_closed(), 5)
    log = tb.LOG[server_conn.id]
    assert log[-1] == "closed" and "shutdown:0" not in log


async def test_send_after_the_peer_left_is_not_a_crash(
    make_server: ServerFactory, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback still running when its connection ends gets ConnectionClosed; that is no behaviour bug."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    with caplog.at_level(logging.DEBUG, logger="mux.connection"):
        await conn.open_stream().send(b"late")
        (server_conn,) = server.pool.connections
        await asyncio.sleep(0.05)
        conn.abort("gone")
        await asyncio.wait_for(server_conn.wait_closed(), 5)
    log = tb.LOG[server_conn.id]
    assert "late send" in log and log[-1] == "closed", log
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert any("ended while Recording handled" in r.getMessage() for r in caplog.records), caplog.text


async def test_data_on_a_known_stream_keeps_order_and_isolation(
    make_server: ServerFactory, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Data on a stream the behaviour already knows runs eagerly from the driver (the hot path);
    a callback there that suspends, or raises at once or after suspending, keeps the contract."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    await stream.send(b"warm")
    await wait_bytes(client, stream.id, 4)
    (server_conn,) = server.pool.connections
    await stream.send(b"pause")
    await asyncio.sleep(0.01)  # arrives while the server's callback sleeps
    await stream.send(b"after")
    assert await wait_bytes(client, stream.id, 14) == b"warmpauseafter"
    log = [e for e in tb.LOG[server_conn.id] if e.startswith("data:") or e == "pause done"]
    assert log == [f"data:{stream.id}:warm:0", f"data:{stream.id}:pause:0", "pause done", f"data:{stream.id}:after:0"]

    with caplog.at_level(logging.ERROR, logger="mux.connection"):
        await stream.send(b"pause-crash")
        await client.next("closed")
        other = tb.Client()
        conn2 = await connect(other, url, options=options)
        stream2 = conn2.open_stream()
        await stream2.send(b"warm")
        await wait_bytes(other, stream2.id, 4)
        await stream2.send(b"crash")
        await other.next("closed")
    tracebacks = " ".join(r.exc_text or "" for r in caplog.records)
    assert "boom after a pause" in tracebacks and "boom, as asked" in tracebacks
    assert tb.LOG[server_conn.id][-1] == "closed"


async def test_send_from_a_plain_def_without_await(make_server: ServerFactory, transport: str) -> None:
    _server, url, options = await start(make_server, transport, "tests.apps:FireAndForget")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    await stream.send(b"queued at once")
    await stream.send(b", no await")
    assert await wait_bytes(client, stream.id, 24) == b"queued at once, no await"
    conn.close()


async def test_unawaited_backpressure_is_not_an_unhandled_error(
    make_server: ServerFactory, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain def that ignores send's awaitable above the high-water mark, then the peer leaves."""
    import gc

    server, url, options = await start(make_server, transport, "tests.apps:FireAndForget")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    await stream.send(b"x")
    await wait_bytes(client, stream.id, 1)
    (server_conn,) = server.pool.connections
    server_stream = server_conn.streams[stream.id]
    for _ in range(40):  # above the high-water mark (not the SCTP sndbuf), never awaited
        server_stream.send(b"y" * 60_000)
        if server_conn.blocked:
            break
    assert server_conn.blocked
    with caplog.at_level(logging.ERROR):
        conn.abort()
        await asyncio.wait_for(server_conn.wait_closed(), 10)
        gc.collect()
        await asyncio.sleep(0)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
