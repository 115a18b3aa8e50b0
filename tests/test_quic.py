"""QUIC specifics: a plain aioquic peer, fin, datagrams, backpressure, options."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio import connect as aioquic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import DatagramFrameReceived, QuicEvent, StreamDataReceived
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mux import ConnectionClosed, connect
from mux.quic.certs import self_signed
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener


class RawEchoClient(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: dict[int, bytearray] = {}
        self.ended: dict[int, asyncio.Event] = {}
        self.datagrams: asyncio.Queue[bytes] = asyncio.Queue()

    def ended_event(self, stream_id: int) -> asyncio.Event:
        return self.ended.setdefault(stream_id, asyncio.Event())

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self.received.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.end_stream:
                self.ended_event(event.stream_id).set()
        elif isinstance(event, DatagramFrameReceived):
            self.datagrams.put_nowait(event.data)


async def test_plain_aioquic_client_gets_echo(make_server: ServerFactory) -> None:
    """Done-means: a client knowing only the ALPN and the port gets streams and datagrams echoed."""
    server = await make_server("behaviours.echo:Echo", [listener("quic", alpn=["echo"])])
    host, port = server.listener("quic").address[:2]
    config = QuicConfiguration(
        is_client=True, alpn_protocols=["echo"], verify_mode=ssl.CERT_NONE, max_datagram_frame_size=65536
    )
    async with aioquic_connect(host, port, configuration=config, create_protocol=RawEchoClient) as client:
        assert isinstance(client, RawEchoClient)
        payloads = {}
        for i in range(3):
            stream_id = client._quic.get_next_available_stream_id()
            payloads[stream_id] = bytes([65 + i]) * (100_000 * (i + 1))
            client._quic.send_stream_data(stream_id, payloads[stream_id], end_stream=True)
        client._quic.send_datagram_frame(b"ping-datagram")
        client.transmit()
        for stream_id, payload in payloads.items():
            await asyncio.wait_for(client.ended_event(stream_id).wait(), 10)
            assert bytes(client.received[stream_id]) == payload
        assert await asyncio.wait_for(client.datagrams.get(), 5) == b"ping-datagram"


async def test_fin_echo_and_stream_closed(make_server: ServerFactory) -> None:
    server = await make_server("tests.apps:Recording", [listener("quic")])
    url, options = client_target(server, "quic")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    await stream.send(b"last words", fin=True)
    await asyncio.wait_for(client.fin_event(stream.id).wait(), 5)
    assert bytes(client.data[stream.id]) == b"last words"
    await asyncio.sleep(0.05)
    (server_conn,) = server.pool.connections
    assert f"stream_closed:{stream.id}" in tb.LOG[server_conn.id]
    conn.close()


async def test_datagrams_both_ways(make_server: ServerFactory) -> None:
    server = await make_server("tests.apps:Recording", [listener("quic")])
    url, options = client_target(server, "quic")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    conn.send_datagram(b"d1")
    assert (await client.next("dgram"))[1] == b"d1"
    conn.close()


async def test_backpressure_bounds_the_send_queue(make_server: ServerFactory) -> None:
    high_water = 128 * 1024
    server = await make_server("tests.apps:Producer", [listener("quic", ideal_send_buffer_size=high_water)])
    url, options = client_target(server, "quic")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    total = 8 * 1024 * 1024
    tb.Producer.max_buffered = 0
    await stream.send(str(total).encode(), fin=True)
    await asyncio.wait_for(client.fin_event(stream.id).wait(), 30)
    assert len(client.data[stream.id]) == total
    # the producer never got more than one write ahead of the high-water mark
    assert 0 < tb.Producer.max_buffered <= high_water + 65536
    conn.close()


async def test_streams_available_and_peer_needs_streams(make_server: ServerFactory) -> None:
    server = await make_server("tests.apps:Recording", [listener("quic")])
    url, options = client_target(server, "quic")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    event = await client.next("streams_available")
    assert event[1] == 128 and event[2] == 128  # aioquic's default stream limits
    streams = [conn.open_stream() for _ in range(130)]  # two beyond the server's limit
    for stream in streams:
        await stream.send(b"x")
    await asyncio.sleep(0.3)
    (server_conn,) = server.pool.connections
    assert "peer_needs_streams:0" in tb.LOG[server_conn.id]
    conn.close()


async def test_idle_timeout_is_a_transport_shutdown(make_server: ServerFactory) -> None:
    server = await make_server("tests.apps:Recording", [listener("quic", idle_timeout_ms=300)])
    url, options = client_target(server, "quic")
    client = tb.Client()
    await connect(client, url, options={**options, "idle_timeout_ms": 300})
    event = await client.next("transport_shutdown", timeout=5)
    assert event[1]["error"] == "idle_timeout"
    await client.next("closed")
    await asyncio.sleep(0.1)
    assert server.pool.info()["total"]["closed"] == 1


async def test_keep_alive_keeps_an_idle_connection(make_server: ServerFactory) -> None:
    server = await make_server("tests.apps:Recording", [listener("quic", idle_timeout_ms=400)])
    url, options = client_target(server, "quic")
    client = tb.Client()
    conn = await connect(client, url, options={**options, "idle_timeout_ms": 400, "keep_alive_interval_ms": 100})
    await asyncio.sleep(1.2)
    assert conn.state == "connected"
    conn.close()


async def test_retry_resumption_and_qlog(make_server: ServerFactory, tmp_path: Path) -> None:
    qlog = tmp_path / "qlog"
    server = await make_server("tests.apps:Recording", [listener("quic", retry=True, qlog_dir=str(qlog))])
    url, options = client_target(server, "quic")
    ticket = tmp_path / "ticket"
    for attempt in range(2):
        client = tb.Client()
        conn = await connect(client, url, options={**options, "session_ticket_file": str(ticket)})
        props = (await client.next("connected"))[1]
        assert props["session_resumed"] is (attempt == 1)
        await asyncio.sleep(0.05)  # the ticket arrives after the handshake
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 5)
    await asyncio.sleep(0.3)
    assert list(qlog.glob("*.qlog")), "no qlog trace written"


def _ca_and_client_cert(tmp_path: Path) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "alice.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "alice.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp_path / "ca.pem", tmp_path / "alice.pem", tmp_path / "alice.key"


async def test_client_certificates_required(make_server: ServerFactory, tmp_path: Path) -> None:
    ca, cert, key = _ca_and_client_cert(tmp_path)
    server = await make_server("tests.apps:Recording", [listener("quic", verify="required", cacertfile=str(ca))])
    url, options = client_target(server, "quic")
    # The client's side of the handshake completes before the server has checked its (missing)
    # certificate, so the refusal arrives as a close with TLS alert certificate_required (116).
    anonymous = tb.Client()
    try:
        conn = await connect(anonymous, url, options=options)
    except ConnectionClosed:
        pass
    else:
        props = await asyncio.wait_for(conn.wait_closed(), 5)
        assert props["error_code"] == 0x100 + 116, props
    client = tb.Client()
    conn = await connect(client, url, options={**options, "certfile": str(cert), "keyfile": str(key)})
    await asyncio.sleep(0.1)
    assert conn.state == "connected"
    (_server_conn,) = [c for c in server.pool.connections if c.state == "connected"]
    stream = conn.open_stream()
    await stream.send(b"authenticated")
    assert (await client.next("data"))[2] == b"authenticated"
    conn.close()


async def test_client_verifies_the_server(make_server: ServerFactory, tmp_path: Path) -> None:
    server = await make_server("tests.apps:Recording", [listener("quic")])
    url, _options = client_target(server, "quic")
    certfile, _ = self_signed("127.0.0.1")
    conn = await connect(tb.Client(), url, options={"alpn": ["test"], "cacertfile": str(certfile)})
    assert conn.state == "connected"
    conn.close()
    ca, _, _ = _ca_and_client_cert(tmp_path)
    with pytest.raises(ConnectionClosed):
        await connect(tb.Client(), url, options={"alpn": ["test"], "cacertfile": str(ca)}, timeout=5)


async def test_a_send_racing_the_peers_stop_sending_is_a_transport_error_not_a_crash(
    make_server: ServerFactory,
) -> None:
    """The peer's STOP_SENDING reaches aioquic (which resets our side of the stream at once) before the behaviour
    hears of it: a send in between must be the TransportError ``stream.send`` documents. aioquic raises
    RuntimeError there, which went through as a crash of the behaviour's connection."""
    from mux.transport import TransportError

    server = await make_server("tests.apps:Recording", [listener("quic")])
    url, options = client_target(server, "quic")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    await stream.send(b"hello")
    await asyncio.wait_for(_echoed(client, stream.id, 5), 5)
    stream.stop_sending(9)
    event = await client.next("peer_send_aborted")  # the server's aioquic has reset its side
    assert event[1:] == (stream.id, 9)
    (server_conn,) = server.pool.connections
    with pytest.raises(TransportError):
        server_conn._tconn.send(stream.id, b"late", False, None)  # as a behaviour's send would, unaware yet
    conn.close()


