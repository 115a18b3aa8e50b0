"""SCTP wire codec: round trips, CRC32c, framing errors, RFC 9260 §3.2 unknown-type rules, and fuzzing."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
from typing import Any

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mux.sctp import chunks as C
from mux.sctp import params as P
from mux.sctp.packet import (
    COMMON_HEADER,
    Packet,
    ParseError,
    chunk_action,
    packet_crc,
    parse_packet,
    serialize_packet,
    verify_crc,
)

# Deterministic hypothesis runs: same examples on every run and machine.
hyp = settings(derandomize=True, deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])

KNOWN_CHUNK_TYPES = set(C.CHUNK_PARSERS)
KNOWN_PARAM_TYPES = set(P._PARAM_PARSERS)  # what parses as its own type (an UnknownParam of one would not round-trip)


def crc32c_reference(data: bytes) -> int:
    """Bitwise CRC32c (Castagnoli, reflected poly 0x82F63B78): an oracle independent of the crc32c package."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def roundtrip(chunks: list[Any], vtag: int = 0x01020304) -> Packet:
    wire = serialize_packet(5000, 5001, vtag, chunks)
    assert len(wire) % 4 == 0
    pkt = parse_packet(wire)
    assert (pkt.src_port, pkt.dst_port, pkt.vtag) == (5000, 5001, vtag)
    # Serialising what we parsed gives the same bytes back.
    assert serialize_packet(5000, 5001, vtag, pkt.chunks) == wire
    return pkt


def chunk_bytes(type_: int, flags: int, body: bytes, length: int | None = None) -> bytes:
    n = 4 + len(body) if length is None else length
    raw = struct.pack("!BBH", type_, flags, n) + body
    return raw + b"\x00" * (-len(raw) % 4)


def raw_packet(*chunks: bytes, vtag: int = 7, fix_crc: bool = True) -> bytes:
    buf = bytearray(COMMON_HEADER.pack(1, 2, vtag, 0) + b"".join(chunks))
    if fix_crc:
        struct.pack_into("<I", buf, 8, packet_crc(buf))
    return bytes(buf)


# --- strategies -------------------------------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
small = st.binary(max_size=40)

params_st: st.SearchStrategy[P.Param] = st.one_of(
    st.binary(min_size=4, max_size=4).map(lambda b: P.IPv4AddressParam(socket.inet_ntop(socket.AF_INET, b))),
    st.binary(min_size=16, max_size=16).map(lambda b: P.IPv6AddressParam(socket.inet_ntop(socket.AF_INET6, b))),
    small.map(P.StateCookieParam),
    small.map(P.UnrecognizedParam),
    u32.map(P.CookiePreservativeParam),
    small.map(P.HostNameParam),
    st.lists(u16, max_size=6).map(P.SupportedAddressTypesParam),
    st.lists(u8, max_size=9).map(P.SupportedExtensionsParam),
    st.just(P.ForwardTsnSupportedParam()),
    st.builds(P.UnknownParam, u16.filter(lambda t: t not in KNOWN_PARAM_TYPES), small),
)
causes_st = st.lists(st.builds(P.ErrorCause, u16, small), max_size=4)
gaps_st = st.lists(st.tuples(u16, u16), max_size=40)

