"""The behaviour contract, through real loopback sockets, for every transport."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mux import ConnectionClosed, connect
from mux.impair.model import Impairment
from mux.impair.proxy import ImpairProxy
from mux.transport import COMMON_STATS, TransportError
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener

#: what ``closed`` (and ``transport_shutdown``) props carry on every transport
CLOSE_KEYS = {"by", "error_code", "reason"}


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
    assert log[:5] == ["init", "new_conn", "dgram_state_changed", "connected", f"new_stream:{stream.id}"]
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
        _, ended = await doomed.next("transport_shutdown")  # the server aborted: the same callback on both
        event = await doomed.next("closed")
    assert event[1] == ended and ended["by"] == "peer" and ended["error"] == "aborted", event
    assert any("boom, as asked" in (r.exc_text or "") for r in caplog.records), "traceback not logged"
    # the other connection carries on
    stream = conn_ok.open_stream()
    await stream.send(b"still here")
    assert await wait_bytes(healthy, stream.id, 10) == b"still here"
    assert conn_ok.state == "connected"
    # the server runs the crashed connection's ``closed`` after the abort has left, so the peer may hear first
    for _ in range(200):
        crashed = [log for log in tb.LOG.values() if any("crash" in e for e in log)]
        if crashed and crashed[-1][-1] == "closed":
            break
        await asyncio.sleep(0.01)
    assert crashed and crashed[-1][-1] == "closed"
    conn_ok.close()


async def test_stop_code_and_reason_reach_the_peer(make_server: ServerFactory, transport: str) -> None:
    """``Stop(7, reason)``: the peer's behaviour gets ``shutdown(7)`` and ``closed`` with that code and reason
    over SCTP too (an ABORT's User-Initiated Abort cause carries them), and our own ``closed`` says so."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    await asyncio.sleep(0.05)
    (server_conn,) = server.pool.connections
    await conn.open_stream().send(b"stop")
    event = await client.next("shutdown")
    assert event[1] == 7
    _, props = await client.next("closed")
    assert props == {"by": "peer", "error_code": 7, "reason": "stopped by behaviour"}, props
    assert "transport_shutdown" not in client.seen, client.seen
    ours = await asyncio.wait_for(server_conn.wait_closed(), 5)
    assert ours == {"by": "local", "error_code": 7, "reason": "stopped by behaviour"}, ours


async def test_stop_with_code_zero(make_server: ServerFactory, transport: str) -> None:
    """Code 0 is SCTP's graceful SHUTDOWN, which carries no reason: the peer sees code 0 on both, and the
    reason only over QUIC."""
    _server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    await conn.open_stream().send(b"stop0")
    assert (await client.next("shutdown"))[1] == 0
    _, props = await client.next("closed")
    assert props == {"by": "peer", "error_code": 0, "reason": "done" if transport == "quic" else ""}, props


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
    assert props.keys() >= CLOSE_KEYS and props["by"] == "local", props
    assert props["error"] == "aborted" and props["reason"] == "enough" and props["error_code"] != 0, props
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


async def test_a_peer_abort_is_a_transport_shutdown(make_server: ServerFactory, transport: str) -> None:
    """The peer's ``conn.abort``: ``transport_shutdown`` on both transports (as msquic reports a transport
    CONNECTION_CLOSE), never ``shutdown``; its props are ``closed``'s, with the same keys and values on both."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    await stream.send(b"hello")
    await wait_bytes(client, stream.id, 5)
    (server_conn,) = server.pool.connections
    conn.abort("enough")
    await asyncio.wait_for(server_conn.wait_closed(), 5)
    log = tb.LOG[server_conn.id]
    assert log[-2:] == ["transport_shutdown", "closed"] and not [e for e in log if e.startswith("shutdown")], log
    props = tb.PROPS[server_conn.id]
    closed = props["closed"]
    assert props["transport_shutdown"] == closed
    assert closed.keys() >= CLOSE_KEYS, closed
    assert (closed["by"], closed["error"], closed["reason"]) == ("peer", "aborted", "enough"), closed


async def test_an_idle_end_is_a_transport_shutdown(make_server: ServerFactory, transport: str) -> None:
    """QUIC's idle timeout and SCTP's autoclose (gen_sctp's idle close) end a quiet connection alike."""
    idle = {"idle_timeout_ms": 300} if transport == "quic" else {"autoclose": 1}
    server = await make_server("tests.apps:Recording", [listener(transport, **idle)])
    url, options = client_target(server, transport)
    conn = await connect(tb.Client(), url, options=options)
    await asyncio.sleep(0.05)
    (server_conn,) = server.pool.connections
    props = await asyncio.wait_for(server_conn.wait_closed(), 5)
    assert tb.LOG[server_conn.id][-2:] == ["transport_shutdown", "closed"], tb.LOG[server_conn.id]
    assert tb.PROPS[server_conn.id]["transport_shutdown"] == props
    assert props.keys() >= CLOSE_KEYS and (props["by"], props["error"]) == ("transport", "idle_timeout"), props
    await asyncio.wait_for(conn.wait_closed(), 5)


async def test_stats_share_their_keys(make_server: ServerFactory, transport: str) -> None:
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    await stream.send(b"x" * 1000)
    await wait_bytes(client, stream.id, 1000)
    (server_conn,) = server.pool.connections
    async with asyncio.timeout(5):  # the echo's acknowledgement (SCTP delays its SACK) gives the server an RTT
        while server_conn.stats()["bytes_in_flight"]:
            await asyncio.sleep(0.02)
    for side in (conn, server_conn):
        stats = side.stats()
        assert set(COMMON_STATS) <= stats.keys(), set(COMMON_STATS) - stats.keys()
        assert stats["transport"] == transport and isinstance(stats[transport], dict)
        assert stats["state"] == "connected"
        for key in ("srtt_ms", "rto_ms", "cwnd", "mtu", "peer_rwnd", "packets_sent", "packets_received"):
            assert stats[key] > 0, (key, stats)
        # a loaded machine may make a probe timer fire (counted): test_stats_count_retransmissions checks the count
        assert stats["bytes_in_flight"] >= 0 and isinstance(stats["packets_retransmitted"], int), stats
        assert stats["mailbox"]["queued"] >= 0
    conn.close()
    await asyncio.wait_for(conn.wait_closed(), 5)
    assert conn.stats()["state"] in ("closing", "closed")


async def test_stats_count_retransmissions(make_server: ServerFactory, transport: str) -> None:
    """Through a link that drops a tenth of the server's packets, the server sends some again."""
    server, _url, options = await start(make_server, transport, "tests.apps:Recording")
    host, port = server.listener(transport).address[:2]
    async with ImpairProxy(("127.0.0.1", 0), (host, port), down=Impairment(loss=0.1), seed=7) as proxy:
        client = tb.Client()
        conn = await connect(client, f"{transport}://127.0.0.1:{proxy.address[1]}", options=options, timeout=10)
        stream = conn.open_stream()
        for i in range(100):
            await stream.send(b"%03d" % i + b"y" * 997)
        await wait_bytes(client, stream.id, 100_000, timeout=20)
        (server_conn,) = server.pool.connections
        stats = server_conn.stats()
        assert stats["packets_retransmitted"] > 0, stats
        assert stats["packets_sent"] > stats["packets_retransmitted"], stats
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 5)


async def test_new_stream_comes_before_a_reset_or_stop_sending(make_server: ServerFactory, transport: str) -> None:
    """A reset or a stop-sending on a stream the behaviour has never seen announces the stream first, with the
    code it was given: QUIC carries it in RESET_STREAM / STOP_SENDING, SCTP (RFC 6525 carries none) in mux's
    marker message before the stream reset, which only a mux peer sends and reads."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    conn = await connect(tb.Client(), url, options=options)
    reset, stopped = conn.open_stream(), conn.open_stream()
    reset.reset(5)
    stopped.stop_sending(6)
    await asyncio.sleep(0.05)
    (server_conn,) = server.pool.connections

    def seen() -> list[str]:
        return [e for e in tb.LOG[server_conn.id] if e.startswith(("new_stream", "peer_"))]

    async with asyncio.timeout(5):
        while len(seen()) < 4:
            await asyncio.sleep(0.01)
    assert seen() == [
        f"new_stream:{reset.id}",
        f"peer_send_aborted:{reset.id}:5",
        f"new_stream:{stopped.id}",
        f"peer_receive_aborted:{stopped.id}:6",
    ], seen()
    conn.close()


async def _wait_log(conn_id: int, entry: str, timeout: float = 5.0) -> list[str]:
    async with asyncio.timeout(timeout):
        while entry not in tb.LOG.get(conn_id, []):
            await asyncio.sleep(0.01)
    return tb.LOG[conn_id]


async def test_fin_ends_a_direction_and_stream_closed_follows_both(make_server: ServerFactory, transport: str) -> None:
    """``send(data, fin=True)``: the peer gets everything, then ``fin`` (SCTP: the message, then an empty final
    ``stream_data`` when the stream reset arrives, after everything before it); the echo ends its side the same
    way, and ``stream_closed`` fires at both ends once both directions are done."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    for word in (b"one", b"two"):
        await stream.send(word)
    await stream.send(b"three", fin=True)
    async with asyncio.timeout(5):
        await client.fin_event(stream.id).wait()
    assert bytes(client.data[stream.id]) == b"onetwothree"
    fins = [e for e in tb_client_events(client, "data") if e[1] == stream.id and e[3]]
    assert len(fins) == 1 and fins[0] is tb_client_events(client, "data")[-1], client.seen
    assert (await client.next("stream_closed"))[1] == stream.id
    assert stream.id not in conn.streams
    (server_conn,) = server.pool.connections
    log = await _wait_log(server_conn.id, f"stream_closed:{stream.id}")
    data = [e for e in log if e.startswith(f"data:{stream.id}:")]
    assert "".join(e.split(":")[2] for e in data) == "onetwothree"
    assert data[-1].endswith(":1") and all(e.endswith(":0") for e in data[:-1]), data
    assert log.index(data[-1]) < log.index(f"stream_closed:{stream.id}")
    conn.close()


def tb_client_events(client: tb.Client, kind: str) -> list[tuple[object, ...]]:
    """The events of ``kind`` a test client got so far, in order (without taking them off its queue)."""
    return [e for e in list(client.events._queue) if e[0] == kind]  # type: ignore[attr-defined]


async def test_reset_after_data_reaches_the_peer_with_its_code(make_server: ServerFactory, transport: str) -> None:
    """``stream.reset(code)`` after data the peer has: it gets the data, then ``peer_send_aborted(code)`` and
    nothing more on that stream; its answer on the stream still reaches us."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    await stream.send(b"before")
    assert await wait_bytes(client, stream.id, 6) == b"before"
    stream.reset(77)
    with pytest.raises(TransportError):
        await stream.send(b"after")  # our sending side is over
    (server_conn,) = server.pool.connections
    log = await _wait_log(server_conn.id, f"peer_send_aborted:{stream.id}:77")
    mine = [e for e in log if f":{stream.id}" in e]
    assert mine == [f"new_stream:{stream.id}", f"data:{stream.id}:before:0", f"peer_send_aborted:{stream.id}:77"]
    server_stream = server_conn.streams[stream.id]
    await server_stream.send(b"still open", fin=True)  # the server's direction is its own
    async with asyncio.timeout(5):
        await client.fin_event(stream.id).wait()
    assert bytes(client.data[stream.id]) == b"beforestill open"
    assert (await client.next("stream_closed"))[1] == stream.id
    await _wait_log(server_conn.id, f"stream_closed:{stream.id}")
    conn.close()


async def test_stop_sending_resets_the_peers_direction_with_the_code(
    make_server: ServerFactory, transport: str
) -> None:
    """``stream.stop_sending(code)``: the peer's behaviour gets ``peer_receive_aborted(code)`` and can send no
    more; its transport resets its direction with that code (QUIC copies it into RESET_STREAM, RFC 9000 §3.5;
    over SCTP it answers the Incoming SSN Reset Request with its Outgoing one, after mux's marker), so we get
    ``peer_send_aborted(code)``."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    await stream.send(b"hello")
    await wait_bytes(client, stream.id, 5)
    stream.stop_sending(9)
    event = await client.next("peer_send_aborted")
    assert event[1:] == (stream.id, 9), event
    (server_conn,) = server.pool.connections
    log = await _wait_log(server_conn.id, f"peer_receive_aborted:{stream.id}:9")
    server_stream = server_conn.streams[stream.id]
    with pytest.raises(TransportError):
        await server_stream.send(b"no more")
    await stream.send(b"", fin=True)  # our direction ends too: both ends close the stream
    assert (await client.next("stream_closed"))[1] == stream.id
    log = await _wait_log(server_conn.id, f"stream_closed:{stream.id}")
    assert log.index(f"peer_receive_aborted:{stream.id}:9") < log.index(f"stream_closed:{stream.id}")
    conn.close()


async def test_unidirectional_stream(make_server: ServerFactory, transport: str) -> None:
    """``open_stream(unidirectional=True)``: the peer's stream is one-way (it cannot send on it), our side never
    receives; both ends close it once we end it. Over SCTP between mux peers a marker message, the stream's
    first, says so."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream(unidirectional=True)
    assert stream.direction == "unidi" and stream.local
    await stream.send(b"one-way")
    await stream.send(b" only", fin=True)
    assert (await client.next("stream_closed"))[1] == stream.id
    (server_conn,) = server.pool.connections
    log = await _wait_log(server_conn.id, f"stream_closed:{stream.id}")
    mine = [e for e in log if f":{stream.id}" in e]
    assert mine[0] == f"new_stream:{stream.id}:unidi", mine
    assert "".join(e.split(":")[2] for e in mine if e.startswith("data:")) == "one-way only"
    assert stream.id not in client.data  # nothing ever came back on it
    conn.close()


async def test_stream_ids_come_back_after_both_directions_end(make_server: ServerFactory, transport: str) -> None:
    """Once a stream is closed both ways, SCTP hands its id out again (its streams are a fixed set, as browsers
    cap data channel ids); QUIC never reuses one. Either way the peer gets ``new_stream`` for the new stream,
    after the old one's ``stream_closed``."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    first = conn.open_stream()
    await first.send(b"first", fin=True)
    assert (await client.next("stream_closed"))[1] == first.id
    (server_conn,) = server.pool.connections
    await _wait_log(server_conn.id, f"stream_closed:{first.id}")
    second = conn.open_stream()
    assert (second.id == first.id) == (transport == "sctp"), (first.id, second.id)
    await second.send(b"second", fin=True)
    async with asyncio.timeout(5):
        await client.fin_event(second.id).wait()
    assert (await client.next("stream_closed"))[1] == second.id
    log = await _wait_log(server_conn.id, f"stream_closed:{second.id}")
    after_first = log[log.index(f"stream_closed:{first.id}") + 1 :]  # the old stream ended before the new began
    assert after_first.count(f"new_stream:{second.id}") == 1, log
    assert "".join(e.split(":")[2] for e in after_first if e.startswith(f"data:{second.id}:")) == "second"
    assert bytes(client.data[second.id]) == (b"second" if transport == "quic" else b"firstsecond")
    conn.close()


async def test_dgram_state_changed_comes_before_connected(make_server: ServerFactory, transport: str) -> None:
    """It says whether ``send_datagram`` works, and the largest datagram it takes."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    kinds = client.seen
    assert kinds.index("dgram_state_changed") < kinds.index("connected"), kinds
    _, props = await client.next("dgram_state_changed")
    assert set(props) == {"dgram_send_enabled", "dgram_max_len"}
    (server_conn,) = server.pool.connections
    assert tb.PROPS[server_conn.id]["dgram_state_changed"] == props  # loopback: the same limits both ways
    if transport == "quic":
        assert props["dgram_send_enabled"] and 1000 < props["dgram_max_len"] < 1200, props
    if props["dgram_send_enabled"]:
        conn.send_datagram(b"d" * props["dgram_max_len"])
        with pytest.raises(TransportError):
            conn.send_datagram(b"d" * (props["dgram_max_len"] + 1))
    else:
        assert props["dgram_max_len"] == 0
        with pytest.raises(TransportError):
            conn.send_datagram(b"d")
    conn.close()


async def test_tls_callbacks_fire_on_quic_only(make_server: ServerFactory, transport: str) -> None:
    """``peer_cert_received`` (the server's certificate, DER) reaches a QUIC client before ``connected``;
    SCTP has no TLS, so neither it nor ``resumed`` fires there. A server without client certificates gets none."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from mux.quic.certs import self_signed

    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    kinds = client.seen
    (server_conn,) = server.pool.connections
    if transport == "quic":
        assert kinds.index("peer_cert_received") < kinds.index("connected"), kinds
        _, certificates = await client.next("peer_cert_received")
        served, _key = self_signed("127.0.0.1")  # what a listener without a certfile serves
        assert certificates == [x509.load_pem_x509_certificate(served.read_bytes()).public_bytes(Encoding.DER)]
    else:
        assert "peer_cert_received" not in kinds, kinds
    await asyncio.sleep(0.05)
    log = tb.LOG[server_conn.id]
    assert not [e for e in log if e.startswith(("peer_cert_received", "resumed"))], log
    conn.close()


async def test_datagrams_go_both_ways(make_server: ServerFactory, transport: str) -> None:
    """``send_datagram`` and ``dgram_recv`` on both transports (SCTP: unordered, never-retransmitted messages)."""
    server, url, options = await start(make_server, transport, "tests.apps:Recording")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    sent = [b"datagram %d" % i for i in range(20)]
    for data in sent:
        conn.send_datagram(data)
    got = [(await client.next("dgram"))[1] for _ in sent]  # loopback loses nothing
    assert sorted(got) == sorted(sent)
    (server_conn,) = server.pool.connections
    assert [e for e in tb.LOG[server_conn.id] if e.startswith("dgram:")] == [f"dgram:{d.decode()}" for d in sent]
    stream = conn.open_stream()  # and stream data is untouched by them
    await stream.send(b"after", fin=transport == "quic")
    assert (await client.next("data"))[2] == b"after"
    conn.close()
    await conn.wait_closed()


async def test_stream_priority_sends_a_higher_stream_first(make_server: ServerFactory, transport: str) -> None:
    """quicer's stream ``priority`` (0..65535, higher first, 0x7FFF by default). Two streams get 300 KB each at
    once, the lower one first: the higher one's data all arrives before half of the lower one's. Over SCTP with
    the ``prio`` scheduler (``rr`` and ``fcfs`` ignore priorities); over QUIC mux orders aioquic's streams."""
    server, url, options = await start(make_server, transport, "tests.apps:Progress")
    if transport == "sctp":
        options = {**options, "scheduler": "prio"}
    conn = await connect(tb.Client(), url, options=options)
    low, high = conn.open_stream(), conn.open_stream()
    assert low.priority == high.priority == 0x7FFF
    for bad in (70_000, -1, True):
        with pytest.raises(ValueError):
            high.priority = bad
    low.priority = 10
    high.priority = 1000
    assert (low.priority, high.priority) == (10, 1000)
    size, piece = 300_000, 10_000
    for s in (low, high):
        for _ in range(size // piece):
            s.send(bytes(piece))  # queued at once: both have all of theirs waiting
    (server_conn,) = server.pool.connections
    async with asyncio.timeout(10):
        while {n for sid, n in tb.PROGRESS.get(server_conn.id, []) if n == size} != {size} or sum(
            1 for sid, n in tb.PROGRESS.get(server_conn.id, []) if n == size
        ) < 2:
            await asyncio.sleep(0.01)
    log = tb.PROGRESS[server_conn.id]
    high_done = log.index((high.id, size))
    low_then = max((n for sid, n in log[:high_done] if sid == low.id), default=0)
    assert low_then <= size // 2, (low_then, log[:high_done][-5:])
    conn.close()
