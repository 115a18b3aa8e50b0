"""The mailbox's bounds (mux/connection.py), against an in-memory transport that records what it is told.

Receive credit comes back only through ``consumed``, after the behaviour is done with the data; a busy behaviour's
mailbox keeps one data event per byte stream, a bounded amount of datagrams, and one of each repeatable
notification, whatever a peer sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from mux import ConnectionBehaviour, Stop, Stream
from mux import transport as t
from mux.connection import DGRAM_COST, DGRAM_INBOX, Connection


class FakeTransport:
    transport_name = "fake"
    high_water = 1 << 20
    alpn = None
    local_address = ("127.0.0.1", 1)
    peer_address = ("127.0.0.1", 2)

    def __init__(self) -> None:
        self.finished = False
        self.consumed_calls: list[tuple[int, int]] = []
        self.sent: list[bytes] = []
        self.gone: str | None = None  # when set, send raises ConnectionGone with this text
        self.closed_with: tuple[int, str] | None = None

    def consumed(self, stream_id: int, nbytes: int) -> None:
        self.consumed_calls.append((stream_id, nbytes))

    def send(self, stream_id: int, data: bytes, fin: bool, props: Mapping[str, Any] | None) -> int:
        if self.gone is not None:
            raise t.ConnectionGone(self.gone)
        self.sent.append(data)
        return 0

    def send_buffered(self, stream_id: int) -> int:
        return 0

    def open_stream(self, unidirectional: bool = False) -> int:
        return 0

    def reset_stream(self, stream_id: int, error_code: int) -> None: ...

    def stop_sending(self, stream_id: int, error_code: int) -> None: ...

    def send_datagram(self, data: bytes) -> None: ...

    def close(self, error_code: int, reason: str) -> None:
        self.closed_with = (error_code, reason)

    def abort(self, reason: str) -> None:
        self.closed_with = (-1, reason)

    def stats(self) -> dict[str, Any]:
        return {}


class Busy(ConnectionBehaviour):
    """Holds its first stream_data until ``release`` is set; records everything."""

    def init(self, opts: dict[str, Any]) -> None:
        self.release = asyncio.Event()
        self.data: list[tuple[int, bytes, bool]] = []
        self.dgrams: list[bytes] = []
        self.notes: list[Any] = []
        self.closed_streams: list[int] = []

    async def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        self.data.append((stream.id, data, fin))
        await self.release.wait()

    def dgram_recv(self, conn: Connection, data: bytes, flags: int) -> None:
        self.dgrams.append(data)

    def streams_available(self, conn: Connection, bidi: int, unidi: int) -> None:
        self.notes.append(("available", bidi, unidi))

    def peer_needs_streams(self, conn: Connection, unidirectional: bool) -> None:
        self.notes.append(("needs", unidirectional))

    def peer_receive_aborted(self, stream: Stream, error_code: int) -> None:
        self.notes.append(("stop_sending", stream.id, error_code))

    def stream_closed(self, stream: Stream, props: dict[str, Any]) -> None:
        self.closed_streams.append(stream.id)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def connection(behaviour: ConnectionBehaviour) -> tuple[Connection, FakeTransport]:
    tconn = FakeTransport()
    conn = Connection(tconn, behaviour, {})
    await settle()
    conn.deliver(t.Connected({}))
    await settle()
    return conn, tconn


async def test_credit_returns_only_once_the_behaviour_is_done_with_the_data() -> None:
    b = Busy()
    conn, tconn = await connection(b)
    conn.deliver(t.StreamData(0, b"first", False))
    await settle()
    assert b.data == [(0, b"first", False)] and tconn.consumed_calls == []  # still in the callback
    b.release.set()
    await settle()
    assert tconn.consumed_calls == [(0, 5)]


async def test_a_byte_stream_keeps_one_waiting_event_however_many_frames_arrive() -> None:
    b = Busy()
    conn, tconn = await connection(b)
    conn.deliver(t.StreamData(0, b"block", False))  # the behaviour is now busy with this one
    await settle()
    for i in range(20_000):
        conn.deliver(t.StreamData(4, bytes([i & 0xFF]), False))
        conn.deliver(t.StreamData(8, b"x", False))
    conn.deliver(t.StreamData(4, b"", True))
    assert len(conn._mailbox) == 2 and conn.inbox_bytes == 40_000
    b.release.set()
    await settle()
    by_stream = {sid: (data, fin) for sid, data, fin in b.data}
    assert by_stream[4] == (bytes(i & 0xFF for i in range(20_000)), True)
    assert by_stream[8] == (b"x" * 20_000, False)
    assert sorted(tconn.consumed_calls) == [(0, 5), (4, 20_000), (8, 20_000)]
    assert conn.inbox_bytes == 0


async def test_messages_are_never_joined() -> None:
    b = Busy()
    b.release = asyncio.Event()
    conn, tconn = await connection(b)
    conn.deliver(t.StreamData(0, b"block", False, {"ppid": 0}))
    await settle()
    for i in range(3):
        conn.deliver(t.StreamData(1, b"m%d" % i, False, {"ppid": i}))
    b.release.set()
    await settle()
    assert [d for sid, d, _ in b.data if sid == 1] == [b"m0", b"m1", b"m2"]
    assert tconn.consumed_calls == [(0, 5), (1, 2), (1, 2), (1, 2)]


async def test_datagrams_beyond_the_inbox_are_dropped_and_counted() -> None:
    b = Busy()
    conn, _tconn = await connection(b)
    conn.deliver(t.StreamData(0, b"block", False))
    await settle()
    size = 1000
    sent = 3 * DGRAM_INBOX // size
    for i in range(sent):
        conn.deliver(t.DatagramReceived(i.to_bytes(4, "big") + bytes(size - 4)))
    kept = DGRAM_INBOX // (size + DGRAM_COST)
    assert conn.dgram_dropped == sent - kept
    assert conn.stats()["mailbox"]["dgram_dropped"] == sent - kept
    b.release.set()
    await settle()
    assert [int.from_bytes(d[:4], "big") for d in b.dgrams] == list(range(kept))
    # the room is there again once they were read
    conn.deliver(t.DatagramReceived(b"again"))
    await settle()
    assert b.dgrams[-1] == b"again"


async def test_repeated_notifications_wait_once_with_the_latest_values() -> None:
    b = Busy()
    conn, _tconn = await connection(b)
    conn.deliver(t.StreamData(0, b"block", False))
    await settle()
    for i in range(10_000):
        conn.deliver(t.StreamsAvailable(i, 1))
        conn.deliver(t.PeerNeedsStreams(False))
        conn.deliver(t.StopSending(0, 7))
    conn.deliver(t.PeerNeedsStreams(True))
    assert len(conn._mailbox) == 4
    b.release.set()
    await settle()
    assert b.notes == [("available", 9_999, 1), ("needs", False), ("stop_sending", 0, 7), ("needs", True)]


async def test_a_stream_done_both_ways_is_forgotten() -> None:
    class Echo(ConnectionBehaviour):
        def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> Any:
            return stream.send(data, fin)

    conn, _tconn = await connection(Echo())
    for sid in range(0, 4000, 4):
        conn.deliver(t.StreamData(sid, b"hi", True))
    await settle()
    assert conn.streams == {}


async def test_a_stopped_connection_lets_the_peer_finish_sending() -> None:
    class Stopper(ConnectionBehaviour):
        def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
            raise Stop(1, "enough")

    conn, tconn = await connection(Stopper())
    conn.deliver(t.StreamData(0, b"abc", False))
    await settle()
    conn.deliver(t.StreamData(0, b"defg", False))  # the peer has not seen the close yet
    assert tconn.closed_with == (1, "enough")
    assert tconn.consumed_calls == [(0, 3), (0, 4)]  # dropped, but its window given back


async def test_the_transport_ending_under_a_callback_is_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    class Echo(ConnectionBehaviour):
        def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> Any:
            return stream.send(data, fin)

    caplog.set_level(logging.DEBUG, "mux.connection")
    conn, tconn = await connection(Echo())
    tconn.gone = "the peer is shutting down"  # e.g. SCTP data bundled with SHUTDOWN or ABORT
    conn.deliver(t.StreamData(0, b"late", False))
    await settle()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert tconn.closed_with is None and conn.state == "connected"
    assert tconn.consumed_calls == [(0, 4)]


async def test_a_closed_other_connection_is_the_behaviours_own_error(caplog: pytest.LogCaptureFixture) -> None:
    other_conn, _ = await connection(Busy())
    other_conn._on_transport_closed(t.Closed({}))

    class Broadcast(ConnectionBehaviour):
        def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
            other_conn.send_datagram(data)

    conn, tconn = await connection(Broadcast())
    conn.deliver(t.StreamData(0, b"x", False))
    await settle()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR and "crashed" in r.getMessage()]
    assert tconn.closed_with is not None and tconn.closed_with[0] == -1
