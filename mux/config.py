"""The YAML server file: schema, loading, and error messages a person can act on.

Every error names the file, the key path and what was expected, in one message, with no traceback.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from mux import registry
from mux.behaviour import ConnectionBehaviour
from mux.schema import StrictModel


class ConfigError(Exception):
    """A bad config file; ``str()`` is the whole message for the user."""


class PoolConfig(StrictModel):
    num_acceptors: int = Field(default=100, gt=0)
    max_connections: int = Field(default=10_000, gt=0)
    handshake_timeout_ms: int = Field(default=10_000, gt=0)
    shutdown_timeout_ms: int = Field(default=5_000, ge=0)


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@cache
def listener_type() -> Any:
    models = [p.listener_model for p in registry.plugins().values()]
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="transport")]  # noqa: UP007


def _server_model() -> type[StrictModel]:
    listener = listener_type()

    class ServerConfig(StrictModel):
        behaviour: str = Field(description="dotted path, 'package.module:Class'")
        options: dict[str, Any] = Field(default_factory=dict)
        pool: PoolConfig = Field(default_factory=PoolConfig)
        logging: LoggingConfig = Field(default_factory=LoggingConfig)
        listeners: list[listener] = Field(min_length=1)  # type: ignore[valid-type]

    return ServerConfig


ServerConfig = _server_model()


def import_behaviour(path: str) -> type[ConnectionBehaviour]:
    """Import ``package.module:Class`` (or ``package.module.Class``)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"expected 'package.module:Class', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, ConnectionBehaviour)):
        raise ValueError(f"{path!r} is not a subclass of mux.ConnectionBehaviour")
    return cls


def _key_path(loc: tuple[Any, ...]) -> str:
    transports = set(registry.plugins())
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        # a tagged union adds the tag to the path (listeners.0.quic.alpn): leave it out
        if i >= 2 and isinstance(loc[i - 1], int) and loc[i - 2] == "listeners" and item in transports:
            continue
        parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _expected(error: Any, model_fields: dict[str, Any] | None = None) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"expected 'transport' to be one of: {', '.join(sorted(registry.plugins()))}"
    message = str(error["msg"])
    if "input" in error and kind not in ("missing",):
        shown = repr(error["input"])
        if len(shown) > 60:
            shown = shown[:57] + "..."
        message += f" (got {shown})"
    return message


def parse(data: Any, source: str = "<config>") -> Any:
    """Validate an already-loaded mapping; raises ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        config = ServerConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {_key_path(tuple(e['loc']))}: {_expected(e)}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    try:
        import_behaviour(config.behaviour)  # type: ignore[attr-defined]
    except ValueError as exc:
        raise ConfigError(f"{source}: behaviour: {exc}") from None
    names = [listener_name(lst) for lst in config.listeners]  # type: ignore[attr-defined]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"{source}: listeners[{i}].name: duplicate listener name {name!r}")
    return config


def listener_name(listener: Any) -> str:
    return str(listener.name or f"{listener.transport}:{listener.port}")


def load(path: str | Path) -> Any:
    """Read and validate a YAML server file; raises ConfigError with one clear message."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{where}: invalid YAML: {problem}") from None
    return parse(data, source)


def listener_adapter() -> TypeAdapter[Any]:
    return TypeAdapter(listener_type())
