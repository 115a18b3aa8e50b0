"""RFC 9653 zero checksum in the SCTP endpoint (the hook WebRTC's listener turns on, since DTLS checks integrity):
offered back only to an INIT that offers it, and a zero checksum field accepted only when turned on."""

from __future__ import annotations

from mux.sctp.chunks import CookieEchoChunk, InitAckChunk, InitChunk
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import Endpoint
from mux.sctp.packet import ZERO_CHECKSUM_ACCEPTABLE, parse_packet, serialize_packet, zero_checksum_offered
from mux.sctp.params import StateCookieParam, UnknownParam

PEER = ("127.0.0.1", 40000)
OFFER = UnknownParam(ZERO_CHECKSUM_ACCEPTABLE, (1).to_bytes(4, "big"))


def init_ack(endpoint: Endpoint, params: list) -> InitAckChunk:  # type: ignore[type-arg]
    init = InitChunk(0x1234, 65536, 8, 8, 1000, params)
    endpoint.receive_datagram(serialize_packet(5000, 5000, 0, [init]), PEER, 0.0)
    ((data, _),) = endpoint.datagrams_to_send(0.0)
    chunk = parse_packet(data).chunks[0]
    assert isinstance(chunk, InitAckChunk)
    return chunk


def zeroed(packet: bytes) -> bytes:
    return packet[:8] + b"\x00\x00\x00\x00" + packet[12:]


def cookie_echo(ack: InitAckChunk) -> bytes:
    cookie = next(p for p in ack.params if isinstance(p, StateCookieParam))
    return serialize_packet(5000, 5000, ack.initiate_tag, [CookieEchoChunk(cookie.cookie)])


def test_offered_back_and_zero_checksums_accepted() -> None:
    endpoint = Endpoint(SctpConfig(), local_port=5000, zero_checksum=True)
    ack = init_ack(endpoint, [OFFER])
    assert zero_checksum_offered(ack.params)
    assert endpoint.receive_datagram(zeroed(cookie_echo(ack)), PEER, 0.0) is not None, "a zero checksum is taken"
    assert endpoint.stats["accepted"] == 1


def test_not_offered_to_an_init_without_it() -> None:
    endpoint = Endpoint(SctpConfig(), local_port=5000, zero_checksum=True)
    assert not zero_checksum_offered(init_ack(endpoint, []).params)


def test_off_by_default_a_zero_checksum_is_a_bad_one() -> None:
    endpoint = Endpoint(SctpConfig(), local_port=5000)
    ack = init_ack(endpoint, [OFFER])
    assert not zero_checksum_offered(ack.params), "plain UDP has no other integrity check: never offered"
    assert endpoint.receive_datagram(zeroed(cookie_echo(ack)), PEER, 0.0) is None
    assert endpoint.stats["bad_crc"] == 1 and endpoint.stats["accepted"] == 0
