"""Behaviours whose answers show which options and class a connection was made with (tests/test_reload.py)."""

from __future__ import annotations

from typing import Any

from mux import ConnectionBehaviour, Stream


class Tagged(ConnectionBehaviour):
    """Answers each message with ``<tag>:<message>``, ``tag`` from its options."""

    def init(self, opts: dict[str, Any]) -> None:
        self.tag = str(opts.get("tag", ""))

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> Any:
        if data or fin:
            return stream.send(self.reply(data), fin=fin)
        return None

    def reply(self, data: bytes) -> bytes:
        return self.tag.encode() + b":" + data if data else b""


class Shouting(Tagged):
    def reply(self, data: bytes) -> bytes:
        return super().reply(data).upper()