chunk_st: st.SearchStrategy[Any] = st.one_of(
    st.builds(
        C.DataChunk,
        u32,
        u16,
        u16,
        u32,
        st.binary(max_size=64),
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(C.InitChunk, u32, u32, u16, u16, u32, st.lists(params_st, max_size=6)),
    st.builds(C.InitAckChunk, u32, u32, u16, u16, u32, st.lists(params_st, max_size=6)),
    st.builds(C.SackChunk, u32, u32, gaps_st, st.lists(u32, max_size=20)),
    st.builds(C.HeartbeatChunk, small),
    st.builds(C.HeartbeatAckChunk, small),
    st.builds(C.AbortChunk, causes_st, st.booleans()),
    st.builds(C.ShutdownChunk, u32),
    st.just(C.ShutdownAckChunk()),
    st.builds(C.ErrorChunk, causes_st),
    st.builds(C.CookieEchoChunk, small),
    st.just(C.CookieAckChunk()),
    st.builds(C.ShutdownCompleteChunk, st.booleans()),
    st.builds(C.ForwardTsnChunk, u32, st.lists(st.tuples(u16, u16), max_size=10)),
    st.builds(C.ReconfigChunk, st.lists(st.builds(P.UnknownParam, u16, small), max_size=4)),
    # only "skip" unknown types here, so the whole packet is decoded
    st.builds(C.UnknownChunk, st.integers(0x80, 0xFF).filter(lambda t: t not in KNOWN_CHUNK_TYPES), u8, small),
)
packet_st = st.lists(chunk_st, min_size=1, max_size=6)


# --- round trips ------------------------------------------------------------------------------------------------


@hyp
@given(packet_st, u32)
def test_roundtrip_random_packets(chunks: list[Any], vtag: int) -> None:
    assert roundtrip(chunks, vtag).chunks == chunks


def test_roundtrip_every_chunk_type() -> None:
    params: list[P.Param] = [
        P.IPv4AddressParam("192.0.2.1"),
        P.IPv6AddressParam("2001:db8::1"),
        P.CookiePreservativeParam(1500),
        P.HostNameParam(b"example.org\x00"),
        P.SupportedAddressTypesParam([5, 6]),
        P.SupportedExtensionsParam([130, 192]),
        P.ForwardTsnSupportedParam(),
        P.UnknownParam(0x8002, b"random-32-bytes-or-so"),
    ]
    ack_params: list[P.Param] = [
        P.StateCookieParam(b"cookie!"),
        P.UnrecognizedParam(P.encode_tlv(0xC123, b"x")),
        *params,
    ]
    chunks: list[Any] = [
        C.DataChunk(1, 2, 3, 51, b"payload", unordered=True, beginning=False, ending=True, immediate=True),
        C.InitChunk(0xDEADBEEF, 131072, 10, 2048, 99, params),
        C.InitAckChunk(0xCAFEBABE, 65536, 5, 6, 7, ack_params),
        C.SackChunk(100, 5000, [(2, 3), (5, 9)], [98, 99]),
        C.HeartbeatChunk(b"hb-info"),
        C.HeartbeatAckChunk(b"hb-info"),
        C.AbortChunk([P.user_abort_cause(b"bye"), P.invalid_stream_cause(9)], t_bit=True),
        C.ShutdownChunk(12345),
        C.ShutdownAckChunk(),
        C.ErrorChunk([P.stale_cookie_cause(1_000_000), P.no_user_data_cause(77)]),
        C.CookieEchoChunk(b"\x01" * 33),
        C.CookieAckChunk(),
        C.ShutdownCompleteChunk(t_bit=True),
        C.ForwardTsnChunk(500, [(1, 10), (2, 20)]),
        C.ReconfigChunk([P.UnknownParam(13, b"\x00\x00\x00\x01" * 3)]),
        C.IDataChunk(9, 4, 1 << 31, 0, 77, b"fragment", unordered=True, beginning=False, immediate=True),
        C.IForwardTsnChunk(600, [(1, False, 10), (2, True, 0xFFFFFFFF)]),
        C.UnknownChunk(0xC7, 0x5A, b"opaque body"),
    ]
    pkt = roundtrip(chunks)
    assert pkt.chunks == chunks
    seen = {c.TYPE for c in pkt.chunks if not isinstance(c, C.UnknownChunk)}
    assert seen == KNOWN_CHUNK_TYPES


@pytest.mark.parametrize("n", range(9))
def test_data_padding(n: int) -> None:
    data = bytes(range(1, n + 1))
    enc = C.DataChunk(7, 1, 2, 3, data).serialize()
    assert len(enc) == 16 + n + (-n % 4)
    assert struct.unpack_from("!H", enc, 2)[0] == 16 + n  # length excludes padding
    assert enc[16 + n :] == b"\x00" * (-n % 4)
    pkt = roundtrip([C.DataChunk(7, 1, 2, 3, data), C.DataChunk(8, 1, 3, 3, data[::-1])])
    assert [c.data for c in pkt.chunks if isinstance(c, C.DataChunk)] == [data, data[::-1]]


def test_empty_data_is_returned_not_rejected() -> None:
    (chunk,) = roundtrip([C.DataChunk(5, 0, 0, 0, b"")]).chunks
    assert isinstance(chunk, C.DataChunk)
    assert chunk.data == b"" and chunk.tsn == 5


def test_data_flag_bits() -> None:
    for flags in range(16):
        wire = raw_packet(chunk_bytes(0, flags, struct.pack("!IHHI", 1, 2, 3, 4) + b"x"))
        (d,) = parse_packet(wire).chunks
        assert isinstance(d, C.DataChunk)
        assert (d.immediate, d.unordered, d.beginning, d.ending) == tuple(bool(flags & b) for b in (8, 4, 2, 1))
        assert d.serialize()[1] == flags


@hyp
@given(st.builds(C.DataChunk, u32, u16, u16, u32, small, st.booleans(), st.booleans(), st.booleans(), st.booleans()))
def test_data_dispatch_parser_matches_inlined_path(chunk: C.DataChunk) -> None:
    # parse_packet decodes DATA inline for speed; the table entry must agree with it.
    enc = chunk.serialize()
    length = struct.unpack_from("!H", enc, 2)[0]
    assert C.CHUNK_PARSERS[0](enc[1], memoryview(enc)[4:length]) == chunk == parse_packet(raw_packet(enc)).chunks[0]


def test_sack_many_gaps_and_dups() -> None:
    gaps = [(2 * i + 2, 2 * i + 2) for i in range(1000)]
    dups = list(range(0xFFFFFF00, 0xFFFFFF00 + 200))
    sack = C.SackChunk(0xFFFFFFF0, 1 << 20, gaps, dups)
    enc = sack.serialize()
    assert len(enc) == 16 + 4 * 1200
    (back,) = roundtrip([sack]).chunks
    assert back == sack


def test_sack_length_must_match_counts() -> None:
    body = struct.pack("!IIHH", 1, 2, 2, 0) + struct.pack("!HH", 1, 1)  # claims 2 gaps, carries 1
    with pytest.raises(ParseError, match="sack"):
        parse_packet(raw_packet(chunk_bytes(3, 0, body)))
    body = struct.pack("!IIHH", 1, 2, 1, 0) + struct.pack("!HH", 1, 1) * 2  # claims 1 gap, carries 2
    with pytest.raises(ParseError, match="sack"):
        parse_packet(raw_packet(chunk_bytes(3, 0, body)))


def test_init_length_excludes_last_param_padding_and_accepts_padded_form() -> None:
    init = C.InitChunk(1, 2, 3, 4, 5, [P.StateCookieParam(b"x")])
    enc = init.serialize()
    assert struct.unpack_from("!H", enc, 2)[0] == 4 + 16 + 5
    assert len(enc) == 28
    # Some senders count the last parameter's padding in the chunk length; that parses to the same chunk.
    padded = enc[:2] + struct.pack("!H", 28) + enc[4:]
    assert parse_packet(raw_packet(padded)).chunks == [init]


def test_preencoded_chunks_build_the_same_packet() -> None:
    chunks: list[Any] = [C.DataChunk(i, 1, i, 0, b"m" * i) for i in range(5)] + [C.SackChunk(3, 4, [(1, 1)], [])]
    assert serialize_packet(1, 2, 3, [c.serialize() for c in chunks]) == serialize_packet(1, 2, 3, chunks)
    mixed: list[Any] = [c.serialize() if i % 2 else c for i, c in enumerate(chunks)]
    assert serialize_packet(1, 2, 3, mixed) == serialize_packet(1, 2, 3, chunks)


def test_accepts_bytearray_and_memoryview() -> None:
    wire = serialize_packet(1, 2, 3, [C.CookieAckChunk(), C.DataChunk(1, 1, 1, 1, b"abc")])
    expected = parse_packet(wire)
    assert parse_packet(bytearray(wire)) == expected
    assert parse_packet(memoryview(wire)) == expected
    assert parse_packet(memoryview(b"\xff" + wire)[1:]) == expected
    assert parse_packet(memoryview(bytes(b for x in wire for b in (x, 0)))[::2]) == expected  # non-contiguous
    assert parse_packet(memoryview(wire).cast("I")) == expected


# --- unknown types and the §3.2 action bits ---------------------------------------------------------------------


def test_unknown_chunk_kept_verbatim() -> None:
    raw = chunk_bytes(0xC9, 0xA5, b"\x01\x02\x03\x04\x05")
    pkt = parse_packet(raw_packet(raw, C.CookieAckChunk().serialize()))
    unk, ack = pkt.chunks
    assert unk == C.UnknownChunk(0xC9, 0xA5, b"\x01\x02\x03\x04\x05")
    assert isinstance(unk, C.UnknownChunk) and unk.serialize() == raw
    assert isinstance(ack, C.CookieAckChunk)
    cause = P.unrecognized_chunk_cause(unk.serialize())
    assert cause.code == P.UNRECOGNIZED_CHUNK and cause.info == raw


def test_unknown_stop_chunk_ends_parsing() -> None:
    # Type 0x3F: "stop processing, discard"; the garbage after it must not make the packet malformed.
    wire = raw_packet(chunk_bytes(0x3F, 0, b"ab"), b"\x00\x01\x00\x02garbage!")
    assert parse_packet(wire).chunks == [C.UnknownChunk(0x3F, 0, b"ab")]


def test_unknown_params_kept_verbatim() -> None:
    raw_unknown = P.encode_tlv(0x4ABC, b"\x09\x08\x07")
    body = struct.pack("!IIHHI", 1, 2, 3, 4, 5) + raw_unknown + P.encode_tlv(12, b"\x00\x05")
    (init,) = parse_packet(raw_packet(chunk_bytes(1, 0, body))).chunks
    assert isinstance(init, C.InitChunk)
    assert init.params == [P.UnknownParam(0x4ABC, b"\x09\x08\x07"), P.SupportedAddressTypesParam([5])]
    assert init.params[0].serialize() == raw_unknown
    assert P.unrecognized_params_cause(raw_unknown).info == raw_unknown


def expected_action(type_value: int, bits: int) -> tuple[bool, bool]:
    """RFC 9260 §3.2 / §3.2.1, spelled out by value ranges rather than by bit tricks."""
    quarter = 1 << (bits - 2)
    if type_value < quarter:
        return (True, False)  # 00: stop, discard
    if type_value < 2 * quarter:
        return (True, True)  # 01: stop, discard, report
    if type_value < 3 * quarter:
        return (False, False)  # 10: skip, continue
    return (False, True)  # 11: skip, continue, report


def test_chunk_action_table() -> None:
    for t in range(256):
        assert chunk_action(t) == expected_action(t, 8), t
    assert chunk_action(0xC1) == (False, True)  # ASCONF: skip and report if unsupported
    assert chunk_action(0x80) == (False, False)  # ASCONF-ACK: skip silently


def test_param_action_table() -> None:
    for t in [*range(0, 0x10000, 0x3F), 0x3FFF, 0x4000, 0x7FFF, 0x8000, 0xBFFF, 0xC000, 0xFFFF]:
        assert P.param_action(t) == expected_action(t, 16), t
    assert P.param_action(0xC000) == (False, True)  # Forward-TSN-Supported
    assert P.param_action(0x8008) == (False, False)  # Supported Extensions


# --- CRC32c -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (bytes(32), 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_rfc3720_vectors(data: bytes, crc: int) -> None:
    assert crc32c_reference(data) == crc
    assert crc32c.crc32c(data) == crc  # the library packet.py relies on
    # packet_crc reads bytes 8..11 as zero (the checksum field), so it matches the vector exactly when they are.
    assert packet_crc(data) == crc32c_reference(data[:8] + bytes(4) + data[12:])
    assert (packet_crc(data) == crc) == (data[8:12] == bytes(4))


@hyp
@given(packet_st, u32)
def test_checksum_is_crc32c_stored_little_endian(chunks: list[Any], vtag: int) -> None:
    wire = serialize_packet(9899, 9899, vtag, chunks)
    zeroed = wire[:8] + bytes(4) + wire[12:]
    assert wire[8:12] == crc32c_reference(zeroed).to_bytes(4, "little")
    assert verify_crc(wire)


def test_every_single_bit_flip_fails_crc() -> None:
    wire = serialize_packet(1, 2, 3, [C.DataChunk(1, 2, 3, 4, b"hello world"), C.SackChunk(1, 2, [(2, 3)], [1])])
    for bit in range(len(wire) * 8):
        bad = bytearray(wire)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert not verify_crc(bad), bit
        with pytest.raises(ParseError, match="crc"):
            parse_packet(bad)
        parse_packet_or_parse_error(bytes(bad), check_crc=False)


def test_verify_crc_short_input() -> None:
    assert not verify_crc(b"")
    assert not verify_crc(bytes(11))


# Captured from usrsctp (/usr/lib/usrsctp/client 127.0.0.1 7 0 9898 9899) by a UDP socket on 127.0.0.1:9899.
# usrsctp filled in the CRC even on loopback, so this is a checksum vector from an independent implementation.
USRSCTP_INIT = bytes.fromhex(
    "e98f000700000000356266940100009c2758705a00020000000a08002d35507580000004c000000480080009c00fc180"
    "82000000800200240be866a8b676e366c6306dc63992e4d46007f44809cd638f18ff670dc15fbb3c8004000600010000"
    "8003000680c10000000c00080005000600060014fd00000000000000000000000000000200050008c000020200060014"
    "00000000000000000000000000000001000500087f000001"
)


def check_usrsctp_init(wire: bytes) -> C.InitChunk:
    assert verify_crc(wire)
    pkt = parse_packet(wire)
    assert pkt.vtag == 0 and pkt.dst_port == 7
    (init,) = pkt.chunks
    assert isinstance(init, C.InitChunk)
    assert init.initiate_tag != 0 and init.num_ostreams > 0 and init.max_instreams > 0
    assert P.ForwardTsnSupportedParam() in init.params
    assert any(isinstance(p, P.SupportedExtensionsParam) and 192 in p.chunk_types for p in init.params)
    assert P.IPv4AddressParam("127.0.0.1") in init.params
    assert serialize_packet(pkt.src_port, pkt.dst_port, pkt.vtag, pkt.chunks) == wire
    return init


def test_usrsctp_captured_init() -> None:
    init = check_usrsctp_init(USRSCTP_INIT)
    assert (init.a_rwnd, init.num_ostreams, init.max_instreams) == (131072, 10, 2048)
    # RFC 4895 AUTH params (0x8002 random, 0x8003 chunk list, 0x8004 hmac algo) are unknown to us: kept raw.
    assert {p.type for p in init.params if isinstance(p, P.UnknownParam)} == {0x8000, 0x8002, 0x8003, 0x8004}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not os.path.exists("/usr/lib/usrsctp/client"), reason="libusrsctp-examples not installed")
