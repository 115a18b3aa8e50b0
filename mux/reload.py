"""Hot reload: read the server's YAML file again (SIGHUP, ``mux ctl reload``) and apply it to this process.

New connections get the new behaviour class and options, pool limits and listener options; a connection that
exists keeps what it was made with (its behaviour instance and its transport's configuration object).
Listeners are matched by name: a new name starts a listener, a name gone stops admitting on it and closes it
once its connections have drained (or after ``shutdown_timeout_ms``, closing the rest). A listener keeps its
socket, so changing its ``transport``, ``host``, ``port`` or ``sctp_port`` under the same name is refused:
give it a new name (the old one drains) or restart.

A file that fails mux/preflight.py's checks, or a listener that cannot start, changes nothing: one error line
is logged (no traceback) and the running config stays. Each worker process reloads on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mux import config as cfg
from mux import preflight, registry, steering
from mux.pool import PoolOptions
from mux.transport import Listener
from mux.workers import per_worker

if TYPE_CHECKING:
    from mux.server import Server

log = logging.getLogger("mux.reload")

#: what a listener's socket is bound to: these cannot change under the same name
REBIND_KEYS = ("transport", "host", "port", "sctp_port")

_locks: dict[int, asyncio.Lock] = {}
_background: set[asyncio.Task[Any]] = set()


class ReloadError(Exception):
    """The new file cannot be applied; ``str()`` is the one line logged and returned."""


def reload_in_background(server: Server) -> None:
    """SIGHUP: reload on the event loop (the result is logged)."""
    task = asyncio.get_running_loop().create_task(reload(server))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def reload(server: Server) -> dict[str, Any]:
    """Apply the server's file again: ``{"ok": True, "added": [...], ...}`` or ``{"ok": False, "error": ...}``."""
    lock = _locks.setdefault(id(server), asyncio.Lock())
    async with lock:  # two SIGHUPs in a row apply one after the other
        if server.pool.state in ("draining", "stopped"):
            return _failed(f"the server is {server.pool.state}")
        if server.source is None:
            return _failed("the server was not started from a file")
        try:
            new = preflight.load(server.source)
            worker = steering.current()
            if worker is not None:  # a worker of ``workers: N``: its share of the pool, its own control socket
                new = per_worker(new, worker.count, worker.index)
            result = await _apply(server, new)
        except (cfg.ConfigError, ReloadError) as exc:
            return _failed(str(exc))
    server.reloads += 1
    log.info(
        "reload %d of %s: behaviour %s; listeners added %s, removed %s, updated %s",
        server.reloads,
        server.source,
        new.behaviour,
        result["added"] or "none",
        result["removed"] or "none",
        result["updated"] or "none",
    )
    return result


def _failed(message: str) -> dict[str, Any]:
    log.error("reload failed, keeping the running config: %s", message)
    return {"ok": False, "error": message}


def _named(options: Any) -> Any:
    if options.name is None:
        options = options.model_copy(update={"name": cfg.listener_name(options)})
    return options


