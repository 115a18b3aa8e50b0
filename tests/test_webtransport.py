"""WebTransport over HTTP/3, with aioquic's HTTP/3 layer as the client (the browser test is test_browser.py)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from typing import Any

import pytest

from mux.quic import wt_wire as wire
from mux.server import Server
from tests import wt_apps
from tests.conftest import ServerFactory
from tests.wt_client import wt_connect


def wt_listener(**extra: Any) -> dict[str, Any]:
    return {
        "transport": "quic",
        "host": "127.0.0.1",
        "port": 0,
        "name": "wt",
        "webtransport": {"paths": ["/echo"]},
    } | extra


def address(server: Server) -> tuple[str, int]:
    host, port = server.listener("wt").address[:2]
    return host, port


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def only_connection(server: Server) -> Any:
    (conn,) = server.pool.connections
    return conn


# -- the wire ----------------------------------------------------------------------------------------


def test_error_codes_map_both_ways_and_skip_the_greased_ones() -> None:
    for code in (0, 1, 0x1D, 0x1E, 0x1F, 12345, 0xFFFFFFFF):
        http = wire.to_http3(code)
        assert wire.FIRST_ERROR <= http <= wire.LAST_ERROR
        assert (http - 0x21) % 0x1F != 0, "a reserved code carries no application code"
        assert wire.from_http3(http) == code
    assert wire.to_http3(0xFFFFFFFF) == wire.LAST_ERROR
    assert wire.from_http3(0x100) == 0x100  # an HTTP/3 code of the stack arrives as it is
    with pytest.raises(ValueError):
        wire.to_http3(2**32)


def test_capsules_are_read_across_chunks_and_unknown_ones_skipped() -> None:
    reader = wire.CapsuleReader()
    unknown = b"\x40\x41" + b"\x44\x00" + b"x" * 1024  # type 0x41, 1024 bytes: dropped, never buffered whole
    stream = unknown + wire.close_capsule(7, "bye now")
    found = []
    for i in range(0, len(stream), 5):
        found += reader.feed(stream[i : i + 5])
        assert len(reader._buffer) <= 16 + wire.MAX_CLOSE_CAPSULE
    assert [(kind, wire.parse_close(value)) for kind, value in found] == [
        (wire.CLOSE_WEBTRANSPORT_SESSION, (7, "bye now"))
    ]
    with pytest.raises(wire.CapsuleError):
        wire.CapsuleReader().feed(b"\x68\x43\x44\x10" + b"\0" * 2000)  # a close capsule longer than allowed
    assert len(wire.close_capsule(1, "é" * 1000)) <= 2 + 2 + 4 + wire.MAX_REASON


# -- sessions ----------------------------------------------------------------------------------------


async def test_echo_on_streams_and_datagrams_then_close_with_code_and_reason(make_server: ServerFactory) -> None:
    """The shipped echo, unchanged, over WebTransport: bidi streams echo, uni stream data reaches it (and is
    dropped, as echo does), datagrams echo, and the client's close capsule reaches it as shutdown and closed."""
    server = await make_server("tests.wt_apps:WatchedEcho", [wt_listener()])
    async with wt_connect(*address(server)) as client:
        session, status = await client.session("/echo?room=1", origin="https://example.test")
        assert status == 200
        conn = only_connection(server)
        assert conn.transport == "webtransport"
        new_conn = wt_apps.SEEN[conn.id]["new_conn"]
        assert new_conn["path"] == "/echo?room=1"
        assert new_conn["origin"] == "https://example.test"
        assert new_conn["headers"]["origin"] == "https://example.test"
        assert new_conn["transport"] == "webtransport" and new_conn["session_id"] == session
        big = bytes(range(256)) * 4000  # 1 MB, more than one window's worth of packets
        bidi = client.open(session)
        client.send(bidi, big, fin=True)
        uni = client.open(session, unidirectional=True)
        client.send(uni, b"one way" * 100, fin=True)
        client.send_datagram(session, b"a datagram")
        assert await client.read(bidi, timeout=20) == big
        assert await asyncio.wait_for(client.datagrams[session].get(), 5) == b"a datagram"
        await until(lambda: conn.stats()["recv_unconsumed"] == 0)
        client.close_session(session, 7, "bye")
        closed = await asyncio.wait_for(conn.wait_closed(), 5)
        assert closed == {"by": "peer", "error_code": 7, "reason": "bye"}
        seen = wt_apps.SEEN[conn.id]
        assert seen["shutdown"] == 7
        assert seen["dropped_unidirectional"] == 700
        order = wt_apps.ORDER[conn.id]
        assert order[:2] == ["new_conn", "connected"] and order[-3:] == ["shutdown", "dropped_unidirectional", "closed"]
        # our side of the CONNECT stream ends in answer
        await asyncio.wait_for(client._ended(client.body_ended, session).wait(), 5)
    assert server.pool.info()["total"]["closed"] == 1