def test_usrsctp_live_init() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        cmd = ["/usr/lib/usrsctp/client", "127.0.0.1", "7", "0", str(free_udp_port()), str(port)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wire, _addr = sock.recvfrom(65535)
        finally:
            proc.kill()
            proc.wait()
    check_usrsctp_init(wire)


# --- malformed input --------------------------------------------------------------------------------------------


def parse_packet_or_parse_error(data: bytes, *, check_crc: bool) -> Packet | None:
    try:
        return parse_packet(data, check_crc=check_crc)
    except ParseError as exc:
        assert str(exc)
        return None


MALFORMED = [
    (b"", "too short"),
    (COMMON_HEADER.pack(1, 2, 3, 0), "too short"),
    (raw_packet(struct.pack("!BBH", 11, 0, 3)), "length < 4"),
    (raw_packet(struct.pack("!BBH", 11, 0, 8)), "beyond packet"),
    (raw_packet(chunk_bytes(11, 0, b""), b"\x0b\x00"), "truncated chunk header"),
    (raw_packet(chunk_bytes(10, 0, b"abcde")[:-3]), "padding"),
    (raw_packet(chunk_bytes(0, 3, b"\x00" * 11)), "data"),
    (raw_packet(chunk_bytes(1, 0, b"\x00" * 15)), "init"),
    (raw_packet(chunk_bytes(2, 0, b"\x00" * 16 + b"\x00\x07\x00\x02")), "tlv length"),
    (raw_packet(chunk_bytes(2, 0, b"\x00" * 16 + b"\x00\x07\x00\x09abc")), "tlv beyond"),
    (raw_packet(chunk_bytes(1, 0, b"\x00" * 16 + b"\x00\x05\x00\x07abc")), "ipv4"),
    (raw_packet(chunk_bytes(1, 0, b"\x00" * 16 + b"\x00\x0c\x00\x07abc")), "address types"),
    (raw_packet(chunk_bytes(3, 0, b"\x00" * 11)), "sack"),
    (raw_packet(chunk_bytes(4, 0, b"")), "heartbeat"),
    (raw_packet(chunk_bytes(4, 0, P.encode_tlv(2, b"x"))), "heartbeat"),
    (raw_packet(chunk_bytes(7, 0, b"\x00" * 3)), "shutdown"),
    (raw_packet(chunk_bytes(8, 0, b"\x00" * 4)), "shutdown ack"),
    (raw_packet(chunk_bytes(11, 0, b"\x00" * 4)), "cookie ack"),
    (raw_packet(chunk_bytes(14, 0, b"\x00" * 4)), "shutdown complete"),
    (raw_packet(chunk_bytes(192, 0, b"\x00" * 6)), "forward tsn"),
    (raw_packet(chunk_bytes(6, 0, b"\x00\x0c\x00")), "truncated tlv"),
]


@pytest.mark.parametrize(("wire", "reason"), MALFORMED, ids=[f"{i}-{r}" for i, (_w, r) in enumerate(MALFORMED)])
def test_malformed_packets_raise_parse_error(wire: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_packet(wire)


@hyp
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_only_raise_parse_error(data: bytes, check_crc: bool) -> None:
    parse_packet_or_parse_error(data, check_crc=check_crc)


@hyp
@given(st.binary(max_size=120))
def test_arbitrary_chunk_area_with_valid_crc(body: bytes) -> None:
    # A correct checksum makes the parser walk whatever chunk area a hostile peer sends.
    pkt = parse_packet_or_parse_error(raw_packet(body), check_crc=True)
    if pkt is not None:
        assert pkt.chunks


mutation_st = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]), u16, u8), min_size=1, max_size=4
)


