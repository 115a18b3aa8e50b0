"""The DTLS handshake behaviour: two in-memory endpoints (a client and mux's server) through the Membrane-shaped
interface, the fingerprint check, retransmission of a lost flight, and application data both ways."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mux.webrtc import handshake as hs
from mux.webrtc.dtls import Certificate, DtlsError, DtlsHandshake, make_context


def pair(server_sees: str | None = None) -> tuple[Any, Any, Certificate, Certificate]:
    server_cert, client_cert = Certificate.generate(), Certificate.generate()
    module = DtlsHandshake()
    server = module.init(
        {
            "context": make_context(server_cert),
            "server": True,
            "remote_fingerprint": server_sees or client_cert.fingerprint,
        }
    )
    client = module.init(
        {"context": make_context(client_cert), "server": False, "remote_fingerprint": server_cert.fingerprint}
    )
    assert isinstance(server, hs.Started) and isinstance(client, hs.Started)
    return server.state, client.state, server_cert, client_cert


def run(server: Any, client: Any, drop_first_server_flight: bool = False) -> tuple[hs.Channel, hs.Channel]:
    module = DtlsHandshake()
    assert isinstance(module.connection_ready(server), hs.Ok) and not module.connection_ready(server).packets
    first = module.connection_ready(client)
    assert isinstance(first, hs.Ok) and first.packets, "the client starts with its ClientHello"
    to_server, to_client = list(first.packets), []
    done: dict[str, hs.Channel] = {}
    dropped = False
    for _ in range(20):
        for packet in to_server:
            result = module.recv_from_peer(server, packet)
            if isinstance(result, (hs.Finished, hs.FinishedWithPackets)):
                done["server"] = result.data
            out = result.packets if isinstance(result, (hs.Ok, hs.FinishedWithPackets)) else []
            if drop_first_server_flight and not dropped and out:
                dropped = True
                out = []
                wait = module.get_timer(server)
                assert wait is not None and 0 < wait <= 1.0, "a server waiting on its flight has a timer"
                time.sleep(wait + 0.01)  # OpenSSL keeps its own clock: the flight is due once it ran out
                again = module.handle_timer(server, 0.0)
                assert isinstance(again, hs.Ok)
                out = again.packets
            to_client.extend(out)
        to_server = []
        for packet in to_client:
            result = module.recv_from_peer(client, packet)
            if isinstance(result, (hs.Finished, hs.FinishedWithPackets)):
                done["client"] = result.data
            to_server.extend(result.packets if isinstance(result, (hs.Ok, hs.FinishedWithPackets)) else [])
        to_client = []
        if len(done) == 2 and not to_server:
            break
    assert set(done) == {"server", "client"}
    return done["server"], done["client"]


def test_handshake_then_application_data_both_ways() -> None:
    server, client, _, _ = pair()
    s_channel, c_channel = run(server, client)
    record = c_channel.seal(b"an SCTP packet")
    assert record != b"an SCTP packet" and record[0] == 23  # a DTLS application_data record
    data, _ = s_channel.open(record)
    assert data == [b"an SCTP packet"]
    data, _ = c_channel.open(s_channel.seal(b"x" * 1100))
    assert data == [b"x" * 1100]
    assert server.peer_certificate is not None  # what the fingerprint was checked against
    assert s_channel.open(b"\x17\xfe\xfd" + b"\x00" * 40)[0] == [], "a forged record is dropped"
    forged = b"\x17\xfe\xfd\x00\x01" + b"\x00\x00\x00\x00\x00\x09" + (40).to_bytes(2, "big") + b"\x5a" * 40
    assert s_channel.open(forged) == ([], []), "so is one framed as a single application_data record"
    assert s_channel.open(c_channel.seal(b"after"))[0] == [b"after"], "and the channel goes on"
    closing = s_channel.close()
    assert closing, "close_notify"
    c_channel.open(closing[0])


def test_a_lost_flight_is_sent_again() -> None:
    server, client, _, _ = pair()
    run(server, client, drop_first_server_flight=True)


def test_a_certificate_not_matching_the_offer_fails() -> None:
    other = Certificate.generate()
    server, client, _, _ = pair(server_sees=other.fingerprint)
    with pytest.raises(DtlsError, match="fingerprint"):
        run(server, client)


def test_the_none_handshake_is_finished_at_once() -> None:
    started = hs.NoHandshake().init({})
    assert isinstance(started, hs.Finished)
    assert started.data.open(started.data.seal(b"clear")) == ([b"clear"], [])
