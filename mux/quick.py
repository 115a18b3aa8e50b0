"""A behaviour served without a YAML file: ``mux serve module:Class --quic ... --sctp ...``, ``mux.serve(Echo, ...)``.

Both build the same config a YAML file would give (so every check and default applies) from a behaviour and the
listeners' addresses; everything else is the YAML reference's default. More than this wants a YAML file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mux import config as cfg
from mux import logs, preflight
from mux.behaviour import ConnectionBehaviour

if TYPE_CHECKING:
    from mux.server import Server

Addresses = str | Sequence[str] | None

#: what ``parse`` imports while checking a config whose behaviour is a class given in code: the class may live where
#: no dotted path reaches (``__main__``, a function), so the class itself goes to the Server
_PLACEHOLDER = "mux.behaviour:ConnectionBehaviour"


def parse_address(text: str, key: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1); raises ConfigError naming ``key``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or int(port) > 65535 or ("[" in host or "]" in host):
        raise cfg.ConfigError(f"{key}: expected HOST:PORT (e.g. 127.0.0.1:4433), got {text!r}")
    return host or "127.0.0.1", int(port)


def _listed(value: Addresses) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def config_data(
    behaviour: str,
    *,
    quic: Addresses = None,
    sctp: Addresses = None,
    alpn: str | Sequence[str] | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    sctp_port: int | None = None,
    options: dict[str, Any] | None = None,
    pool: dict[str, Any] | None = None,
    flag: str = "",
) -> dict[str, Any]:
    """The mapping a YAML file would hold. ``flag`` prefixes the names in errors (``--`` on the command line)."""

    def name(key: str) -> str:
        return flag + (key.replace("_", "-") if flag else key)

    quic_addresses, sctp_addresses = _listed(quic), _listed(sctp)
    if not quic_addresses and not sctp_addresses:
        wanted = f"{name('quic')} HOST:PORT and/or {name('sctp')} HOST:PORT"
        raise cfg.ConfigError(f"{behaviour}: no listener: give {wanted}")
    alpns = [alpn] if isinstance(alpn, str) else list(alpn or [])
    alpns = [a for item in alpns for a in item.split(",") if a]
    if quic_addresses and not alpns:
        raise cfg.ConfigError(f"{name('quic')}: needs {name('alpn')} (the ALPN clients offer, e.g. echo)")
    if not quic_addresses:
        for key, value in (("alpn", alpns), ("certfile", certfile), ("keyfile", keyfile)):
            if value:
                raise cfg.ConfigError(f"{name(key)}: applies to QUIC listeners; there is no {name('quic')}")
    if sctp_port is not None and not sctp_addresses:
        raise cfg.ConfigError(f"{name('sctp_port')}: applies to SCTP listeners; there is no {name('sctp')}")
    listeners: list[dict[str, Any]] = []
    for text in quic_addresses:
        host, port = parse_address(text, name("quic"))
        listener: dict[str, Any] = {"transport": "quic", "host": host, "port": port, "alpn": alpns}
        if certfile is not None:
            listener["certfile"] = certfile
        if keyfile is not None:
            listener["keyfile"] = keyfile
        listeners.append(listener)
    for text in sctp_addresses:
        host, port = parse_address(text, name("sctp"))
        listener = {"transport": "sctp", "host": host, "port": port}
        if sctp_port is not None:
            listener["sctp_port"] = sctp_port
        listeners.append(listener)
    data: dict[str, Any] = {"behaviour": behaviour, "options": dict(options or {}), "listeners": listeners}
    if pool:
        data["pool"] = dict(pool)
    return data


def build_config(behaviour: str, source: str = "mux serve", **kwargs: Any) -> Any:
    """A checked config (``preflight``: files, ports...) from a behaviour path and ``config_data``'s arguments."""
    config = cfg.parse(config_data(behaviour, **kwargs), source)
    preflight.check(config, source)
    return config


def make_server(behaviour: type[ConnectionBehaviour] | str, **kwargs: Any) -> Server:
    """A Server for ``behaviour`` (a class, or ``'module:Class'``), not started yet: ``await server.start()`` (or
    ``serve_forever()``), ``await server.stop()``. Keyword arguments: ``quic``, ``sctp`` (``HOST:PORT`` or a list),
    ``alpn``, ``certfile``, ``keyfile``, ``sctp_port``, ``options`` (to ``init``), ``pool`` (the YAML's ``pool:``).
    Raises ConfigError with the same messages as a YAML file."""
    from mux.server import Server

    if isinstance(behaviour, str):
        return Server(build_config(behaviour, "mux.serve", **kwargs))
    if not (isinstance(behaviour, type) and issubclass(behaviour, ConnectionBehaviour)):
        raise TypeError(f"expected a ConnectionBehaviour subclass or 'module:Class', got {behaviour!r}")
    config = build_config(_PLACEHOLDER, "mux.serve", **kwargs)
    config = config.model_copy(update={"behaviour": f"{behaviour.__module__}:{behaviour.__qualname__}"})
    return Server(config, behaviour=behaviour)


async def serve(behaviour: type[ConnectionBehaviour] | str, **kwargs: Any) -> None:
    """Run ``behaviour`` until SIGTERM or SIGINT, then drain, as ``mux serve`` does: ``asyncio.run(mux.serve(Echo,
    quic="127.0.0.1:4433", sctp="127.0.0.1:9899", alpn="echo"))``. Arguments as :func:`make_server`. Logs as
    ``mux serve`` does unless the program has set up logging itself."""
    if not logging.getLogger().handlers:
        logs.setup()
    await make_server(behaviour, **kwargs).serve_forever()
