"""Chat rooms: lines typed on one connection are broadcast to every other member of its room.

It shows cross-connection messages: a connection never touches another's streams; it posts to the
other connection's mailbox (``conn.post``), and the receiver writes from its own ``handle_info``,
in order with everything else happening on it. Members may be on QUIC and SCTP at once.

Commands: ``/nick NAME``, ``/join ROOM``, ``/who``; anything else is said to the room.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mux import Connection, ConnectionBehaviour, Stream

#: room name -> members; one server process shares it across all its listeners
ROOMS: defaultdict[str, dict[Connection, str]] = defaultdict(dict)
MAX_LINE = 4096
#: lines waiting in one member's mailbox; beyond it that member misses lines (a member whose peer does not read
#: must not let everyone else's chatter pile up in memory without bound)
MAX_BACKLOG = 1000


class Chat(ConnectionBehaviour):
    def init(self, opts: dict[str, Any]) -> None:
        self.room: str = str(opts.get("room", "lobby"))
        self.nick = ""
        self.stream: Stream | None = None
        self.pending = b""
        #: lines posted to us and not yet written (see MAX_BACKLOG)
        self.backlog = 0
        self.missed = 0

    def connected(self, conn: Connection, props: dict[str, Any]) -> None:
        self.nick = f"guest{conn.id}"

    async def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        if self.stream is None and not stream.unidirectional:
            self.stream = stream
            self._join(self.room)
        if "ppid" in props:  # message-oriented transport: a message holds whole lines
            lines = data.rstrip(b"\n").split(b"\n")
        else:
            self.pending += data
            *lines, self.pending = self.pending.split(b"\n")
            if len(self.pending) > MAX_LINE:
                self.pending = b""
                await self._reply(b"* line too long, dropped\n")
        for raw in lines:
            await self._command(raw.decode("utf-8", "replace").strip())
        if fin and stream is self.stream:
            await stream.send(b"", fin=True) if self.conn.transport == "quic" else None
            self.conn.close()

    async def _command(self, line: str) -> None:
        if not line:
            return
        if line.startswith("/nick "):
            old, self.nick = self.nick, line[6:].strip()[:32] or self.nick
            ROOMS[self.room][self.conn] = self.nick
            self._broadcast(f"* {old} is now {self.nick}")
        elif line.startswith("/join "):
            self._leave()
            self._join(line[6:].strip()[:32] or "lobby")
        elif line == "/who":
            await self._reply(f"* in {self.room}: {', '.join(sorted(ROOMS[self.room].values()))}\n".encode())
        else:
            self._broadcast(f"{self.nick}: {line}")

    def _join(self, room: str) -> None:
        self.room = room
        ROOMS[room][self.conn] = self.nick
        self._broadcast(f"* {self.nick} joined {room}")

    def _leave(self) -> None:
        members = ROOMS.get(self.room)
        if members is not None and self.conn in members:
            del members[self.conn]
            self._broadcast(f"* {self.nick} left {self.room}")
            if not members:
                del ROOMS[self.room]

    def _broadcast(self, text: str) -> None:
        for member in list(ROOMS.get(self.room, {})):
            if member is not self.conn:
                other = member.behaviour
                if isinstance(other, Chat) and other.backlog >= MAX_BACKLOG:
                    other.missed += 1
                    continue
                if isinstance(other, Chat):
                    other.backlog += 1
                member.post(("say", self.room, text))

    async def _reply(self, payload: bytes) -> None:
        if self.stream is not None and not self.stream.send_done and self.conn.state == "connected":
            await self.stream.send(payload)

    async def handle_info(self, msg: Any) -> None:
        kind, room, text = msg
        if kind == "say":
            self.backlog -= 1
            if room == self.room:
                if self.missed:
                    missed, self.missed = self.missed, 0
                    await self._reply(f"* {missed} lines missed (you were not reading)\n".encode())
                await self._reply(text.encode() + b"\n")

    def closed(self, conn: Connection, props: dict[str, Any]) -> None:
        self._leave()
