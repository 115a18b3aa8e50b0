"""The far end of one benchmark run: a server running ``mux.behaviours.bench:BenchServer`` behind an impairment proxy.

``LocalPeer`` runs them on the caller's event loop; ``mux.bench.worker`` runs a LocalPeer in a process of its own.
Both take a JSON-able ``PeerSpec`` and answer the same things, so the runner cannot tell them apart.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any, Protocol, TypedDict

from mux import config as cfg
from mux.impair import Impairment, ImpairProxy
from mux.server import Server

log = logging.getLogger("mux.bench")

SERVER_BEHAVIOUR = "mux.behaviours.bench:BenchServer"
STOP_TIMEOUT = 5.0
#: how long ``stop`` lets the proxy deliver what it holds (e.g. SCTP's SHUTDOWN-COMPLETE behind a delay)
SETTLE_TIMEOUT = 1.0
#: and then how long connections get to end on their own before they are aborted
LINGER = 0.1


def quiet_gc() -> None:
    """Collect now and freeze what survives, before a measurement; for the bench's own processes only.

    Otherwise a full collection over everything the process holds (imports, config, earlier runs) lands inside
    a run now and then: 50-100 ms in the bench and worker processes, more than a whole run's round trips, and on
    whichever transport is unlucky. What the transports allocate during the run is still collected as usual.
    """
    gc.collect()
    gc.freeze()


class PeerSpec(TypedDict):
    transport: str
    #: listener options, as in a server YAML file (port 0)
    listener: dict[str, Any]
    #: Impairment fields per direction
    up: dict[str, Any]
    down: dict[str, Any]
    seed: int


class Peer(Protocol):
    """Start the far end for one run, stop it afterwards; one run at a time."""

    async def start(self, spec: PeerSpec) -> tuple[str, int]:
        """Start server and proxy; the proxy's address, where the client connects."""
        ...

    async def stop(self) -> dict[str, Any]:
        """Stop both; the proxy's counters (``proxy``) and the pool's totals (``server``)."""
        ...

    async def close(self) -> None: ...


class LocalPeer:
    """Server and proxy on the running event loop."""

    def __init__(self) -> None:
        self._server: Server | None = None
        self._proxy: ImpairProxy | None = None

    async def start(self, spec: PeerSpec) -> tuple[str, int]:
        if self._server is not None:
            await self.stop()
        data = {
            "behaviour": SERVER_BEHAVIOUR,
            "listeners": [spec["listener"]],
            "pool": {"handshake_timeout_ms": 10_000, "shutdown_timeout_ms": 500},
        }
        server = Server(cfg.parse(data, f"<bench {spec['transport']} server>"))
        await server.start()
        self._server = server
        upstream = server.listener(str(spec["listener"]["name"])).address[:2]
        proxy = ImpairProxy(
            (str(upstream[0]), 0),
            (str(upstream[0]), int(upstream[1])),
            up=Impairment(**spec["up"]),
            down=Impairment(**spec["down"]),
            seed=spec["seed"],
            idle_timeout=None,
            max_clients=65536,
        )
        try:
            await proxy.start()
        except BaseException:
            await self.stop()
            raise
        self._proxy = proxy
        host, port = proxy.address
        return str(host), int(port)

    async def stop(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        await self._settle()
        proxy, self._proxy = self._proxy, None
        server, self._server = self._server, None
        if proxy is not None:
            result["proxy"] = proxy.stats().as_dict()
            proxy.close()
        if server is not None:
            result["server"] = server.pool.info()["total"]
            # a graceful close whose last packet was lost (e.g. SCTP's SHUTDOWN-COMPLETE, the client already gone)
            # would make pool.stop wait its fixed 2 s: abort what is left (the pool has no abort of its own)
            for conn in list(server.pool._connections):
                if conn.state != "closed":
                    conn._tconn.abort("bench run over")
            try:
                await asyncio.wait_for(server.stop(), STOP_TIMEOUT)
            except TimeoutError:
                log.error("bench server did not stop within %.0f s", STOP_TIMEOUT)
                result["server_stop"] = "timeout"
        return result

    async def _settle(self) -> None:
        """Wait until the proxy holds nothing and the server has no connection left, or SETTLE_TIMEOUT."""
        proxy, server = self._proxy, self._server
        if proxy is None or server is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT
        linger_until: float | None = None
        while loop.time() < deadline:
            held = proxy.stats()
            counts = server.pool.info()["total"]
            if not (held.held_up or held.held_down):
                if not (counts["active"] or counts["handshaking"]):
                    return
                if linger_until is None:
                    linger_until = loop.time() + LINGER
                elif loop.time() >= linger_until:
                    return
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        await self.stop()
