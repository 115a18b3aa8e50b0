"""Hot reload (mux/reload.py): SIGHUP to a real ``mux serve``, and ``mux ctl reload`` / in-process reloads."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mux import connect, preflight
from mux.ctl import request
from mux.server import Server
from tests import apps as tb
from tests.conftest import client_target

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, listeners: list[dict[str, Any]], behaviour: str = "Tagged", **extra: Any) -> None:
    data = {
        "behaviour": f"tests.reload_apps:{behaviour}",
        "listeners": listeners,
        "control": {"socket": str(path.parent / "ctl.sock")},
        **extra,
    }
    path.write_text(yaml.safe_dump(data))


def quic(name: str = "quic", alpn: str = "one", **extra: Any) -> dict[str, Any]:
    return {"name": name, "transport": "quic", "host": "127.0.0.1", "port": 0, "alpn": [alpn], **extra}


def sctp(name: str = "sctp", **extra: Any) -> dict[str, Any]:
    return {"name": name, "transport": "sctp", "host": "127.0.0.1", "port": 0, **extra}


async def ask(conn: Any, message: bytes) -> bytes:
    """Send one message on a new stream; the behaviour's answer."""
    client = conn.behaviour
    stream = conn.open_stream()
    await stream.send(message, fin=True)
    await asyncio.wait_for(client.fin_event(stream.id).wait(), 10)
    return bytes(client.data[stream.id])


async def dial(port: int, alpn: str) -> Any:
    options = {"alpn": [alpn], "verify": "none"}
    return await connect(tb.Client(), f"quic://127.0.0.1:{port}", options=options, timeout=5)