async def test_stop_sends_the_close_capsule(make_server: ServerFactory) -> None:
    server = await make_server("tests.wt_apps:WatchedEcho", [wt_listener()])
    async with wt_connect(*address(server)) as client:
        session, _ = await client.session("/echo")
        conn = only_connection(server)
        client.send(client.open(session), b"stop")
        await asyncio.wait_for(client._ended(client.body_ended, session).wait(), 5)
        kind, value = wire.CapsuleReader().feed(bytes(client.bodies[session]))[0]
        assert kind == wire.CLOSE_WEBTRANSPORT_SESSION
        assert wire.parse_close(value) == (42, "asked to stop")
        assert await asyncio.wait_for(conn.wait_closed(), 5) == {
            "by": "local",
            "error_code": 42,
            "reason": "asked to stop",
        }


async def test_a_crash_resets_the_connect_stream_and_a_reset_one_is_an_abort(make_server: ServerFactory) -> None:
    server = await make_server("tests.wt_apps:WatchedEcho", [wt_listener()])
    async with wt_connect(*address(server)) as client:
        crashing, _ = await client.session("/echo")
        conn = only_connection(server)
        client.send(client.open(crashing), b"crash")
        await until(lambda: crashing in client.resets)
        assert client.resets[crashing] == wire.H3_INTERNAL_ERROR
        closed = await asyncio.wait_for(conn.wait_closed(), 5)
        assert closed["by"] == "local" and closed["error"] == "aborted"
        dropped, _ = await client.session("/echo")
        conn = only_connection(server)
        client._quic.reset_stream(dropped, wire.H3_NO_ERROR)
        client.transmit()
        closed = await asyncio.wait_for(conn.wait_closed(), 5)
        assert closed["by"] == "peer" and closed["error"] == "aborted"
        assert wt_apps.SEEN[conn.id]["transport_shutdown"]["error"] == "aborted"


