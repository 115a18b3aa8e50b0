"""Where transports are found: built-ins, plus any package exposing a ``mux.transports`` entry point."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from mux.transport import Listener, SinkFactory, TransportConnection

log = logging.getLogger("mux.registry")

BUILTIN = {
    "quic": "mux.quic.plugin:PLUGIN",
    "sctp": "mux.sctp.plugin:PLUGIN",
    "webrtc": "mux.webrtc.plugin:PLUGIN",
}


@dataclass(frozen=True)
class TransportPlugin:
    name: str
    #: listener options; must have ``transport: Literal[name]`` for the config's tagged union
    listener_model: type[BaseModel]
    #: client options (``connect(..., options=...)`` and ``mux client``)
    client_model: type[BaseModel]
    listener: Callable[[Any, Any], Listener]
    connect: Callable[
        [Any, str, int, SinkFactory],
        Awaitable[tuple[TransportConnection, Callable[[], Awaitable[None]]]],
    ]
    default_port: int


_plugins: dict[str, TransportPlugin] | None = None


def _load(spec: str) -> TransportPlugin:
    module, _, attr = spec.partition(":")
    plugin = getattr(importlib.import_module(module), attr)
    assert isinstance(plugin, TransportPlugin), spec
    return plugin


def plugins() -> dict[str, TransportPlugin]:
    global _plugins
    if _plugins is None:
        found: dict[str, TransportPlugin] = {}
        for name, spec in BUILTIN.items():
            try:
                found[name] = _load(spec)
            except ModuleNotFoundError as exc:
                if exc.name is None or not spec.startswith(exc.name):
                    raise
                log.debug("transport %s not available: %s", name, exc)
        for ep in entry_points(group="mux.transports"):
            found[ep.name] = _load(ep.value)
        _plugins = found
    return _plugins


def get(name: str) -> TransportPlugin:
    available = plugins()
    if name not in available:
        raise KeyError(f"unknown transport {name!r} (known: {', '.join(sorted(available))})")
    return available[name]
