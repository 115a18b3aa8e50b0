"""The YAML server file: schema, loading, and error messages a person can act on.

Every error names the file, the key path and what was expected, in one message, with no traceback.
"""

from __future__ import annotations

import importlib
import os
import sysconfig
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError

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


class ControlConfig(StrictModel):
    """``mux ctl``'s Unix socket; off unless given."""

    socket: str = Field(min_length=1, description="path of the Unix socket (made 0600)")


class MetricsConfig(StrictModel):
    """Prometheus text over HTTP (``GET /metrics``); off unless given."""

    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)


def _workers(value: Any) -> Any:
    if value == "auto" or (type(value) is int and 1 <= value <= MAX_WORKERS):
        return value
    raise ValueError(f"expected a number of processes from 1 to {MAX_WORKERS}, or 'auto' (one per core)")


MAX_WORKERS = 1024
Workers = Annotated[Union[int, Literal["auto"]], BeforeValidator(_workers)]  # noqa: UP007


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
        control: ControlConfig | None = None
        metrics: MetricsConfig | None = None
        #: worker processes sharing the listeners (``mux.workers``): a number, or ``auto`` for one per core
        workers: Workers = 1
        listeners: list[listener] = Field(min_length=1)  # type: ignore[valid-type]

    return ServerConfig


ServerConfig = _server_model()


class BehaviourError(ValueError):
    """The behaviour named in a config cannot be used; ``str()`` is the message after ``behaviour:``."""


def import_behaviour(path: str) -> type[ConnectionBehaviour]:
    """Import ``package.module:Class`` (or ``package.module.Class``); raises BehaviourError."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise BehaviourError(f"expected 'package.module:Class', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        # the user's module ran and failed: point at its line; else the module itself is not there
        raise BehaviourError(_import_failure(module_name, exc)) from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise BehaviourError(f"module {module_name!r} has no attribute {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, ConnectionBehaviour)):
        raise BehaviourError(f"{path!r} is not a subclass of mux.ConnectionBehaviour")
    return cls


def _shown_path(filename: str) -> str:
    """Relative to the working directory when under it (as a user would type it), else as is."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if relative.startswith("..") else relative


def _import_failure(module_name: str, exc: BaseException) -> str:
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return f"{_shown_path(exc.filename)}:{exc.lineno}: {type(exc).__name__}: {_capped(str(exc.msg))}"
    summary = f"{type(exc).__name__}: {_capped(str(exc))}"
    frames = [
        (tb.tb_frame.f_globals.get("__name__"), tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        for tb in _tracebacks(exc.__traceback__)[1:]  # the first is import_behaviour's own frame
    ]
    user = [
        (name, filename, line)
        for name, filename, line in frames
        if not filename.startswith("<frozen ") and name != "importlib" and not str(name).startswith("importlib.")
    ]
    if not user:
        # nothing of the user's ran: the module (or a parent package) was not found
        return f"cannot import module {module_name!r}: {_capped(str(exc))}"
    # the module's own deepest frame, else its parent package's, else the deepest that ran
    owners = [module_name] + [module_name.rsplit(".", n)[0] for n in range(1, module_name.count(".") + 1)]
    for owner in owners:
        mine = [(filename, line) for name, filename, line in user if name == owner]
        if mine:
            filename, line = mine[-1]
            break
    else:
        _, filename, line = user[-1]
    # and where it was raised, when that is in the user's code too (a helper module it imports)
    theirs = [(f, n) for _, f, n in user if not f.startswith(_LIBRARY_PATHS)]
    if theirs and theirs[-1] != (filename, line):
        summary += f" (raised at {_shown_path(theirs[-1][0])}:{theirs[-1][1]})"
    return f"{_shown_path(filename)}:{line}: {summary}"


_LIBRARY_PATHS = tuple({sysconfig.get_paths()[key] + os.sep for key in ("stdlib", "platstdlib", "purelib", "platlib")})


def _tracebacks(tb: TracebackType | None) -> list[TracebackType]:
    found = []
    while tb is not None:
        found.append(tb)
        tb = tb.tb_next
    return found


def _capped(message: str, limit: int = 200) -> str:
    """An exception's text can be anything a module chose; one line of sane length."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


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
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    try:
        import_behaviour(config.behaviour)  # type: ignore[attr-defined]
    except BehaviourError as exc:
        raise ConfigError(f"{source}: behaviour: {exc}") from None
    names = [listener_name(lst) for lst in config.listeners]  # type: ignore[attr-defined]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"{source}: listeners[{i}].name: duplicate listener name {name!r}")
    return config


def listener_name(listener: Any) -> str:
    if listener.name:
        return str(listener.name)
    if getattr(listener, "encapsulation", "udp") == "none":  # SCTP on IP: no UDP port, its SCTP port names it
        return f"{listener.transport}:ip:{listener.sctp_port}"
    return f"{listener.transport}:{listener.port}"


#: config, certificate and key files are small; /dev/zero given by mistake must not eat the memory
MAX_FILE_BYTES = 4 << 20


class FileTooLarge(Exception):
    pass


def read_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The whole file, or FileTooLarge past ``limit`` bytes (a device or a wrong path reads forever)."""
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(path)
    return data


class _Loader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a key given twice is a mistake to report, like a typo."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(path: str | Path) -> Any:
    """Read and validate a YAML server file; raises ConfigError with one clear message."""
    source = str(path)
    try:
        raw = read_bounded(Path(path))
    except FileTooLarge:
        raise ConfigError(f"{source}: larger than {MAX_FILE_BYTES >> 20} MiB; expected a server config") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. an embedded NUL in the path
        raise ConfigError(f"{source}: cannot read: {exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: expected a YAML text file (UTF-8), got byte {raw[exc.start]:#04x} at offset {exc.start}"
        ) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader: no arbitrary objects
    except yaml.reader.ReaderError as exc:
        character = f"{exc.character:#06x}" if isinstance(exc.character, int) else repr(exc.character)
        raise ConfigError(
            f"{source}: invalid YAML: character {character} at offset {exc.position} is not allowed"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    if data is None:
        raise ConfigError(f"{source}: the file is empty; expected a mapping with 'behaviour' and 'listeners'")
    return parse(data, source)


def listener_adapter() -> TypeAdapter[Any]:
    return TypeAdapter(listener_type())
