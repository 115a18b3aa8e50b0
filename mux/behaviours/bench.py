"""The two roles of ``mux bench``: one server class and one client class, the same over QUIC and SCTP.

The framing relies on neither stream FIN (SCTP streams have none) nor message boundaries (QUIC streams are bytes):
every stream starts with a 16-byte header naming its mode. An echo stream carries fixed-size records that come back
unchanged, so the client finds its own send time in each reply; a sink stream declares its length up front and is
answered with an 8-byte count once all of it has arrived. Datagrams are echoed as they are.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mux import Connection, ConnectionBehaviour, ConnectionClosed, Stop, Stream
from mux.transport import TransportError

#: magic, mode, argument (a sink's byte count; unused for echo)
HEADER = struct.Struct("!4sIQ")
MAGIC = b"MXB1"
MODE_ECHO = 1
MODE_SINK = 2
#: the start of every echo record and datagram: flow, sequence number, send time (the client's loop clock, seconds)
RECORD = struct.Struct("!IId")
#: a sink's progress report: how many bytes it has received, sent each REPORT_EVERY bytes and at the end
COUNT = struct.Struct("!Q")
REPORT_EVERY = 16384

T = TypeVar("T")

#: every time the bench measures; the event loop's clock may tick in whole milliseconds (uvloop)
clock = time.perf_counter


class BenchError(Exception):
    """The peer answered something the protocol does not allow (lost, reordered or corrupted data)."""


class Unavailable(Exception):
    """The transport cannot do what the workload needs (e.g. unreliable messages without PR-SCTP)."""


@dataclass(slots=True)
class InterleaveRun:
    """What ``BenchClient.interleave`` measured, in seconds."""

    #: round trips of the records sent before anything else was
    idle: list[float]
    #: of the records sent while the same bytes went as ``piece``-byte messages (from the first send until the
    #: sink had all of them): what sharing the path and the connection costs when every scheduler can interleave
    pieces: list[float]
    #: of the records sent while the one large message was in flight (from its send until the sink had all of it)
    busy: list[float]
    #: from the first piece's ``stream.send`` until the sink's report of the last byte arrived
    pieces_transfer: float
    #: the same for the one large message
    transfer: float
    #: what the two sinks (pieces, message) counted in the end: the message's size each, or the run failed
    counted: tuple[int, int]


class _Sink:
    """The client's end of a sink stream: the receiver's byte counts; ``done`` gets the time the last came."""

    __slots__ = ("buffer", "counted", "done", "fail", "total")

    def __init__(self, total: int, done: asyncio.Future[float], fail: Callable[[Exception], None]) -> None:
        self.total = total
        self.done = done
        self.fail = fail
        self.counted = 0
        self.buffer = bytearray()

    def __call__(self, data: bytes) -> None:
        buffer = self.buffer
        buffer.extend(data)
        whole = len(buffer) - len(buffer) % COUNT.size
        for offset in range(0, whole, COUNT.size):
            self.counted = max(self.counted, COUNT.unpack_from(buffer, offset)[0])
        del buffer[:whole]
        if self.counted > self.total:
            self.fail(BenchError(f"the sink counted {self.counted} bytes of {self.total} sent"))
        elif self.counted == self.total and not self.done.done():
            self.done.set_result(clock())


class _ServerStream:
    __slots__ = ("answered", "head", "mode", "remaining", "total")

    def __init__(self) -> None:
        self.head = bytearray()
        self.mode = 0
        self.total = 0
        self.remaining = 0
        self.answered = False


class BenchServer(ConnectionBehaviour):
    """Echoes echo streams and datagrams; counts sink streams and answers with the count."""

    def init(self, opts: dict[str, Any]) -> None:
        self._streams: dict[int, _ServerStream] = {}

    async def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        state = self._streams.get(stream.id)
        if state is None:
            state = self._streams[stream.id] = _ServerStream()
        if not state.mode:
            state.head += data
            if len(state.head) < HEADER.size:
                return
            magic, mode, argument = HEADER.unpack_from(state.head)
            if magic != MAGIC or mode not in (MODE_ECHO, MODE_SINK):
                raise Stop(1, "not a mux bench stream")
            data = bytes(state.head[HEADER.size :])
            state.head = bytearray()
            state.mode = mode
            state.total = state.remaining = argument
        if state.mode == MODE_ECHO:
            if data:
                await stream.send(data)
            return
        before = state.total - state.remaining
        state.remaining -= len(data)
        after = state.total - state.remaining
        finished = state.remaining <= 0 and not state.answered
        if finished or after // REPORT_EVERY > before // REPORT_EVERY:
            state.answered = state.answered or finished
            await stream.send(COUNT.pack(after))

    def stream_closed(self, stream: Stream, props: dict[str, Any]) -> None:
        self._streams.pop(stream.id, None)

    def dgram_recv(self, conn: Connection, data: bytes, flags: int) -> None:
        try:
            conn.send_datagram(data)
        except TransportError:  # the peer accepts no datagrams, or this one cannot fit: unreliable anyway
            pass


class BenchClient(ConnectionBehaviour):
    """Drives the workloads; each method runs one and returns raw measurements (seconds), not summaries."""

    def init(self, opts: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._readers: dict[int, Callable[[bytes], None]] = {}
        self._dgram_reader: Callable[[bytes], None] | None = None
        #: True when data is left queued that need not arrive: the connection is then aborted, not shut down
        self.abandon = False
        #: fails once the connection is gone, so no workload waits on a dead connection until its timeout
        self._gone: asyncio.Future[None] = loop.create_future()

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        reader = self._readers.get(stream.id)
        if reader is not None and data:
            reader(data)

    def dgram_recv(self, conn: Connection, data: bytes, flags: int) -> None:
        if self._dgram_reader is not None:
            self._dgram_reader(data)

    def closed(self, conn: Connection, props: dict[str, Any]) -> None:
        if not self._gone.done():
            reason = props.get("reason") or props.get("error") or props.get("by") or "closed"
            self._gone.set_exception(ConnectionClosed(f"connection closed during the workload: {reason}"))
            self._gone.exception()  # retrieved: nobody may be waiting

    async def _until(self, future: asyncio.Future[T]) -> T:
        """``future``'s result, or ConnectionClosed as soon as the connection ends."""
        if not future.done():
            await asyncio.wait((future, self._gone), return_when=asyncio.FIRST_COMPLETED)
        if not future.done():
            self._gone.result()  # raises ConnectionClosed
        return future.result()

    async def upload(self, total: int, chunk: int, max_seconds: float) -> tuple[int, float]:
        """Send up to ``total`` bytes on one stream for at most ``max_seconds``; the sink's last report.

        Returns the bytes the sink had counted in its last report before the deadline (or its first, if none came
        sooner) and the seconds from the first byte sent until that report arrived: goodput as the receiving
        application saw it, without waiting for a slow path to drain what is still queued.
        """
        stream = self.conn.open_stream()
        received = bytearray()
        counted = 0  # the sink's latest report
        counted_at = 0.0  # when it arrived
        target = total
        arrived: asyncio.Future[None] = self._loop.create_future()

        def reader(data: bytes) -> None:
            nonlocal counted, counted_at
            received.extend(data)
            whole = len(received) - len(received) % COUNT.size
            if not whole:
                return
            now = clock()
            for offset in range(0, whole, COUNT.size):
                count: int = COUNT.unpack_from(received, offset)[0]
                if count > counted:
                    counted, counted_at = count, now
            del received[:whole]
            if counted >= target and not arrived.done():
                arrived.set_result(None)

        self._readers[stream.id] = reader
        payload = bytes(chunk)
        start = clock()
        deadline = start + max_seconds
        await stream.send(HEADER.pack(MAGIC, MODE_SINK, total))
        sent = 0
        while sent < total and clock() < deadline:
            size = min(chunk, total - sent)
            await stream.send(payload if size == chunk else payload[:size])
            sent += size
        target = sent
        if counted < sent:
            try:
                await asyncio.wait_for(self._until(arrived), max(deadline - clock(), 0.0))
            except TimeoutError:
                pass
        if not counted:
            target = 1
            arrived = self._loop.create_future()
            await self._until(arrived)
        self.abandon = counted < total
        if counted > sent:
            raise BenchError(f"the sink counted {counted} bytes, more than the {sent} sent")
        return counted, counted_at - start

    async def echo_flows(
        self, streams: int, flows: int, requests: int, size: int, max_seconds: float, interval: float = 0.0
    ) -> list[float]:
        """``flows`` flows of echoed records spread over ``streams`` streams; the round-trip time of every record.

        ``interval`` 0: each flow sends its next request when the last reply is back (request/response).
        ``interval`` > 0: each flow sends one record every ``interval`` seconds whatever comes back, the flows
        staggered evenly, so the offered load is the same over any transport. Then with one stream per flow a
        lost packet delays only its own flow, while on one shared stream it holds back every flow queued behind it
        (head-of-line blocking per connection). Sending stops after ``max_seconds``; every record sent is awaited.
        """
        if size < RECORD.size:
            raise ValueError(f"records are at least {RECORD.size} bytes")
        loop = self._loop
        rtts: list[float] = []
        next_seq = [0] * flows
        sent = [0] * flows
        replies: list[asyncio.Future[None] | None] = [None] * flows
        finished = [False] * flows

        def on_record(flow: int, seq: int, sent_at: float, now: float) -> None:
            if not 0 <= flow < flows or seq != next_seq[flow]:
                expected = next_seq[flow] if 0 <= flow < flows else None
                self._fail(BenchError(f"flow {flow}: reply {seq} arrived where {expected} was due"))
                return
            next_seq[flow] = seq + 1
            rtts.append(now - sent_at)
            reply = replies[flow]
            if reply is not None and not reply.done() and (not finished[flow] or next_seq[flow] >= sent[flow]):
                reply.set_result(None)

        handles: list[Stream] = []
        for _ in range(streams):
            stream = self.conn.open_stream()
            handles.append(stream)
            self._readers[stream.id] = self._record_reader(size, on_record)
        for stream in handles:
            await stream.send(HEADER.pack(MAGIC, MODE_ECHO, 0))
        padding = bytes(size - RECORD.size)
        start = clock()
        deadline = start + max_seconds

        async def flow(number: int) -> None:
            stream = handles[number % streams]
            for seq in range(requests):
                if interval:
                    due = start + (seq + number / flows) * interval
                    if due >= deadline:
                        break
                    if due > clock():
                        await asyncio.sleep(due - clock())
                elif seq and clock() >= deadline:
                    break
                reply = None if interval else loop.create_future()
                replies[number] = reply
                sent[number] = seq + 1
                await stream.send(RECORD.pack(number, seq, clock()) + padding)
                if reply is not None:
                    await self._until(reply)
            finished[number] = True
            if next_seq[number] < sent[number]:
                replies[number] = reply = loop.create_future()
                await self._until(reply)

        await asyncio.gather(*(flow(n) for n in range(flows)))
        return rtts

    async def interleave(
        self, streams: int, size: int, interval: float, idle: float, message: int, piece: int, settle: float
    ) -> InterleaveRun:
        """Small records on ``streams`` streams: alone, beside ``message`` bytes in pieces, beside it in one send.

        Each echo stream carries one flow of ``size``-byte records, one every ``interval`` seconds (the flows
        staggered evenly), whatever comes back, from start to end. After ``idle`` seconds, ``message`` bytes go
        out on a sink stream as ``piece``-byte sends, unmeasured (the warm-up: the congestion window grows, so
        both measured phases start from the same one); ``settle`` seconds after the sink reported the last byte,
        the same again on a second sink stream (the control: any scheduler can put a record between two pieces);
        ``settle`` seconds after that, the same bytes go out as ONE ``stream.send`` on a third sink stream (one
        SCTP message). Then the flows stop and every
        record sent is awaited. Records are sorted by when they were sent; those sent in a pause between phases
        count for neither.

        Record sends are not awaited: the backpressure of the large message would otherwise hold the flows back
        before their records reach the transport, and it is how the transport schedules what is queued that is
        measured here.
        """
        if size < RECORD.size:
            raise ValueError(f"records are at least {RECORD.size} bytes")
        loop = self._loop
        samples: list[tuple[float, float]] = []  # (sent at, round trip)
        next_seq = [0] * streams
        sent = [0] * streams
        sending = [True] * streams
        all_back: asyncio.Future[None] = loop.create_future()
        stop_at = math.inf

        def check_all_back() -> None:
            if not any(sending) and next_seq == sent and not all_back.done():
                all_back.set_result(None)

        def on_record(flow: int, seq: int, sent_at: float, now: float) -> None:
            if not 0 <= flow < streams or seq != next_seq[flow]:
                expected = next_seq[flow] if 0 <= flow < streams else None
                self._fail(BenchError(f"flow {flow}: reply {seq} arrived where {expected} was due"))
                return
            next_seq[flow] = seq + 1
            samples.append((sent_at, now - sent_at))
            check_all_back()

        handles = [self.conn.open_stream() for _ in range(streams)]
        for stream in handles:
            self._readers[stream.id] = self._record_reader(size, on_record)
            await stream.send(HEADER.pack(MAGIC, MODE_ECHO, 0))
        sinks: list[tuple[Stream, _Sink]] = []
        for _ in range(3):  # warm-up, pieces, message
            stream = self.conn.open_stream()
            sink = _Sink(message, loop.create_future(), self._fail)
            self._readers[stream.id] = sink
            await stream.send(HEADER.pack(MAGIC, MODE_SINK, message))
            sinks.append((stream, sink))
        payload = bytes(message)  # built now, not in the timed part
        pieces = [payload[offset : offset + piece] for offset in range(0, message, piece)]
        padding = bytes(size - RECORD.size)
        start = clock()

        async def flow(number: int) -> None:
            stream = handles[number]
            seq = 0
            try:
                while True:
                    due = start + (seq + number / streams) * interval
                    if due > clock():
                        await asyncio.sleep(due - clock())
                    if clock() >= stop_at:
                        break
                    sent[number] = seq + 1
                    stream.send(RECORD.pack(number, seq, clock()) + padding)  # queued at once; see above
                    seq += 1
            except Exception as exc:  # the connection went away, or the transport refused a record
                self._fail(exc)
            finally:
                sending[number] = False
                check_all_back()

        tasks = [loop.create_task(flow(n)) for n in range(streams)]
        try:
            await self._pause(idle)
            (warm_stream, warm_sink), (pieces_stream, pieces_sink), (message_stream, message_sink) = sinks
            warmed_began = clock()
            for data in pieces:  # the warm-up: the same load unmeasured, so both phases start from a grown cwnd
                warm_stream.send(data)
            await self._until(warm_sink.done)
            await self._pause(settle)
            pieces_began = clock()
            for data in pieces:
                pieces_stream.send(data)  # each its own message; backpressure not awaited, the sink's report is
            pieces_ended = await self._until(pieces_sink.done)
            await self._pause(settle)
            began = clock()
            message_stream.send(payload)  # ONE message; likewise
            ended = await self._until(message_sink.done)
            stop_at = clock()
            await self._until(all_back)
        finally:
            for task in tasks:
                task.cancel()
        return InterleaveRun(
            idle=[rtt for at, rtt in samples if at < warmed_began],
            pieces=[rtt for at, rtt in samples if pieces_began <= at <= pieces_ended],
            busy=[rtt for at, rtt in samples if began <= at <= ended],
            pieces_transfer=pieces_ended - pieces_began,
            transfer=ended - began,
            counted=(pieces_sink.counted, message_sink.counted),
        )

    async def _pause(self, seconds: float) -> None:
        """Sleep, but raise as soon as the connection ends or the protocol was broken."""
        await asyncio.wait((self._gone,), timeout=seconds)
        if self._gone.done():
            self._gone.result()  # raises

    def _fail(self, failure: Exception) -> None:
        """Fail whatever the workload waits on: the protocol was broken."""
        if not self._gone.done():
            self._gone.set_exception(failure)
            self._gone.exception()  # retrieved: nobody may be waiting

    def _record_reader(self, size: int, on_record: Callable[[int, int, float, float], None]) -> Callable[[bytes], None]:
        buffer = bytearray()

        def reader(data: bytes) -> None:
            buffer.extend(data)
            offset = 0
            now = clock()
            while len(buffer) - offset >= size:
                flow, seq, sent_at = RECORD.unpack_from(buffer, offset)
                on_record(flow, seq, sent_at, now)
                offset += size
            del buffer[:offset]

        return reader

    async def datagrams(self, count: int, size: int, interval: float, drain: float) -> tuple[int, list[float]]:
        """Send ``count`` datagrams ``interval`` apart; how many were sent and the round-trip time of each echo.

        Raises Unavailable when the transport has no unreliable messages. Waits for echoes until all are back or
        ``drain`` seconds after the last send: what is missing then counts as lost.
        """
        if size < RECORD.size:
            raise ValueError(f"datagrams are at least {RECORD.size} bytes")
        loop = self._loop
        rtts: list[float] = []
        seen: set[int] = set()
        everything: asyncio.Future[None] = loop.create_future()

        def reader(data: bytes) -> None:
            if len(data) < RECORD.size:
                return
            _, seq, sent_at = RECORD.unpack_from(data)
            if seq in seen or seq >= count:
                return  # a duplicate (the path may duplicate datagrams) or not ours
            seen.add(seq)
            rtts.append(clock() - sent_at)
            if len(seen) == count and not everything.done():
                everything.set_result(None)

        self._dgram_reader = reader
        padding = bytes(size - RECORD.size)
        start = clock()
        for seq in range(count):
            due = start + seq * interval
            now = clock()
            if due > now:
                await asyncio.sleep(due - now)
            try:
                self.conn.send_datagram(RECORD.pack(0, seq, clock()) + padding)
            except TransportError as exc:
                if seq == 0 and not isinstance(exc, ConnectionClosed):
                    raise Unavailable(str(exc)) from None
                raise
        try:
            await asyncio.wait_for(self._until(everything), drain)
        except TimeoutError:
            pass
        return count, rtts
