"""Behaviours used by the tests (importable by dotted path from test configs)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from mux import Connection, ConnectionBehaviour, Reject, Stop, Stream

#: callbacks seen by Recording servers, in order, per connection id
LOG: dict[int, list[str]] = {}
#: the props (or argument) of some of those callbacks, by connection id and callback name
PROPS: dict[int, dict[str, Any]] = {}
#: per connection id of a Progress server: (stream id, bytes received on it so far) after each message, in order
PROGRESS: dict[int, list[tuple[int, int]]] = {}


class Recording(ConnectionBehaviour):
    """Echoes, and records every callback it gets."""

    def _log(self, entry: str) -> None:
        LOG.setdefault(self.conn.id, []).append(entry)

    def _keep(self, callback: str, value: Any) -> None:
        PROPS.setdefault(self.conn.id, {})[callback] = value

    def init(self, opts: dict[str, Any]) -> None:
        self._log("init")

    def new_conn(self, conn: Connection, props: dict[str, Any]) -> None:
        self._log("new_conn")

    async def connected(self, conn: Connection, props: dict[str, Any]) -> None:
        await asyncio.sleep(0.01)  # an async callback that yields must still keep order
        self._log("connected")

    def new_stream(self, stream: Stream, props: dict[str, Any]) -> None:
        self._log(f"new_stream:{stream.id}" + (":unidi" if stream.unidirectional else ""))

    async def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        self._log(f"data:{stream.id}:{data.decode()}:{int(fin)}")
        if stream.send_done:
            return  # nothing to echo on: the peer's one-way stream, or one whose sending it stopped
        if data == b"crash":
            raise RuntimeError("boom, as asked")
        if data == b"stop":
            raise Stop(7, "stopped by behaviour")
        if data == b"stop0":
            raise Stop(0, "done")
        if data.startswith(b"pause"):  # suspends on a stream it already knows: later data must wait
            await asyncio.sleep(0.05)
            self._log("pause done")
            if data == b"pause-crash":
                raise RuntimeError("boom after a pause")
        if data == b"late":
            while self.conn.state == "connected":  # answer only once the peer has gone
                await asyncio.sleep(0.01)
            self._log("late send")
        await stream.send(data, fin=fin)

    def stream_closed(self, stream: Stream, props: dict[str, Any]) -> None:
        self._log(f"stream_closed:{stream.id}")

    def peer_send_aborted(self, stream: Stream, error_code: int) -> None:
        self._log(f"peer_send_aborted:{stream.id}:{error_code}")

    def peer_receive_aborted(self, stream: Stream, error_code: int) -> None:
        self._log(f"peer_receive_aborted:{stream.id}:{error_code}")

    def dgram_state_changed(self, conn: Connection, props: dict[str, Any]) -> None:
        self._log("dgram_state_changed")
        self._keep("dgram_state_changed", props)

    def peer_cert_received(self, conn: Connection, certificates: list[bytes]) -> None:
        self._log("peer_cert_received")
        self._keep("peer_cert_received", certificates)

    def resumed(self, conn: Connection, session_data: Any) -> None:
        self._log(f"resumed:{session_data}")

    def shutdown(self, conn: Connection, error_code: int) -> None:
        self._log(f"shutdown:{error_code}")

    def transport_shutdown(self, conn: Connection, props: dict[str, Any]) -> None:
        self._log("transport_shutdown")
        self._keep("transport_shutdown", props)

    def handle_info(self, msg: Any) -> None:
        self._log(f"info:{msg}")

    def peer_needs_streams(self, conn: Connection, unidirectional: bool) -> None:
        self._log(f"peer_needs_streams:{int(unidirectional)}")

    def dgram_recv(self, conn: Connection, data: bytes, flags: int) -> None:
        self._log(f"dgram:{data.decode()}")
        conn.send_datagram(data)

    def handle_call(self, msg: Any) -> Any:
        self._log(f"call:{msg}")
        if msg == "fail":
            raise ValueError("call failed")
        return ("reply", msg)

    def closed(self, conn: Connection, props: dict[str, Any]) -> None:
        self._log("closed")
        self._keep("closed", props)


class Progress(ConnectionBehaviour):
    """Counts what arrives on each stream, in arrival order (``PROGRESS``); answers nothing."""

    def init(self, opts: dict[str, Any]) -> None:
        self.total: dict[int, int] = {}

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        n = self.total[stream.id] = self.total.get(stream.id, 0) + len(data)
        PROGRESS.setdefault(self.conn.id, []).append((stream.id, n))


class FireAndForget(ConnectionBehaviour):
    """A plain ``def`` that sends without awaiting (``send`` queues the data at once), and returns a
    plain value, which the framework ignores ("return nothing, or anything, to carry on")."""

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> int:
        if data or fin:
            stream.send(data, fin=fin)
        return len(data)


class Refusing(ConnectionBehaviour):
    def new_conn(self, conn: Connection, props: dict[str, Any]) -> None:
        raise Reject(0, "not today")


class SlowNewConn(ConnectionBehaviour):
    async def init(self, opts: dict[str, Any]) -> None:
        self.delay = float(opts.get("delay", 1.0))

    async def new_conn(self, conn: Connection, props: dict[str, Any]) -> None:
        await asyncio.sleep(self.delay)

    async def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        await stream.send(data, fin=fin)


class Producer(ConnectionBehaviour):
    """On a request naming a size, sends that many bytes back as fast as backpressure lets it."""

    max_buffered: int = 0

    async def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        if not data:
            return
        total = int(data.decode())
        chunk = b"x" * 65536
        tconn = self.conn._tconn
        sent = 0
        while sent < total:
            piece = chunk[: min(len(chunk), total - sent)]
            await stream.send(piece)
            sent += len(piece)
            Producer.max_buffered = max(Producer.max_buffered, tconn.send_buffered(stream.id))
        await stream.send(b"", fin=True)


class Client(ConnectionBehaviour):
    """A test client: everything it gets lands on a queue."""

    def init(self, opts: dict[str, Any]) -> None:
        self.events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.data: dict[int, bytearray] = {}
        self.fins: dict[int, asyncio.Event] = {}
        #: every event's kind, in arrival order, including those ``next`` skipped
        self.seen: list[str] = []

    def _put(self, event: tuple[Any, ...]) -> None:
        self.seen.append(event[0])
        self.events.put_nowait(event)

    def fin_event(self, stream_id: int) -> asyncio.Event:
        return self.fins.setdefault(stream_id, asyncio.Event())

    def connected(self, conn: Connection, props: dict[str, Any]) -> None:
        self._put(("connected", props))

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        self.data.setdefault(stream.id, bytearray()).extend(data)
        self._put(("data", stream.id, data, fin, props))
        if fin:
            self.fin_event(stream.id).set()

    def new_stream(self, stream: Stream, props: dict[str, Any]) -> None:
        self._put(("new_stream", stream.id, stream.direction, stream.local))

    def peer_send_aborted(self, stream: Stream, error_code: int) -> None:
        self._put(("peer_send_aborted", stream.id, error_code))

    def peer_receive_aborted(self, stream: Stream, error_code: int) -> None:
        self._put(("peer_receive_aborted", stream.id, error_code))

    def stream_closed(self, stream: Stream, props: dict[str, Any]) -> None:
        self._put(("stream_closed", stream.id))

    def dgram_recv(self, conn: Connection, data: bytes, flags: int) -> None:
        self._put(("dgram", data))

    def streams_available(self, conn: Connection, bidi: int, unidi: int) -> None:
        self._put(("streams_available", bidi, unidi))

    def dgram_state_changed(self, conn: Connection, props: dict[str, Any]) -> None:
        self._put(("dgram_state_changed", props))

    def peer_cert_received(self, conn: Connection, certificates: list[bytes]) -> None:
        self._put(("peer_cert_received", certificates))

    def peer_needs_streams(self, conn: Connection, unidirectional: bool) -> None:
        self._put(("peer_needs_streams", unidirectional))

    def shutdown(self, conn: Connection, error_code: int) -> None:
        self._put(("shutdown", error_code))

    def transport_shutdown(self, conn: Connection, props: dict[str, Any]) -> None:
        self._put(("transport_shutdown", props))

    def closed(self, conn: Connection, props: dict[str, Any]) -> None:
        self._put(("closed", props))

    async def next(self, kind: str, timeout: float = 5.0) -> tuple[Any, ...]:
        """The next event of ``kind``, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event[0] == kind:
                    return event