@hyp
@given(packet_st, mutation_st, st.booleans())
def test_mutated_packets_only_raise_parse_error(
    chunks: list[Any], mutations: list[tuple[str, int, int]], refresh_crc: bool
) -> None:
    buf = bytearray(serialize_packet(1, 2, 3, chunks))
    for op, pos, val in mutations:
        i = pos % (len(buf) + 1)
        if op == "flip" and i < len(buf):
            buf[i] ^= 1 << (val % 8)
        elif op == "set" and i < len(buf):
            buf[i] = val
        elif op == "truncate":
            del buf[i:]
        elif op == "insert":
            buf[i:i] = bytes([val]) * (val % 9)
        elif op == "delete":
            del buf[i : i + 1 + val % 8]
    if refresh_crc and len(buf) >= 12:
        struct.pack_into("<I", buf, 8, packet_crc(buf))
    for check in (False, True):
        pkt = parse_packet_or_parse_error(bytes(buf), check_crc=check)
        if pkt is not None:
            # Whatever survives parsing re-encodes without error.
            serialize_packet(pkt.src_port, pkt.dst_port, pkt.vtag, pkt.chunks)


# --- error causes -----------------------------------------------------------------------------------------------


def test_cause_builders_encode_per_rfc() -> None:
    assert P.invalid_stream_cause(0x1234) == P.ErrorCause(1, b"\x12\x34\x00\x00")
    assert P.missing_param_cause([7, 9]) == P.ErrorCause(2, b"\x00\x00\x00\x02\x00\x07\x00\x09")
    assert P.stale_cookie_cause(70_000) == P.ErrorCause(3, (70_000).to_bytes(4, "big"))
    assert P.out_of_resource_cause() == P.ErrorCause(4, b"")
    assert P.no_user_data_cause(0xFFFFFFFE) == P.ErrorCause(9, b"\xff\xff\xff\xfe")
    assert P.user_abort_cause(b"done") == P.ErrorCause(12, b"done")
    assert P.protocol_violation_cause(b"bad tsn") == P.ErrorCause(13, b"bad tsn")
    all_causes = [
        P.invalid_stream_cause(3),
        P.missing_param_cause([7]),
        P.stale_cookie_cause(5),
        P.out_of_resource_cause(),
        P.unrecognized_chunk_cause(chunk_bytes(0xFF, 0, b"q")),
        P.unrecognized_params_cause(P.encode_tlv(0xFFFF, b"zz")),
        P.no_user_data_cause(1),
        P.user_abort_cause(b"x" * 5),
        P.protocol_violation_cause(b""),
    ]
    (abort,) = roundtrip([C.AbortChunk(all_causes)]).chunks
    assert abort == C.AbortChunk(all_causes)
    assert P.parse_causes(memoryview(P.serialize_causes(all_causes))) == all_causes


