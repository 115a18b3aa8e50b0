"""Shared fixtures: in-process servers on real loopback sockets, parametrised by transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from mux import config as cfg
from mux import registry
from mux.server import Server

#: every transport the behaviour contract runs over; SCTP joins by registering its plugin
TRANSPORTS = [name for name in ("quic", "sctp") if name in registry.plugins()]


def listener(transport: str, name: str | None = None, **extra: Any) -> dict[str, Any]:
    """A listener on an ephemeral loopback port."""
    base: dict[str, Any] = {"transport": transport, "host": "127.0.0.1", "port": 0, "name": name or transport}
    if transport == "quic":
        base["alpn"] = ["test"]
    base.update(extra)
    return base


def client_target(server: Server, name: str) -> tuple[str, dict[str, Any]]:
    """URL and client options that reach listener ``name`` of ``server``."""
    lst = server.listener(name)
    host, port = lst.address[:2]
    if lst.transport_name == "quic":
        return f"quic://{host}:{port}", {"alpn": ["test"], "verify": "none"}
    return f"{lst.transport_name}://{host}:{port}", {}


ServerFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    servers: list[Server] = []

    async def factory(
        behaviour: str,
        listeners: list[dict[str, Any]],
        pool: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Server:
        data = {"behaviour": behaviour, "options": options or {}, "listeners": listeners, "pool": pool or {}}
        server = Server(cfg.parse(data, "<test>"))
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await asyncio.wait_for(server.stop(), 10)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)