class TicketClient(Client):
    """A client that keeps session tickets itself (quicer's ``nst_received``)."""

    def init(self, opts: dict[str, Any]) -> None:
        super().init(opts)
        self.tickets: list[bytes] = []

    def nst_received(self, conn: Connection, ticket: bytes) -> None:
        self.tickets.append(ticket)
        self._put(("nst_received", ticket))


class PathEcho(ConnectionBehaviour):
    """Echoes each message, and prints each path event on a line of its own (tests/test_sctp_multihoming.py reads
    them from a server in another network namespace)."""

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> Any:
        return stream.send(data, fin=fin)

    def path_changed(self, conn: Connection, address: Any, state: str, props: dict[str, Any]) -> None:
        print(f"PATH {address[0]} {state}", flush=True)

    def peer_address_changed(self, conn: Connection, address: Any) -> None:
        print(f"PRIMARY {address[0]}", flush=True)


class WhichWorker(ConnectionBehaviour):
    """Echoes each message prefixed with the worker process that served it (``MUX_WORKER``, ``-`` outside workers)
    and, when its options have a ``tag``, ``/tag`` after it."""

    def init(self, opts: dict[str, Any]) -> None:
        self.tag = opts.get("tag")

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> Any:
        if stream.local or not (data or fin):
            return None
        worker = os.environ.get("MUX_WORKER", "-").encode()
        if self.tag:
            worker += b"/" + str(self.tag).encode()
        return stream.send(worker + b":" + data if data else b"", fin=fin)
