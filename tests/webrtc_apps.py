"""Behaviours the WebRTC tests serve: the echo, watched (what each callback saw, per connection)."""

from __future__ import annotations

from typing import Any

from behaviours.echo import Echo
from mux import Connection, Reject, Stream

SEEN: dict[int, dict[str, Any]] = {}


def note(conn: Connection, key: str, value: Any) -> None:
    SEEN.setdefault(conn.id, {}).setdefault(key, []).append(value)


class WatchedEcho(Echo):
    """``behaviours.echo.Echo``, unchanged, noting the props of each callback it gets."""

    def new_conn(self, conn: Connection, props: dict[str, Any]) -> None:
        note(conn, "new_conn", props)

    def connected(self, conn: Connection, props: dict[str, Any]) -> None:
        note(conn, "connected", props)

    def new_stream(self, stream: Stream, props: dict[str, Any]) -> None:
        note(stream.conn, "new_stream", (stream.id, props))

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> Any:
        note(stream.conn, "stream_data", (stream.id, len(data), fin, props.get("ppid"), props.get("unordered")))
        return super().stream_data(stream, data, fin, props)

    def closed(self, conn: Connection, props: dict[str, Any]) -> None:
        note(conn, "closed", props)


class Refusing(Echo):
    """Refuses every connection in ``new_conn``."""

    def new_conn(self, conn: Connection, props: dict[str, Any]) -> None:
        note(conn, "new_conn", props)
        raise Reject(7, "not today")


class Greeter(WatchedEcho):
    """Opens a channel of its own once connected and says hello on it, as text."""

    async def connected(self, conn: Connection, props: dict[str, Any]) -> None:
        note(conn, "connected", props)
        stream = conn.open_stream()
        note(conn, "opened", stream.id)
        await stream.send(b"hello from the server", ppid=51)
