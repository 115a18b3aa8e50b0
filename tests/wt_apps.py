"""Behaviours for the WebTransport tests: the shipped Echo, watched; and one that opens streams and stalls."""

from __future__ import annotations

import asyncio
from typing import Any

from behaviours.echo import Echo
from mux import Connection, ConnectionBehaviour, Reject, Stop, Stream

#: what each session showed its behaviour, by connection id: callback name -> props or argument
SEEN: dict[int, dict[str, Any]] = {}
#: order of the callbacks, by connection id
ORDER: dict[int, list[str]] = {}


def _seen(conn: Connection, callback: str, value: Any = None) -> None:
    SEEN.setdefault(conn.id, {})[callback] = value
    ORDER.setdefault(conn.id, []).append(callback)


class WatchedEcho(Echo):
    """``behaviours.echo:Echo`` unchanged, with what it was told recorded; refuses the origin ``https://evil.test``
    and stops with code 42 when a stream says ``stop`` (crashes on ``crash``)."""

    def new_conn(self, conn: Connection, props: dict[str, Any]) -> None:
        _seen(conn, "new_conn", props)
        if props.get("origin") == "https://evil.test":
            raise Reject(0, "not from that origin")

    def connected(self, conn: Connection, props: dict[str, Any]) -> None:
        _seen(conn, "connected", props)

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> Any:
        if data == b"stop":
            raise Stop(42, "asked to stop")
        if data == b"crash":
            raise RuntimeError("crashing, as asked")
        return super().stream_data(stream, data, fin, props)

    def peer_send_aborted(self, stream: Stream, error_code: int) -> None:
        _seen(stream.conn, "peer_send_aborted", error_code)

    def shutdown(self, conn: Connection, error_code: int) -> None:
        _seen(conn, "shutdown", error_code)

    def transport_shutdown(self, conn: Connection, props: dict[str, Any]) -> None:
        _seen(conn, "transport_shutdown", props)

    def closed(self, conn: Connection, props: dict[str, Any]) -> None:
        _seen(conn, "dropped_unidirectional", self.dropped_unidirectional)
        _seen(conn, "closed", props)


class Opener(ConnectionBehaviour):
    """Once connected, opens a unidirectional stream and a bidirectional one to the peer and writes on them; echoes
    what comes back on the bidirectional one on a new unidirectional stream. Resets a stream that says ``reset``
    with code 9; holds on to data that says ``hold`` until its ``go`` event is set (by the test)."""

    def init(self, opts: dict[str, Any]) -> None:
        self.go = asyncio.Event()

    async def connected(self, conn: Connection, props: dict[str, Any]) -> None:
        uni = conn.open_stream(unidirectional=True)
        await uni.send(b"from the server, one way", fin=True)
        bidi = conn.open_stream()
        await bidi.send(b"from the server, answer me", fin=True)

    async def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        _seen(stream.conn, f"data:{stream.id}", data)
        if data == b"reset":
            stream.reset(9)
        elif data.startswith(b"hold"):
            await self.go.wait()
        elif stream.local and data:
            back = self.conn.open_stream(unidirectional=True)
            await back.send(b"you said: " + data, fin=True)

    def closed(self, conn: Connection, props: dict[str, Any]) -> None:
        _seen(conn, "closed", props)
