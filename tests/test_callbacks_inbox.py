"""The mailbox's side of the callbacks issue 10 adds, against the in-memory transport of test_connection_inbox:
stream events of a stream never seen, events a transport emits rarely, and what a hostile peer may repeat."""

from __future__ import annotations

from typing import Any

from mux import ConnectionBehaviour, Stream
from mux import transport as t
from mux.connection import Connection
from tests.test_connection_inbox import Busy, FakeTransport, settle


class ServerSide(FakeTransport):
    """QUIC's stream ids as a server sees them: odd ids are ours (RFC 9000 §2.1)."""

    def stream_is_local(self, stream_id: int) -> bool:
        return bool(stream_id & 1)

    def open_stream(self, unidirectional: bool = False) -> int:
        return 1


class Recorder(Busy):
    """Busy, recording every stream event and the new callbacks by name."""

    def init(self, opts: dict[str, Any]) -> None:
        super().init(opts)
        self.log: list[tuple[Any, ...]] = []

    def new_stream(self, stream: Stream, props: dict[str, Any]) -> None:
        self.log.append(("new_stream", stream.id, stream.local))

    def peer_send_aborted(self, stream: Stream, error_code: int) -> None:
        self.log.append(("peer_send_aborted", stream.id, error_code))

    def peer_receive_aborted(self, stream: Stream, error_code: int) -> None:
        self.log.append(("peer_receive_aborted", stream.id, error_code))

    def nst_received(self, conn: Connection, ticket: bytes) -> None:
        self.log.append(("nst_received", ticket))

    def local_address_changed(self, conn: Connection, address: Any) -> None:
        self.log.append(("local_address_changed", address))

    def dgram_state_changed(self, conn: Connection, props: dict[str, Any]) -> None:
        self.log.append(("dgram_state_changed", props))


async def connection(behaviour: ConnectionBehaviour, tconn: FakeTransport) -> Connection:
    conn = Connection(tconn, behaviour, {})
    await settle()
    conn.deliver(t.Connected({}))
    await settle()
    return conn


async def test_a_reset_or_stop_sending_on_an_unseen_peer_stream_announces_it_first() -> None:
    b = Recorder()
    conn = await connection(b, ServerSide())
    b.release.set()
    conn.deliver(t.StreamReset(0, 3))
    conn.deliver(t.StopSending(4, 9))
    await settle()
    conn.deliver(t.StopSending(4, 9))  # now known: no second new_stream
    await settle()
    assert b.log == [
        ("new_stream", 0, False),
        ("peer_send_aborted", 0, 3),
        ("new_stream", 4, False),
        ("peer_receive_aborted", 4, 9),
        ("peer_receive_aborted", 4, 9),
    ]
    assert conn.streams[4].recv_done is False and conn.streams[0].recv_done is True


async def test_a_stop_sending_on_one_of_our_finished_streams_is_not_a_new_stream() -> None:
    """Our stream, done both ways, is forgotten; a late STOP_SENDING on it must not resurrect it as the peer's."""
    b = Recorder()
    conn = await connection(b, ServerSide())
    b.release.set()
    stream = conn.open_stream()
    stream.send(b"bye", fin=True)
    conn.deliver(t.StreamData(stream.id, b"", True))
    await settle()
    assert stream.id not in conn.streams
    conn.deliver(t.StopSending(stream.id, 1))
    conn.deliver(t.StreamReset(stream.id, 2))
    await settle()
    assert b.log == [], b.log
    assert stream.id not in conn.streams


async def test_a_flood_of_session_tickets_waits_as_one() -> None:
    """A hostile server may send NewSessionTicket after NewSessionTicket: while the behaviour is busy, one
    ``nst_received`` waits, with the newest ticket."""
    b = Recorder()
    conn = await connection(b, FakeTransport())
    conn.deliver(t.StreamData(0, b"block", False))
    await settle()
    for i in range(10_000):
        conn.deliver(t.TicketReceived(b"ticket %d" % i))
        conn.deliver(t.DatagramStateChanged({"dgram_send_enabled": True, "dgram_max_len": i}))
    assert len(conn._mailbox) == 2
    b.release.set()
    await settle()
    assert b.log == [
        ("new_stream", 0, False),
        ("nst_received", b"ticket 9999"),
        ("dgram_state_changed", {"dgram_send_enabled": True, "dgram_max_len": 9999}),
    ]


async def test_local_address_changed_reaches_the_behaviour() -> None:
    b = Recorder()
    conn = await connection(b, FakeTransport())
    b.release.set()
    conn.deliver(t.LocalAddressChanged(("10.0.0.2", 4433)))
    await settle()
    assert b.log == [("local_address_changed", ("10.0.0.2", 4433))]


async def test_handles_names_only_the_callbacks_a_behaviour_overrides() -> None:
    conn = await connection(Recorder(), FakeTransport())
    assert conn.handles("nst_received") and conn.handles("stream_data")
    assert not conn.handles("peer_cert_received") and not conn.handles("resumed")
    plain = await connection(ConnectionBehaviour(), FakeTransport())
    assert not plain.handles("nst_received") and not plain.handles("no_such_callback")
