"""``mux ctl``'s verbs, each through a real Unix socket to a server on real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mux import ConnectionClosed, connect
from mux import config as cfg
from mux.ctl import request
from mux.server import Server, StartError
from tests import apps as tb
from tests.conftest import client_target, listener

ROOT = Path(__file__).resolve().parent.parent

Ctl = Callable[..., Awaitable[dict[str, Any]]]


def server_config(tmp_path: Path, listeners: list[dict[str, Any]], **extra: Any) -> Any:
    data = {
        "behaviour": "behaviours.echo:Echo",
        "listeners": listeners,
        "control": {"socket": str(tmp_path / "ctl.sock")},
        **extra,
    }
    return cfg.parse(data, "<test>")


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        await asyncio.wait_for(server.stop(), 10)


async def start(servers: list[Server], config: Any) -> Server:
    server = Server(config)
    await server.start()
    servers.append(server)
    return server


def ctl_of(server: Server) -> Ctl:
    """Ask the server over its socket, from a thread: the blocking client must not stall the server's loop."""
    assert server.control is not None
    path = server.control.path

    async def ask(verb: str, **args: Any) -> dict[str, Any]:
        return await asyncio.to_thread(request, path, verb, args)

    return ask


async def mux_ctl(*argv: str) -> tuple[int, str, str]:
    """The real command line, as a subprocess."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mux.cli",
        "ctl",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_info_lists_listeners_with_their_addresses(servers: list[Server], tmp_path: Path) -> None:
    server = await start(servers, server_config(tmp_path, [listener("quic"), listener("sctp")]))
    answer = await ctl_of(server)("info")
    assert answer["ok"]
    info = answer["result"]
    assert info["pid"] == os.getpid() and info["state"] == "running"
    for name in ("quic", "sctp"):
        entry = info["listeners"][name]
        assert entry["transport"] == name and entry["state"] == "running"
        assert entry["port"] == server.listener(name).address[1] and entry["port"] != 0
    mode = os.stat(tmp_path / "ctl.sock").st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600  # it can close connections: the owner's only

    path = str(tmp_path / "ctl.sock")
    code, out, err = await mux_ctl(path, "info")
    assert code == 0, err
    header, quic_row = out.splitlines()[1:3]
    assert header.split()[:4] == ["LISTENER", "TRANSPORT", "ADDRESS", "STATE"]
    assert quic_row.split()[:4] == ["quic", "quic", f"127.0.0.1:{info['listeners']['quic']['port']}", "running"]
    code, out, err = await mux_ctl(path, "info", "--json")
    assert code == 0 and json.loads(out)["listeners"]["sctp"]["port"] == info["listeners"]["sctp"]["port"]


async def test_connections_shows_each_connection_by_its_id(servers: list[Server], tmp_path: Path) -> None:
    server = await start(servers, server_config(tmp_path, [listener("quic"), listener("sctp")]))
    clients = {}
    for name in ("quic", "sctp"):
        url, options = client_target(server, name)
        client = tb.Client()
        conn = await connect(client, url, options=options)
        stream = conn.open_stream()
        await stream.send(b"12345", fin=True)
        await asyncio.wait_for(client.fin_event(stream.id).wait(), 5)
        clients[name] = conn
    rows = (await ctl_of(server)("connections"))["result"]["connections"]
    by_listener = {row["listener"]: row for row in rows}
    ids = {conn.listener: conn.id for conn in server.pool.connections}
    assert set(by_listener) == {"quic", "sctp"}
    for name, conn in clients.items():
        row = by_listener[name]
        assert row["id"] == ids[name] and row["transport"] == name and row["state"] == "connected"
        assert row["peer"] == f"127.0.0.1:{conn.local_address[1]}"
        assert row["bytes_in"] == row["bytes_out"] == 5 and row["packets_in"] > 0 and row["packets_out"] > 0

    code, out, err = await mux_ctl(str(tmp_path / "ctl.sock"), "connections")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "LISTENER", "TRANSPORT", "PEER"]
    assert sorted(int(line.split()[0]) for line in lines[1:-1]) == sorted(ids.values())
    assert lines[-1] == "2 connection(s)"
    for conn in clients.values():
        conn.close()


async def test_suspend_and_resume_one_listener_or_all(servers: list[Server], tmp_path: Path) -> None:
    server = await start(servers, server_config(tmp_path, [listener("quic", name="a"), listener("quic", name="b")]))
    ctl = ctl_of(server)
    url_a, options = client_target(server, "a")
    url_b, _ = client_target(server, "b")
    before = await connect(tb.Client(), url_a, options=options)

    assert (await ctl("suspend", listener="a"))["result"] == {"listener": "a", "state": "suspended"}
    with pytest.raises(ConnectionClosed):
        await connect(tb.Client(), url_a, options=options, timeout=5)
    on_b = await connect(tb.Client(), url_b, options=options)  # the other listener still admits
    client = before.behaviour
    stream = before.open_stream()  # and a connection made before the suspend carries on
    await stream.send(b"still here", fin=True)
    await asyncio.wait_for(client.fin_event(stream.id).wait(), 5)  # type: ignore[attr-defined]
    info = (await ctl("info"))["result"]
    assert info["listeners"]["a"]["state"] == "suspended" and info["listeners"]["a"]["refused"] == 1
    assert info["listeners"]["b"]["state"] == "running"

    assert (await ctl("resume", listener="a"))["result"]["state"] == "running"
    again = await connect(tb.Client(), url_a, options=options)

    assert (await ctl("suspend"))["result"] == {"listener": None, "state": "suspended"}
    with pytest.raises(ConnectionClosed):
        await connect(tb.Client(), url_b, options=options, timeout=5)
    assert (await ctl("resume"))["result"]["state"] == "running"
    last = await connect(tb.Client(), url_b, options=options)

    unknown = await ctl("suspend", listener="nope")
    assert not unknown["ok"] and "no listener 'nope'" in unknown["error"]
    code, _, err = await mux_ctl(str(tmp_path / "ctl.sock"), "suspend", "nope")
    assert code == 1 and "no listener 'nope'; listeners: a, b" in err
    for conn in (before, on_b, again, last):
        conn.close()


async def test_close_one_connection_by_id(servers: list[Server], tmp_path: Path) -> None:
    server = await start(servers, server_config(tmp_path, [listener("quic")]))
    url, options = client_target(server, "quic")
    victim = await connect(tb.Client(), url, options=options)
    bystander = await connect(tb.Client(), url, options=options)
    await asyncio.sleep(0.05)
    rows = (await ctl_of(server)("connections"))["result"]["connections"]
    victim_id = next(r["id"] for r in rows if r["peer"].endswith(f":{victim.local_address[1]}"))

    code, out, err = await mux_ctl(str(tmp_path / "ctl.sock"), "close", str(victim_id))
    assert code == 0, err
    assert out.startswith(f"connection {victim_id}: closing")
    props = await asyncio.wait_for(victim.wait_closed(), 5)
    assert props["error_code"] == 0 and props["reason"] == "closed by the operator"
    assert bystander.state == "connected"
    code, _, err = await mux_ctl(str(tmp_path / "ctl.sock"), "close", str(victim_id))
    assert code == 1 and f"no connection {victim_id}" in err
    code, _, err = await mux_ctl(str(tmp_path / "ctl.sock"), "close", "first")
    assert code == 2 and "expected a connection id" in err
    bystander.close()


async def test_set_max_connections_takes_effect_at_once(servers: list[Server], tmp_path: Path) -> None:
    server = await start(servers, server_config(tmp_path, [listener("quic")]))
    ctl = ctl_of(server)
    url, options = client_target(server, "quic")
    first = await connect(tb.Client(), url, options=options)
    code, out, err = await mux_ctl(str(tmp_path / "ctl.sock"), "set", "max_connections", "1")
    assert code == 0 and out.strip() == "max_connections 1 (was 10000)", err
    with pytest.raises(ConnectionClosed):
        await connect(tb.Client(), url, options=options, timeout=5)
    info = (await ctl("info"))["result"]
    assert info["max_connections"] == 1 and info["total"]["errors"]["refused_max_connections"] == 1
    assert (await ctl("set", key="max_connections", value=2))["ok"]
    second = await connect(tb.Client(), url, options=options)
    bad = await ctl("set", key="max_connections", value=0)
    assert not bad["ok"] and "expected a whole number >= 1" in bad["error"]
    bad = await ctl("set", key="num_acceptors", value=5)
    assert not bad["ok"] and "settable: max_connections" in bad["error"]
    for conn in (first, second):
        conn.close()


async def test_drain_refuses_newcomers_waits_for_connections_then_stops(
    servers: list[Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start(servers, server_config(tmp_path, [listener("quic")], pool={"shutdown_timeout_ms": 10_000}))
    url, options = client_target(server, "quic")
    open_one = await connect(tb.Client(), url, options=options)
    _, idle_client = await asyncio.open_unix_connection(str(tmp_path / "ctl.sock"))  # connected, asking nothing
    code, out, err = await mux_ctl(str(tmp_path / "ctl.sock"), "drain")
    assert code == 0 and out.strip() == "draining: 1 connection(s) open", err
    with pytest.raises(ConnectionClosed):
        await connect(tb.Client(), url, options=options, timeout=5)
    assert not server._stopped.is_set()  # it waits for the open connection to finish by itself
    assert open_one.state == "connected"
    open_one.close()
    await asyncio.wait_for(server.wait_stopped(), 5)
    assert not (tmp_path / "ctl.sock").exists()  # the socket goes with the server
    await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # an idle ctl client ends quietly
    idle_client.close()


async def test_bad_requests_get_one_line_errors(servers: list[Server], tmp_path: Path) -> None:
    server = await start(servers, server_config(tmp_path, [listener("quic")]))
    path = str(tmp_path / "ctl.sock")
    assert not (await ctl_of(server)("frobnicate"))["ok"]

    def raw(line: bytes) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(line)
            answer: dict[str, Any] = json.loads(sock.makefile("rb").readline())
            return answer

    assert await asyncio.to_thread(raw, b"not json\n") == {"ok": False, "error": "expected one JSON object per line"}
    assert not (await asyncio.to_thread(raw, b'{"verb": "close", "args": {"id": "7"}}\n'))["ok"]
    code, _, err = await mux_ctl(path, "set", "max_connections")
    assert code == 2 and "usage: mux ctl PATH set max_connections N" in err
    code, _, err = await mux_ctl(str(tmp_path / "absent.sock"), "info")
    assert code == 2 and "absent.sock" in err


async def test_a_stale_socket_is_replaced_and_a_live_one_is_not(servers: list[Server], tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening: what a killed server leaves behind
    stale.close()
    server = await start(servers, server_config(tmp_path, [listener("quic")]))
    assert (await ctl_of(server)("info"))["ok"]
    second = Server(server_config(tmp_path, [listener("quic")]))
    with pytest.raises(StartError, match="another server answers on this control socket"):
        await second.start()
    assert (await ctl_of(server)("info"))["ok"]  # the first server still has its socket


def test_check_reports_a_control_socket_path_that_cannot_work(tmp_path: Path) -> None:
    from mux import preflight

    problems = preflight.Problems()
    preflight.check_control_socket(str(tmp_path / "missing" / "ctl.sock"), problems)
    preflight.check_control_socket(str(tmp_path / ("x" * 120)), problems)
    (tmp_path / "file").write_text("")
    preflight.check_control_socket(str(tmp_path / "file"), problems)
    assert [key for key, _ in problems.items] == ["control.socket"] * 3
    assert "is not one" in problems.items[0][1] and "at most 107 bytes" in problems.items[1][1]
    assert "is a file already there" in problems.items[2][1]


async def test_sigterm_after_ctl_drain_stops_at_once(tmp_path: Path) -> None:
    """A drain begun over the socket counts as the first signal: SIGTERM then stops without waiting."""
    from tests.test_reload import Served

    config = tmp_path / "mux.yaml"
    config.write_text(
        "behaviour: behaviours.echo:Echo\n"
        "pool: {shutdown_timeout_ms: 60000}\n"
        "listeners: [{name: q, transport: quic, host: 127.0.0.1, port: 0, alpn: [echo]}]\n"
        f"control: {{socket: {tmp_path / 'ctl.sock'}}}\n"
    )
    served = Served(config)
    try:
        port = int((await served.wait_for(r"serving q on \('127\.0\.0\.1', (\d+)\)"))[1])
        conn = await connect(tb.Client(), f"quic://127.0.0.1:{port}", options={"alpn": ["echo"], "verify": "none"})
        code, _, err = await mux_ctl(str(tmp_path / "ctl.sock"), "drain")
        assert code == 0, err
        served.proc.send_signal(signal.SIGTERM)
        await served.wait_for("SIGTERM again: stopping now")
        await asyncio.wait_for(conn.wait_closed(), 10)  # closed by the stop, not after the 60 s drain
        assert await asyncio.to_thread(served.proc.wait, 10) == 0
    finally:
        served.stop()
