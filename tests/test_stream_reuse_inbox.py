"""The mailbox when a transport reuses stream ids (SCTP after RFC 6525 resets), against an in-memory transport.

The next stream of an id may arrive while the previous one's events still wait in the mailbox: the old stream's
``stream_closed`` must run before the new one's ``new_stream``, the new stream's events must never reach the old
stream object, and a reset waiting for the old stream must not swallow the new stream's.
"""

from __future__ import annotations

from typing import Any

from mux import Stream
from mux import transport as t
from mux.connection import Connection
from tests.test_connection_inbox import Busy, FakeTransport, settle


class Recorder(Busy):
    """Busy (its first stream_data waits for ``release``), recording stream events with the stream objects."""

    def init(self, opts: dict[str, Any]) -> None:
        super().init(opts)
        self.log: list[tuple[Any, ...]] = []
        self.objects: list[Stream] = []

    def new_stream(self, stream: Stream, props: dict[str, Any]) -> None:
        self.objects.append(stream)
        self.log.append(("new_stream", stream.id, stream.direction))

    async def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        self.log.append(("data", stream.id, self.objects.index(stream), data, fin))
        if data == b"block":
            await self.release.wait()
        if fin and not stream.send_done:
            stream.send(b"", fin=True)

    def peer_send_aborted(self, stream: Stream, error_code: int) -> None:
        self.log.append(("peer_send_aborted", stream.id, self.objects.index(stream), error_code))
        stream.send(b"", fin=True)  # our side ends too: the id is free for the peer again

    def stream_closed(self, stream: Stream, props: dict[str, Any]) -> None:
        self.log.append(("stream_closed", stream.id, self.objects.index(stream)))


async def connection(behaviour: Recorder) -> Connection:
    conn = Connection(FakeTransport(), behaviour, {})
    await settle()
    conn.deliver(t.Connected({}))
    await settle()
    return conn


async def test_the_old_stream_closes_before_the_new_one_of_its_id_begins() -> None:
    b = Recorder()
    conn = await connection(b)
    conn.deliver(t.StreamData(9, b"block", False, {}))  # the behaviour is busy from here on
    await settle()
    props = {"ppid": 0, "unordered": False}
    conn.deliver(t.StreamData(3, b"first use", False, props))
    conn.deliver(t.StreamData(3, b"", True, {}))  # its end: our echo ends our side, so it closes both ways
    conn.deliver(t.StreamData(3, b"second use", False, props))  # the peer has reused id 3 meanwhile
    conn.deliver(t.StreamData(3, b"", True, {}))
    b.release.set()
    await settle()
    mine = [e for e in b.log if e[1] == 3]
    assert mine == [
        ("new_stream", 3, "bidi"),
        ("data", 3, 1, b"first use", False),
        ("data", 3, 1, b"", True),
        ("stream_closed", 3, 1),
        ("new_stream", 3, "bidi"),
        ("data", 3, 2, b"second use", False),
        ("data", 3, 2, b"", True),
        ("stream_closed", 3, 2),
    ]
    assert 3 not in conn.streams


async def test_a_waiting_reset_does_not_swallow_the_next_streams_reset() -> None:
    """The peer aborts a stream, reuses its id and aborts again, while the behaviour is busy: both resets arrive,
    each on its own stream. (Each use is announced by data, empty when it carries none.)"""
    b = Recorder()
    conn = await connection(b)
    conn.deliver(t.StreamData(9, b"block", False, {}))
    await settle()
    for code in (5, 6):
        conn.deliver(t.StreamData(3, b"", False, {}))
        conn.deliver(t.StreamReset(3, code))
    b.release.set()
    await settle()
    aborted = [e for e in b.log if e[0] == "peer_send_aborted"]
    assert aborted == [("peer_send_aborted", 3, 1, 5), ("peer_send_aborted", 3, 2, 6)]


async def test_a_stream_announced_one_way_is_one_way() -> None:
    b = Recorder()
    conn = await connection(b)
    b.release.set()
    conn.deliver(t.StreamData(4, b"", False, {"unidirectional": True}))
    conn.deliver(t.StreamData(4, b"only this way", False, {"ppid": 0, "unordered": False}))
    await settle()
    assert b.log[:2] == [("new_stream", 4, "unidi"), ("data", 4, 0, b"only this way", False)]
    stream = conn.streams[4]
    assert stream.send_done and not stream.local