async def _apply(server: Server, new: Any) -> dict[str, Any]:
    """Check everything that can fail, start new listeners, then change what runs (that part cannot fail)."""
    current = {listener.name: listener for listener in server.listeners if listener.name not in server.retiring}
    wanted = [_named(options) for options in new.listeners]
    names = [options.name for options in wanted]
    commits: list[Callable[[], None]] = []
    updated: list[str] = []
    to_start: list[Any] = []
    if steering.current() is not None and sorted(names) != sorted(current):
        raise ReloadError(
            f"{server.source}: listeners: the set of listeners changed, but with workers the supervisor holds "
            "their sockets; expected the same listener names (options may change), or restart to add or remove one"
        )
    for i, options in enumerate(wanted):
        listener = current.get(options.name)
        if listener is None:
            if options.name in server.retiring:
                raise ReloadError(
                    f"{server.source}: listeners[{i}].name: {options.name!r} was removed by the last reload "
                    "and is still draining; expected another name"
                )
            to_start.append(options)
            continue
        old = _options_of(listener)
        if old is None or old == options:
            continue
        moved = [key for key in REBIND_KEYS if getattr(old, key, None) != getattr(options, key, None)]
        if moved:
            raise ReloadError(
                f"{server.source}: listeners[{i}]: {', '.join(moved)} of listener {options.name!r} changed; "
                "a running listener keeps its socket: give it a new name (the old one drains) or restart"
            )
        reconfigure = getattr(listener, "reconfigure", None)
        if reconfigure is None:
            raise ReloadError(f"{server.source}: listeners[{i}]: transport {options.transport} cannot reload options")
        try:
            commits.append(reconfigure(options))
        except Exception as exc:  # a certificate gone since the check, a bad option combination
            raise ReloadError(f"{server.source}: listeners[{i}]: {preflight.describe_bind_error(exc)}") from exc
        updated.append(options.name)
    try:
        behaviour = cfg.import_behaviour(new.behaviour)
    except cfg.BehaviourError as exc:
        raise ReloadError(f"{server.source}: behaviour: {exc}") from None
    started = await _start(server, to_start)
    # from here on nothing fails: the new config takes effect for whatever comes next
    pool = server.pool
    pool.behaviour = behaviour
    pool.behaviour_opts = dict(new.options)
    pool.options = PoolOptions(**new.pool.model_dump())
    for commit in commits:
        commit()
    from mux.server import _counters_of

    for listener in started:
        server.listeners.append(listener)
        pool.add_counters(listener.name, _counters_of(listener))
        log.info("serving %s on %s", listener.name, listener.address[:2])
    removed = [name for name in current if name not in names]
    for name in removed:
        _retire(server, current[name])
    for part in ("control", "metrics"):
        if getattr(new, part) != getattr(server.config, part):
            log.warning("reload: %s changes take effect at the next start", part)
    server.config = new
    return {
        "ok": True,
        "behaviour": new.behaviour,
        "added": [listener.name for listener in started],
        "removed": removed,
        "updated": updated,
    }


def _options_of(listener: Listener) -> Any:
    return getattr(listener, "options", None)


async def _start(server: Server, wanted: list[Any]) -> list[Listener]:
    """Start the new listeners, or none: a failure closes those already started and raises ReloadError."""
    started: list[Listener] = []
    try:
        for options in wanted:
            listener = registry.get(options.transport).listener(options, server.pool)
            where = f"listener {options.name} ({preflight.udp_address(options.host, options.port)})"
            try:
                await listener.start()
            except Exception as exc:
                await listener.close()
                raise ReloadError(f"{server.source}: {where}: {preflight.describe_bind_error(exc)}") from exc
            started.append(listener)
    except BaseException:
        for listener in started:
            await listener.close()
        raise
    return started


def _retire(server: Server, listener: Listener) -> None:
    """Stop admitting on a removed listener, and close it once its connections are gone."""
    server.pool.closed_to[listener.name] = "removed"
    server.retiring.add(listener.name)
    log.info("listener %s removed: draining its connections", listener.name)
    task = asyncio.get_running_loop().create_task(_drain_listener(server, listener))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _drain_listener(server: Server, listener: Listener) -> None:
    pool = server.pool
    timeout = pool.options.shutdown_timeout_ms / 1000.0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    forced = False
    try:
        while pool.listener_connections(listener.name):
            if loop.time() >= deadline:
                if forced:
                    break
                forced = True
                rest = pool.listener_connections(listener.name)
                log.info("listener %s: closing %d connection(s) still open", listener.name, len(rest))
                for conn in rest:
                    conn.close(0, "listener removed")
                deadline = loop.time() + max(1.0, timeout)
            await asyncio.sleep(0.05)
    finally:
        await listener.close()
        if listener in server.listeners:
            server.listeners.remove(listener)
        server.retiring.discard(listener.name)
        if pool.closed_to.get(listener.name) == "removed":
            del pool.closed_to[listener.name]
        log.info("listener %s closed", listener.name)
