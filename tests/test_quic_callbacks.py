"""quicer's TLS callbacks, which only QUIC has: ``resumed``, ``nst_received``, ``peer_cert_received``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mux import connect
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener
from tests.test_quic import _ca_and_client_cert


def tickets_held(server: object) -> int:
    """Session tickets the QUIC listener issued and still holds (its bounded store)."""
    return len(server.listener("quic")._tickets._tickets)  # type: ignore[attr-defined]


async def test_a_ticket_from_nst_received_resumes_and_the_server_hears_resumed(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await make_server("tests.apps:Recording", [listener("quic")])
    url, options = client_target(server, "quic")
    first = tb.TicketClient()
    conn = await connect(first, url, options=options)
    _, ticket = await first.next("nst_received")
    assert isinstance(ticket, bytes) and ticket
    (fresh,) = server.pool.connections
    conn.close()
    await asyncio.wait_for(fresh.wait_closed(), 5)
    (tmp_path / "ticket").write_bytes(ticket)  # the format session_ticket_file reads
    second = tb.Client()
    conn = await connect(second, url, options={**options, "session_ticket_file": str(tmp_path / "ticket")})
    _, props = await second.next("connected")
    assert props["session_resumed"] is True
    await asyncio.sleep(0.05)
    (resumed,) = server.pool.connections
    assert "resumed:False" not in tb.LOG[fresh.id], tb.LOG[fresh.id]
    # on the resumed connection: before ``connected``, with no session data (mux puts none in tickets)
    log = tb.LOG[resumed.id]
    assert log.index("resumed:False") < log.index("connected"), log
    conn.close()
    await asyncio.wait_for(conn.wait_closed(), 5)


async def test_tickets_are_issued_only_to_clients_that_keep_them(make_server: ServerFactory) -> None:
    """A client that neither handles ``nst_received`` nor names a ticket file does not offer to resume, so the
    server spends nothing on a ticket for it."""
    server = await make_server("tests.apps:Recording", [listener("quic")])
    url, options = client_target(server, "quic")
    conn = await connect(tb.Client(), url, options=options)
    stream = conn.open_stream()
    await stream.send(b"ping")
    await asyncio.sleep(0.1)
    assert tickets_held(server) == 0
    conn.close()
    keeper = tb.TicketClient()
    conn = await connect(keeper, url, options=options)
    await keeper.next("nst_received")
    assert tickets_held(server) == 1
    conn.close()


async def test_a_server_asking_for_client_certificates_gets_peer_cert_received(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    ca, cert, key = _ca_and_client_cert(tmp_path)
    server = await make_server("tests.apps:Recording", [listener("quic", verify="optional", cacertfile=str(ca))])
    url, options = client_target(server, "quic")
    anonymous = await connect(tb.Client(), url, options=options)
    client = tb.Client()
    conn = await connect(client, url, options={**options, "certfile": str(cert), "keyfile": str(key)})
    await client.next("connected")
    await asyncio.sleep(0.05)
    by_conn = {c.id: c for c in server.pool.connections}
    assert len(by_conn) == 2
    anon_id, alice_id = sorted(by_conn)
    assert "peer_cert_received" not in tb.LOG[anon_id], tb.LOG[anon_id]
    log = tb.LOG[alice_id]
    assert log.index("peer_cert_received") < log.index("connected"), log
    alice = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
    assert tb.PROPS[alice_id]["peer_cert_received"] == [alice]
    anonymous.close()
    conn.close()