class Served:
    """``mux serve FILE`` as a subprocess; its log lines collected by a thread so the test's loop never blocks."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mux.cli", "serve", str(config)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    async def wait_for(self, pattern: str, start: int = 0, timeout: float = 15.0) -> re.Match[str]:
        for _ in range(int(timeout / 0.02)):
            for line in self.lines[start:]:
                found = re.search(pattern, line)
                if found:
                    return found
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            await asyncio.sleep(0.02)
        raise AssertionError(f"{pattern!r} not logged; the server said:\n{''.join(self.lines)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def served() -> Any:
    started: list[Served] = []

    def start(config: Path) -> Served:
        server = Served(config)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def test_sighup_new_connections_see_the_change_old_ones_do_not(served: Any, tmp_path: Path) -> None:
    config = tmp_path / "mux.yaml"
    write(config, [quic(alpn="one")], options={"tag": "v1"})
    server = served(config)
    port = int((await server.wait_for(r"serving quic on \('127\.0\.0\.1', (\d+)\)"))[1])
    old = await dial(port, "one")
    assert await ask(old, b"a") == b"v1:a"

    # new behaviour options and class, a new listener option (the ALPN), and a listener added
    write(config, [quic(alpn="two"), sctp()], behaviour="Shouting", options={"tag": "v2"})
    mark = len(server.lines)
    server.proc.send_signal(signal.SIGHUP)
    await server.wait_for(r"reload 1 of .*added \['sctp'\].*updated \['quic'\]", mark)
    new = await dial(port, "two")
    assert await ask(new, b"b") == b"V2:B"  # the new class with the new options
    assert await ask(old, b"c") == b"v1:c"  # the old connection keeps its behaviour and options
    with pytest.raises(Exception):  # noqa: B017  the old ALPN is no longer offered to newcomers
        await dial(port, "one")
    info = (await asyncio.to_thread(request, str(tmp_path / "ctl.sock"), "info"))["result"]
    assert info["reloads"] == 1
    sctp_port = info["listeners"]["sctp"]["port"]
    over_sctp = await connect(tb.Client(), f"sctp://127.0.0.1:{sctp_port}", timeout=5)
    assert await ask(over_sctp, b"d") == b"V2:D"

    # a bad file: one error line, no traceback, and the running config stays
    config.write_text(config.read_text().replace("behaviour:", "behavior:"))
    mark = len(server.lines)
    server.proc.send_signal(signal.SIGHUP)
    await server.wait_for(r"reload failed, keeping the running config", mark)
    await asyncio.sleep(0.2)
    later = "".join(server.lines[mark:])
    assert "Traceback" not in later
    assert [line for line in server.lines[mark:] if " error " in line] == [
        line for line in server.lines[mark:] if "reload failed" in line
    ]
    assert "behavior: unknown key" in later
    newest = await dial(port, "two")
    assert await ask(newest, b"e") == b"V2:E"
    assert server.proc.poll() is None
    for conn in (old, new, over_sctp, newest):
        conn.close()


# -- in process: the rest of what a reload can do -------------------------------------------------------------


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        await asyncio.wait_for(server.stop(), 10)


async def start(servers: list[Server], config: Path) -> Server:
    server = Server(preflight.load(config), source=str(config))
    await server.start()
    servers.append(server)
    return server


async def reload(server: Server) -> dict[str, Any]:
    """Through the control socket, as ``mux ctl PATH reload`` does."""
    assert server.control is not None
    return await asyncio.to_thread(request, server.control.path, "reload")


async def test_a_removed_listener_stops_admitting_and_closes_once_drained(
    servers: list[Server], tmp_path: Path
) -> None:
    config = tmp_path / "mux.yaml"
    write(config, [quic("a"), quic("b")], options={"tag": "t"})
    server = await start(servers, config)
    port_a = server.listener("a").address[1]
    port_b = server.listener("b").address[1]
    staying = await dial(port_a, "one")

    write(config, [quic("b")], options={"tag": "t"})
    answer = await reload(server)
    assert answer["ok"] and answer["result"]["removed"] == ["a"]
    with pytest.raises(Exception):  # noqa: B017  refused: the listener is gone for newcomers
        await dial(port_a, "one")
    assert await ask(staying, b"x") == b"t:x"  # its connection carries on meanwhile
    info = (await asyncio.to_thread(request, server.control.path, "info"))["result"]  # type: ignore[union-attr]
    assert info["listeners"]["a"]["state"] == "removed"
    assert [listener.name for listener in server.listeners] == ["a", "b"]
    staying.close()
    await staying.wait_closed()
    for _ in range(100):
        if [listener.name for listener in server.listeners] == ["b"]:
            break
        await asyncio.sleep(0.05)
    assert [listener.name for listener in server.listeners] == ["b"]  # closed once its last connection ended
    assert server.pool.closed_to == {}
    other = await dial(port_b, "one")
    assert await ask(other, b"y") == b"t:y"
    other.close()


async def test_what_a_reload_refuses_changes_nothing(servers: list[Server], tmp_path: Path) -> None:
    config = tmp_path / "mux.yaml"
    write(config, [quic("a")], options={"tag": "t"}, pool={"max_connections": 5})
    server = await start(servers, config)
    port = server.listener("a").address[1]

    def expect_refused(answer: dict[str, Any], says: str) -> None:
        assert not answer["ok"] and says in answer["error"], answer
        assert server.reloads == 0 and server.pool.options.max_connections == 5
        assert [listener.name for listener in server.listeners] == ["a"]

    # a check of mux/preflight.py: the certificate file is not there
    write(config, [quic("a", certfile=str(tmp_path / "none.pem"), keyfile=str(tmp_path / "none.key"))])
    expect_refused(await reload(server), "listeners[0].certfile: cannot read")
    # the same name on another port: a listener keeps its socket
    write(config, [{**quic("a"), "port": 1}], options={"tag": "t"}, pool={"max_connections": 6})
    expect_refused(await reload(server), "port of listener 'a' changed")
    # a new listener that cannot bind: the one already started by this reload is closed again
    taken = server.listener("a").address[1]
    write(config, [quic("a"), quic("b"), {**quic("c"), "port": taken}], pool={"max_connections": 6})
    expect_refused(await reload(server), "listener c (udp 127.0.0.1:")
    assert "address already in use" in (await reload(server))["error"]
    # and the server still runs the first config
    conn = await dial(port, "one")
    assert await ask(conn, b"z") == b"t:z"
    conn.close()


async def test_pool_limits_and_sctp_options_apply_to_newcomers(servers: list[Server], tmp_path: Path) -> None:
    config = tmp_path / "mux.yaml"
    write(config, [sctp(initmsg={"num_ostreams": 16, "max_instreams": 16})])
    server = await start(servers, config)
    url, options = client_target(server, "sctp")
    old = await connect(tb.Client(), url, options=options)
    write(config, [sctp(initmsg={"num_ostreams": 5, "max_instreams": 5})], pool={"max_connections": 2})
    answer = await reload(server)
    assert answer["ok"] and answer["result"]["updated"] == ["sctp"]
    assert server.pool.options.max_connections == 2
    new = await connect(tb.Client(), url, options=options)
    by_age = sorted(server.pool.connections, key=lambda c: c.id)
    streams = [c._tconn.assoc.status()["instrms"] for c in by_age]  # type: ignore[attr-defined]
    assert streams == [16, 5]  # what the server's INIT-ACK offered: old config for the old one, new for the new
    for conn in (old, new):
        conn.close()