async def _echoed(client: tb.Client, stream_id: int, n: int) -> None:
    while len(client.data.get(stream_id, b"")) < n:
        await asyncio.sleep(0.01)


def test_connections_share_their_frame_handler_epoch_sets() -> None:
    """aioquic makes each connection's ~30 frame-type epoch sets afresh; mux.quic.core makes them once, shared,
    with the same contents (which epochs may carry which frame is a protocol rule, RFC 9000 §12.4)."""
    from aioquic import tls
    from aioquic.quic.connection import QuicConnection

    from mux.quic.core import MuxQuicConnection

    config = QuicConfiguration(is_client=True, alpn_protocols=["echo"])
    one, two = MuxQuicConnection(configuration=config), QuicConnection(configuration=config)
    tables = [conn._QuicConnection__frame_handlers for conn in (one, two)]  # type: ignore[attr-defined]
    assert tables[0].keys() == tables[1].keys()
    for frame_type, (_, epochs) in tables[0].items():
        assert epochs is tables[1][frame_type][1]
    every = {tls.Epoch.INITIAL, tls.Epoch.ZERO_RTT, tls.Epoch.HANDSHAKE, tls.Epoch.ONE_RTT}
    assert tables[0][0x00][1] == every  # PADDING: in every packet type
    assert tables[0][0x08][1] == {tls.Epoch.ZERO_RTT, tls.Epoch.ONE_RTT}  # STREAM: 0-RTT and 1-RTT only


