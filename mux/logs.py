"""Structured logging: ``key=value`` text or one JSON object per line.

A line carries structured fields as ``extra={"fields": {...}}`` (see :func:`fields`): the JSON format
makes each a key of the line's object, the text format appends them as ``key=value``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

#: keys of a JSON line that a field never replaces
_RESERVED = ("ts", "level", "logger", "msg", "exc")


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call carrying structured fields: ``log.info("...", extra=fields(conn_id=3))``."""
    return {"fields": values}


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    found = getattr(record, "fields", None)
    return found if isinstance(found, dict) else {}


def _text_value(value: Any) -> str:
    kind = type(value)
    if kind is int or kind is float:  # the common fields: ids, byte counts, durations (JSON's spelling, faster)
        return repr(value)
    if value is None:
        return "null"
    text = value if kind is str else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' \t\n"='):
        return json.dumps(text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields_of(record).items():
            entry[f"field_{key}" if key in _RESERVED else key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    #: (second, its text): lines come many to a second, and strftime is a good part of formatting one
    _second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second)))
        ts = self._second[1]
        line = f"{ts}.{int(record.msecs):03d} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        extra = _fields_of(record)
        if extra:
            line += " " + " ".join(f"{key}={_text_value(value)}" for key, value in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aioquic logs every packet at debug: keep it one notch quieter than ours
    logging.getLogger("quic").setLevel(max(logging.WARNING, root.level))
    # our formatters show none of these: gathering them costs each record (a server writes two per connection)
    # a frame walk and thread/process look-ups (the logging HOWTO's "Optimization")
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None


# -- logs caused by remote input ---------------------------------------------------------------------------------
#
# A line a peer can cause (a malformed packet, an ERROR chunk, a handshake it abandons, a behaviour it makes crash)
# must never let it write unbounded logs: each kind of line has a token bucket, its arguments are cut short, and
# what was held back is counted in the next line of that kind.

#: lines per second per kind, after a burst
RATE = 5.0
BURST = 20
#: characters kept of each argument
MAX_ARG = 200


class _Bucket:
    __slots__ = ("last", "suppressed", "tokens")

    def __init__(self, now: float) -> None:
        self.tokens = float(BURST)
        self.last = now
        self.suppressed = 0


_buckets: dict[str, _Bucket] = {}
_clock = time.monotonic


def _take(key: str) -> tuple[bool, int]:
    now = _clock()
    bucket = _buckets.get(key)
    if bucket is None:
        bucket = _buckets[key] = _Bucket(now)
    bucket.tokens = min(float(BURST), bucket.tokens + (now - bucket.last) * RATE)
    bucket.last = now
    if bucket.tokens < 1.0:
        bucket.suppressed += 1
        return False, 0
    bucket.tokens -= 1.0
    suppressed, bucket.suppressed = bucket.suppressed, 0
    return True, suppressed


def _short(arg: Any) -> Any:
    if isinstance(arg, int | float | bool) or arg is None:
        return arg
    text = arg if isinstance(arg, str) else repr(arg) if isinstance(arg, bytes | bytearray) else str(arg)
    return text if len(text) <= MAX_ARG else text[: MAX_ARG - 3] + "..."


def limited_log(
    logger: logging.Logger,
    level: int,
    key: str,
    msg: str,
    *args: Any,
    exc_info: BaseException | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Log a line that remote input can cause: rate-limited per ``key``, each argument at most ``MAX_ARG`` chars."""
    if not logger.isEnabledFor(level):
        return
    allowed, suppressed = _take(key)
    if not allowed:
        return
    shown = tuple(_short(a) for a in args)
    if suppressed:
        msg += " (%d similar lines suppressed)"
        shown += (suppressed,)
    logger.log(level, msg, *shown, exc_info=exc_info, extra=extra)


def peer_log(logger: logging.Logger, key: str, msg: str, *args: Any) -> None:
    """A peer-caused event: debug level, rate-limited and cut short (the counters in ``info()`` tell how many)."""
    limited_log(logger, logging.DEBUG, key, msg, *args)
