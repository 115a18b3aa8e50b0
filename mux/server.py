"""A server: one acceptor pool, the listeners of a config, and graceful shutdown on signals."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from typing import Any

from mux import registry
from mux.behaviour import ConnectionBehaviour
from mux.config import import_behaviour, listener_name
from mux.control import Control, ControlServer
from mux.metrics import MetricsServer
from mux.pool import AcceptorPool, PoolOptions
from mux.preflight import describe_bind_error, host_port, listener_address
from mux.reload import reload_in_background
from mux.transport import Listener

log = logging.getLogger("mux.server")


class StartError(Exception):
    """A listener could not start; ``str()`` names it, its address and why, in one line."""


class Server:
    def __init__(
        self, config: Any, source: str | None = None, *, behaviour: type[ConnectionBehaviour] | None = None
    ) -> None:
        """``behaviour``: the class itself, when code passes one (``mux.serve``), else ``config.behaviour``'s."""
        self.config = config
        #: the YAML file a reload (SIGHUP, ``mux ctl reload``) reads again
        self.source = source
        self.reloads = 0
        #: listeners a reload removed, still open while their connections drain
        self.retiring: set[str] = set()
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        behaviour = behaviour or import_behaviour(config.behaviour)
        self.pool = AcceptorPool(behaviour, dict(config.options), PoolOptions(**config.pool.model_dump()))
        self.listeners: list[Listener] = []
        self._where: list[str] = []
        for options in config.listeners:
            if options.name is None:
                options = options.model_copy(update={"name": listener_name(options)})
            plugin = registry.get(options.transport)
            self.listeners.append(plugin.listener(options, self.pool))
            self._where.append(f"listener {options.name} ({listener_address(options)})")
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Start every listener, or none: a failure closes those already started and raises StartError."""
        try:
            for listener, where in zip(self.listeners, self._where, strict=True):
                try:
                    await listener.start()
                except Exception as exc:  # a bind error, a file gone since the check: one line, no traceback
                    raise StartError(f"{where}: {describe_bind_error(exc)}") from exc
                self.pool.add_counters(listener.name, _counters_of(listener))
            await self._start_ops()
        except BaseException:
            await self._close_listeners()
            raise

    async def _start_ops(self) -> None:
        """The control socket and the metrics endpoint, when the config asks for them."""
        if self.config.control is not None:
            path = self.config.control.socket
            control = ControlServer(Control(self), path)
            try:
                await control.start()
            except OSError as exc:
                raise StartError(f"control socket {path}: {exc.strerror or exc}") from exc
            self.control = control
        if self.config.metrics is not None:
            opts = self.config.metrics
            metrics = MetricsServer(self, opts.host, opts.port)
            try:
                await metrics.start()
            except OSError as exc:
                raise StartError(
                    f"metrics (tcp {host_port(opts.host, opts.port)}): {describe_bind_error(exc)}"
                ) from exc
            self.metrics = metrics

    def listener(self, name: str) -> Listener:
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(name)

    async def drain(self, timeout_ms: int | None = None) -> None:
        """Stop admitting, wait for connections to finish (up to the timeout), close the rest."""
        await self.pool.drain(timeout_ms)
        await self._close_listeners()
        self._stopped.set()

    async def stop(self) -> None:
        await self.pool.stop()
        await self._close_listeners()
        self._stopped.set()

    async def _close_listeners(self) -> None:
        for listener in self.listeners:
            await listener.close()
        for ops in (self.control, self.metrics):
            if ops is not None:
                await ops.close()

    def log_info(self) -> None:
        """Log the pool's counts (SIGUSR1), one line per listener and the total."""
        info = self.pool.info()
        for name, counts in info["listeners"].items():
            log.info("pool %s: %s", name, counts)
        log.info("pool total (%s): %s", info["state"], info["total"])

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT, then drain gracefully (a second signal stops at once)."""
        loop = asyncio.get_running_loop()
        draining: list[asyncio.Task[None]] = []

        def on_signal(signum: int) -> None:
            if not draining and self.pool.state not in ("draining", "stopped"):  # ``mux ctl drain`` may have begun
                log.info(
                    "%s: draining (timeout %d ms)", signal.Signals(signum).name, self.pool.options.shutdown_timeout_ms
                )
                draining.append(loop.create_task(self.drain()))
            else:
                log.info("%s again: stopping now", signal.Signals(signum).name)
                draining.append(loop.create_task(self.stop()))

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        loop.add_signal_handler(signal.SIGUSR1, self.log_info)
        loop.add_signal_handler(signal.SIGHUP, lambda: reload_in_background(self))
        try:
            await self.start()
            for listener in self.listeners:
                log.info("serving %s on %s", listener.name, listener.address[:2])
            # what start-up made (modules, config, certificates) lives as long as the server: out of the collector's
            # way, so its passes over what connections allocate do not walk it again each time
            gc.collect()
            gc.freeze()
            await self._stopped.wait()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        log.info("stopped: %s", self.pool.info()["total"])


def _counters_of(listener: Listener) -> Callable[[], dict[str, int]]:
    """A listener's counters and its socket driver's, for ``pool.info()``."""

    def counters() -> dict[str, int]:
        merged = dict(getattr(listener, "counters", None) or {})
        driver = getattr(listener, "driver", None)
        if driver is not None:
            merged.update(driver.counters)
        return merged

    return counters