async def test_streams_sent_before_the_session_is_accepted_wait_for_connected(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """new_conn holds the 200; what the client sends meanwhile reaches the behaviour after connected. A CONNECT
    stream the client stops before the answer ends the session quietly (no crash logged)."""
    server = await make_server("tests.apps:SlowNewConn", [wt_listener()], options={"delay": 0.3})
    async with wt_connect(*address(server)) as client:
        session = client.request("/echo")
        early = client.open(session)
        client.send(early, b"sent before the 200", fin=True)
        await until(lambda: len(server.pool.connections) == 1)
        assert not client.responses[session].done()
        assert (await asyncio.wait_for(client.responses[session], 5))[b":status"] == b"200"
        assert await client.read(early) == b"sent before the 200"
        stopped = client.request("/echo")
        await until(lambda: len(server.pool.connections) == 2)
        conn = next(c for c in server.pool.connections if c.state == "handshaking")
        client._quic.stop_stream(stopped, wire.H3_NO_ERROR)
        client.transmit()
        closed = await asyncio.wait_for(conn.wait_closed(), 5)
        assert closed["error"] == "aborted" and "stopped before the session was accepted" in closed["reason"]
    assert "crashed" not in caplog.text


async def test_sessions_beyond_max_connections_get_503(make_server: ServerFactory) -> None:
    server = await make_server("tests.wt_apps:WatchedEcho", [wt_listener()], pool={"max_connections": 1})
    async with wt_connect(*address(server)) as client:
        _, status = await client.session("/echo")
        assert status == 200
        _, status = await client.session("/echo")
        assert status == 503
    assert server.pool.info()["listeners"]["wt"]["errors"]["refused_max_connections"] == 1


async def test_plain_requests_unknown_paths_and_rejected_origins(make_server: ServerFactory) -> None:
    server = await make_server("tests.wt_apps:WatchedEcho", [wt_listener()])
    async with wt_connect(*address(server)) as client:
        page = client.request("/", method="GET")
        assert (await asyncio.wait_for(client.responses[page], 5))[b":status"] == b"200"
        await asyncio.wait_for(client._ended(client.body_ended, page).wait(), 5)
        assert b"/echo" in client.bodies[page]
        missing = client.request("/nothing", method="GET")
        assert (await asyncio.wait_for(client.responses[missing], 5))[b":status"] == b"404"
        _, status = await client.session("/elsewhere")
        assert status == 404
        _, status = await client.session("/echo", origin="https://evil.test")
        assert status == 403
        # the connection is still good for a session after all that
        session, status = await client.session("/echo")
        assert status == 200
        stream = client.open(session)
        client.send(stream, b"still here", fin=True)
        assert await client.read(stream) == b"still here"
    info = server.pool.info()["listeners"]["wt"]
    assert info["accepted"] == 2 and info["refused"] == 1 and info["errors"]["refused_by_behaviour"] == 1


async def test_sessions_sharing_a_connection_are_connections_of_their_own(make_server: ServerFactory) -> None:
    """Chromium pools sessions on one QUIC connection: each is its own behaviour connection, and one ending
    leaves the other working; the QUIC connection closing ends what is left."""
    server = await make_server("tests.wt_apps:WatchedEcho", [wt_listener()])
    async with wt_connect(*address(server)) as client:
        first, _ = await client.session("/echo")
        second, _ = await client.session("/echo")
        conns = sorted(server.pool.connections, key=lambda c: c.id)
        assert len(conns) == 2
        assert {wt_apps.SEEN[c.id]["new_conn"]["session_id"] for c in conns} == {first, second}
        by_session = {wt_apps.SEEN[c.id]["new_conn"]["session_id"]: c for c in conns}
        streams = {s: client.open(s) for s in (first, second)}
        for session, stream in streams.items():
            client.send(stream, f"to {session}".encode(), fin=True)
            client.send_datagram(session, f"dgram {session}".encode())
        for session, stream in streams.items():
            assert await client.read(stream) == f"to {session}".encode()
            assert await asyncio.wait_for(client.datagrams[session].get(), 5) == f"dgram {session}".encode()
        client.close_session(first, 1, "first done")
        assert (await by_session[first].wait_closed())["error_code"] == 1
        late = client.open(second)
        client.send(late, b"second still up", fin=True)
        assert await client.read(late) == b"second still up"
        assert by_session[second].state == "connected"
        client.close(error_code=0x100, reason_phrase="leaving")
        closed = await asyncio.wait_for(by_session[second].wait_closed(), 5)
        assert closed["by"] == "peer" and closed["error_code"] == 0x100 and closed["reason"] == "leaving"
        assert wt_apps.SEEN[by_session[second].id]["shutdown"] == 0x100


async def test_finished_streams_are_forgotten(make_server: ServerFactory) -> None:
    """A long session's finished streams leave every table (aioquic's HTTP/3 layer keeps a WebTransport
    bidirectional stream for ever by itself)."""
    server = await make_server("tests.wt_apps:WatchedEcho", [wt_listener()])
    async with wt_connect(*address(server)) as client:
        session, _ = await client.session("/echo")
        conn = only_connection(server)
        for i in range(300):
            stream = client.open(session)
            client.send(stream, b"%d" % i, fin=True)
            assert await client.read(stream) == b"%d" % i
        await asyncio.sleep(0.2)  # the last acknowledgements
        h3conn = next(iter(server.listener("wt")._by_cid.values()))
        assert h3conn.h3 is not None
        assert len(h3conn.h3._stream) < 150 and len(h3conn.stream_session) < 150
        assert len(conn._tconn.streams) < 150
        stream = client.open(session)
        client.send(stream, b"still fine", fin=True)
        assert await client.read(stream) == b"still fine"


async def test_server_opened_streams_resets_and_codes(make_server: ServerFactory) -> None:
    server = await make_server("tests.wt_apps:Opener", [wt_listener()])
    async with wt_connect(*address(server)) as client:
        session, _ = await client.session("/echo")
        conn = only_connection(server)
        opened = [await asyncio.wait_for(client.server_streams.get(), 5) for _ in range(2)]
        uni, bidi = sorted(opened, key=lambda s: s & 2, reverse=True)
        assert await client.read(uni) == b"from the server, one way"
        assert await client.read(bidi) == b"from the server, answer me"
        client.send(bidi, b"fine", fin=True)  # the answer on a stream the server opened
        back = await asyncio.wait_for(client.server_streams.get(), 5)
        assert await client.read(back) == b"you said: fine"
        mine = client.open(session)
        client.send(mine, b"reset")
        await until(lambda: mine in client.resets)
        assert wire.from_http3(client.resets[mine]) == 9
        doomed = client.open(session)
        client.send(doomed, b"data before a reset")
        await until(lambda: f"data:{doomed}" in wt_apps.SEEN[conn.id])
        client._quic.reset_stream(doomed, wire.to_http3(5))
        client.transmit()
        client.close_session(session, 0, "")
    closed = await asyncio.wait_for(conn.wait_closed(), 5)
    assert closed["by"] == "peer"


async def test_receive_credit_follows_the_behaviour(make_server: ServerFactory) -> None:
    """A behaviour that does not read holds the browser back to the window, as over plain QUIC; what the HTTP/3
    layer itself takes (control streams, headers, stream prefixes, capsules) never eats that credit."""
    window = 256 * 1024
    server = await make_server(
        "tests.wt_apps:Opener",
        [wt_listener(conn_flow_control_window=window, stream_recv_window_default=window)],
    )
    async with wt_connect(*address(server)) as client:
        session, _ = await client.session("/echo")
        conn = only_connection(server)
        stream = client.open(session)
        total = 4 * 1024 * 1024
        client.send(stream, b"hold" + b"x" * (total - 4), fin=True)
        await until(lambda: conn.stats()["recv_unconsumed"] > window // 2)
        await asyncio.sleep(0.3)
        assert conn.stats()["recv_unconsumed"] <= window
        sent = client._quic._streams[stream].sender._buffer_start
        assert sent < total // 2, "the client was held back"
        conn.behaviour.go.set()
        await until(
            lambda: client._quic._streams.get(stream) is None or client._quic._streams[stream].sender.is_finished, 20
        )
        await until(lambda: conn.stats()["recv_unconsumed"] == 0)
        quic = next(iter(server.listener("wt")._by_cid.values()))
        assert quic.quic.unconsumed == 0, "HTTP/3's own bytes were all credited"


@pytest.mark.skipif(
    shutil.which("gtlsclient") is None, reason="ngtcp2's client is not installed (apt-get install ngtcp2-client)"
)
async def test_ngtcp2_client_gets_the_page(make_server: ServerFactory, tmp_path: Any) -> None:
    """Another HTTP/3 stack (ngtcp2 with nghttp3) connects, gets the page at / and a 404 elsewhere."""
    server = await make_server("behaviours.echo:Echo", [wt_listener()])
    host, port = address(server)
    proc = await asyncio.create_subprocess_exec(
        "gtlsclient",
        "--exit-on-all-streams-close",
        "--download",
        str(tmp_path),
        "--quiet",
        host,
        str(port),
        f"https://{host}:{port}/",
        f"https://{host}:{port}/missing",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    assert b"mux WebTransport server" in (tmp_path / "index.html").read_bytes()
    assert (tmp_path / "missing").read_bytes() == b"not found\n"


def test_a_webtransport_listener_speaks_h3_only() -> None:
    from mux import config as cfg

    data = {"behaviour": "behaviours.echo:Echo", "listeners": [wt_listener(alpn=["echo"])]}
    with pytest.raises(cfg.ConfigError, match=r"listeners\[0\].*alpn must be \[h3\]"):
        cfg.parse(data, "<test>")
    data = {"behaviour": "behaviours.echo:Echo", "listeners": [wt_listener(datagrams=False)]}
    with pytest.raises(cfg.ConfigError, match="needs datagrams"):
        cfg.parse(data, "<test>")