def test_a_finished_connection_is_freed_without_the_cycle_collector() -> None:
    """aioquic's connection references itself through its frame-handler table, TLS and packet-protection callbacks
    and recovery; once terminated, ``release`` drops those, so it is freed when the last outside reference goes
    (not at the next full collection, which would walk it), and its ``stats()`` still read."""
    import gc
    import weakref

    from mux.quic.connection import QuicTransportConnection
    from mux.quic.core import MuxQuicConnection

    certfile, keyfile = self_signed("127.0.0.1")
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
    server_config.load_cert_chain(certfile, keyfile)
    client = aioquic_connection(QuicConfiguration(is_client=True, alpn_protocols=["echo"], verify_mode=ssl.CERT_NONE))
    server_addr, client_addr = ("127.0.0.1", 4433), ("127.0.0.1", 50000)
    now = 1.0
    client.connect(server_addr, now=now)
    first = client.datagrams_to_send(now)
    server = MuxQuicConnection(
        configuration=server_config, original_destination_connection_id=_initial_dcid(first[0][0])
    )
    tconn = QuicTransportConnection(server, None, high_water=1 << 20)  # type: ignore[arg-type]

    def exchange(server: MuxQuicConnection) -> None:
        for _ in range(10):
            moved = False
            for data, _ in client.datagrams_to_send(now):
                server.receive_datagram(data, client_addr, now)
                moved = True
            for data, _ in server.datagrams_to_send(now):
                client.receive_datagram(data, server_addr, now)
                moved = True
            if not moved:
                return

    for data, _ in first:
        server.receive_datagram(data, client_addr, now)
    exchange(server)
    assert server._handshake_complete
    client.close(error_code=0)
    exchange(server)
    now += 60.0  # past the draining period
    server.handle_timer(now)
    assert server._state.name == "TERMINATED"
    tconn.on_finished()  # what the driver calls once the connection is finished: it releases the core
    assert tconn.stats()["state"] == "closed"
    ref = weakref.ref(server)
    gc.collect()
    gc.disable()
    try:
        del server, tconn
        assert ref() is None, [type(r).__name__ for r in gc.get_referrers(ref())]
    finally:
        gc.enable()


def aioquic_connection(config: QuicConfiguration) -> Any:
    from aioquic.quic.connection import QuicConnection

    return QuicConnection(configuration=config)


def _initial_dcid(datagram: bytes) -> bytes:
    """The destination connection ID of a long-header packet (RFC 9000 §17.2)."""
    length = datagram[5]
    return datagram[6 : 6 + length]
