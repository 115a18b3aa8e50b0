"""The control socket: ``mux ctl``'s verbs on a running server, over a Unix socket.

The verbs follow ranch's: ``info``, ``connections`` (``procs``), ``suspend``/``resume`` (one listener or all),
``drain`` (stop admitting, let connections finish, stop), ``close`` (``remove_connection``, but the peer is told),
``set max_connections`` (``set_max_connections``), and ``reload`` (re-read the YAML file, as SIGHUP does).

:meth:`Control.handle` is the whole of the server side: a verb and its arguments in, a JSON-able dict out, with
no knowledge of sockets. A supervisor of several worker processes can send each worker the same verb and merge
the answers. The wire is one JSON object per line each way: ``{"verb": ..., "args": {...}}`` in,
``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "..."}`` out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mux.connlog import peer_text

if TYPE_CHECKING:
    from mux.server import Server

log = logging.getLogger("mux.control")

#: a request is one short line; anything longer is not a client of ours
MAX_REQUEST = 64 * 1024
#: a client that connects and sends nothing is dropped after this long
REQUEST_TIMEOUT_S = 10.0

VERBS = ("info", "connections", "suspend", "resume", "drain", "close", "set", "reload")


class ControlError(Exception):
    """A verb that cannot be carried out; ``str()`` goes back to the client."""


class Control:
    """The verbs on one server process."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, verb: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Carry out ``verb``; raises ControlError with a message for the client."""
        args = args or {}
        if verb == "info":
            return self.info()
        if verb == "connections":
            return self.connections()
        if verb in ("suspend", "resume"):
            return self.suspend_resume(verb, args.get("listener"))
        if verb == "drain":
            return self.drain()
        if verb == "close":
            return self.close(args.get("id"))
        if verb == "set":
            return self.set(args.get("key"), args.get("value"))
        if verb == "reload":
            from mux.reload import reload

            result = await reload(self.server)
            if not result["ok"]:
                raise ControlError(result["error"])
            return result
        raise ControlError(f"unknown verb {verb!r}; expected one of: {', '.join(VERBS)}")

    def info(self) -> dict[str, Any]:
        server = self.server
        info = server.pool.info()
        for listener in server.listeners:
            entry = info["listeners"].setdefault(listener.name, {})
            entry.setdefault("state", "running")
            entry["transport"] = listener.transport_name
            try:
                host, port = listener.address[:2]
                entry["address"] = peer_text((host, port))
                entry["port"] = port
            except (AssertionError, OSError):  # not started, or already closed
                entry["address"] = None
        for name in server.retiring:
            if name in info["listeners"]:
                info["listeners"][name]["state"] = "removed"
        info["pid"] = os.getpid()
        info["config"] = server.source
        info["reloads"] = server.reloads
        info["control"] = server.control.path if server.control is not None else None
        info["metrics"] = server.metrics.url if server.metrics is not None else None
        return info

    def connections(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        rows = []
        for conn in sorted(self.server.pool.connections, key=lambda c: c.id):
            try:
                stats = conn.stats()
            except Exception:  # a transport's figures must never break the listing
                stats = {}
            rows.append(
                {
                    "id": conn.id,
                    "listener": conn.listener,
                    "transport": conn.transport,
                    "peer": peer_text(conn.peer_address),
                    "state": conn.state,
                    "age_s": round(now - conn.started, 3),
                    "bytes_in": conn.bytes_in,
                    "bytes_out": conn.bytes_out,
                    "packets_in": stats.get("packets_received"),
                    "packets_out": stats.get("packets_sent"),
                    "retransmitted": stats.get("packets_retransmitted"),
                    "srtt_ms": stats.get("srtt_ms"),
                    "behaviour": type(conn.behaviour).__name__,
                }
            )
        return {"connections": rows}

    def _known_listener(self, name: Any) -> str:
        if not isinstance(name, str):
            raise ControlError(f"expected a listener name, got {name!r}")
        known = [listener.name for listener in self.server.listeners]
        if name not in known:
            raise ControlError(f"no listener {name!r}; listeners: {', '.join(known)}")
        if name in self.server.retiring:
            raise ControlError(f"listener {name!r} was removed by a reload and is draining")
        return name

    def suspend_resume(self, verb: str, listener: Any) -> dict[str, Any]:
        pool = self.server.pool
        name = None if listener is None else self._known_listener(listener)
        if pool.state in ("draining", "stopped"):
            raise ControlError(f"the server is {pool.state}")
        if verb == "suspend":
            pool.suspend(name)
        else:
            pool.resume(name)
        log.info("%s %s (control socket)", verb, f"listener {name}" if name else "all listeners")
        state = pool.closed_to.get(name, "running") if name else pool.state
        return {"listener": name, "state": state}

    def drain(self) -> dict[str, Any]:
        pool = self.server.pool
        if pool.state in ("draining", "stopped"):
            return {"state": pool.state, "connections": len(pool.connections)}
        log.info("drain (control socket): timeout %d ms", pool.options.shutdown_timeout_ms)
        task = asyncio.get_running_loop().create_task(self.server.drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        pool.state = "draining"  # at once, so the answer and the next admission see it
        return {"state": "draining", "connections": len(pool.connections)}

    def close(self, conn_id: Any) -> dict[str, Any]:
        if isinstance(conn_id, bool) or not isinstance(conn_id, int):
            raise ControlError(f"expected a connection id (a number), got {conn_id!r}")
        for conn in self.server.pool.connections:
            if conn.id == conn_id:
                log.info("connection %d: closed by the operator (control socket)", conn_id)
                conn.close(0, "closed by the operator")
                return {"id": conn_id, "state": conn.state}
        raise ControlError(f"no connection {conn_id}")

    def set(self, key: Any, value: Any) -> dict[str, Any]:
        if key != "max_connections":
            raise ControlError(f"cannot set {key!r}; settable: max_connections")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ControlError(f"max_connections: expected a whole number >= 1, got {value!r}")
        options = self.server.pool.options
        old, options.max_connections = options.max_connections, value
        log.info("max_connections %d -> %d (control socket)", old, value)
        return {"max_connections": value, "was": old}


class ControlServer:
    """The Unix socket serving :class:`Control` to ``mux ctl``, one request per line."""

    def __init__(self, control: Control, path: str) -> None:
        self.control = control
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Bind the socket (0600); a stale socket left by a dead server is replaced, a live one is an error."""
        take_over_stale(self.path)
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, self.path, limit=MAX_REQUEST)
        finally:
            os.umask(old_umask)
        log.info("control socket on %s", self.path)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._server = None
        for writer in list(self._clients):  # its reader sees the end and the client's task finishes by itself
            writer.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
                except (TimeoutError, ValueError, ConnectionError):  # idle, a line over the limit, gone
                    return
                if not line:
                    return
                answer = await self._answer(line)
                writer.write(json.dumps(answer, default=str).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "expected one JSON object per line"}
        if not isinstance(request, dict) or not isinstance(request.get("verb"), str):
            return {"ok": False, "error": 'expected {"verb": ..., "args": {...}}'}
        args = request.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "expected args to be an object"}
        try:
            return {"ok": True, "result": await self.control.handle(request["verb"], args)}
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug of ours: say so to the operator, keep serving
            log.exception("control verb %s failed", request["verb"])
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}


def take_over_stale(path: str) -> None:
    """Remove a socket file no process listens on; raise OSError(EADDRINUSE) when a server still answers there."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(17, "a file that is not a socket is there", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        Path(path).unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise OSError(98, "another server answers on this control socket", path)