def test_describe() -> None:
    assert P.describe(P.invalid_stream_cause(42)) == "invalid_stream stream=42"
    assert P.describe(P.no_user_data_cause(7)) == "no_user_data tsn=7"
    assert P.describe(P.missing_param_cause([7, 9])) == "missing_mandatory_parameter types=[7, 9]"
    assert "goodbye" in P.describe(P.user_abort_cause(b"goodbye"))
    assert P.describe(P.ErrorCause(999, b"")) == "cause_999"


@hyp
@given(u16, st.binary(max_size=300))
def test_describe_never_raises(code: int, info: bytes) -> None:
    text = P.describe(P.ErrorCause(code, info))
    assert isinstance(text, str) and text
    assert len(text) < 300


def test_the_header_crc_cache_stays_bounded_whatever_tags_a_peer_sprays() -> None:
    """The CRC state of a packet's first 12 bytes is cached by its ports and tag, which any peer chooses: packets
    under ever new tags must neither grow the cache past its bound nor get a wrong verdict from it."""
    from mux.sctp import packet as pk

    chunk = C.DataChunk(1, 0, 0, 0, b"payload")
    for vtag in range(pk._HEAD_CRC_MAX + 50):
        wire = serialize_packet(5000, 5001, vtag, [chunk])
        assert parse_packet(wire).vtag == vtag
        assert len(pk._head_crc) <= pk._HEAD_CRC_MAX
        if vtag % 997 == 0:  # a corrupted one under a cached header is still refused
            bad = bytearray(wire)
            bad[-1] ^= 0x40
            with pytest.raises(ParseError, match="crc"):
                parse_packet(bytes(bad))
