"""STUN as ICE-lite uses it, against the test vectors of RFC 5769 (§2.1 to §2.3)."""

from __future__ import annotations

from mux.webrtc import stun

PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"


def hexbytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


REQUEST = hexbytes("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf""")
IPV4_RESPONSE = hexbytes("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96""")
IPV6_RESPONSE = hexbytes("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c""")


def test_rfc5769_request_checks_and_reads() -> None:
    msg = stun.parse(REQUEST)
    assert msg is not None and msg.type == stun.BINDING_REQUEST
    assert msg.get(stun.USERNAME) == b"evtj:h6vY"
    assert msg.get(stun.PRIORITY) == bytes.fromhex("6e0001ff")
    assert msg.has(stun.ICE_CONTROLLED) and not msg.has(stun.USE_CANDIDATE)
    assert msg.check_fingerprint()
    assert msg.check_integrity(PASSWORD)
    assert not msg.check_integrity(b"not the password")


def test_rfc5769_responses_check_and_decode() -> None:
    for raw, address in (
        (IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ):
        msg = stun.parse(raw)
        assert msg is not None and msg.type == stun.BINDING_SUCCESS
        assert msg.check_fingerprint() and msg.check_integrity(PASSWORD)
        mapped = msg.get(stun.XOR_MAPPED_ADDRESS)
        assert mapped is not None
        assert stun.read_xor_address(mapped, msg.transaction_id) == address


def test_builder_writes_the_rfc5769_responses_byte_for_byte() -> None:
    for raw, address in (
        (IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ):
        tid = raw[8:20]
        attrs = [(stun.SOFTWARE, b"test vector"), (stun.XOR_MAPPED_ADDRESS, stun.xor_address(address, tid))]
        assert stun.build(stun.BINDING_SUCCESS, tid, attrs, key=PASSWORD, pad=b" ") == raw


def test_binding_success_answers_with_the_source_address_and_signs() -> None:
    request = stun.parse(REQUEST)
    assert request is not None
    answer = stun.parse(stun.binding_success(request, ("127.0.0.1", 5000), PASSWORD))
    assert answer is not None and answer.type == stun.BINDING_SUCCESS
    assert answer.transaction_id == request.transaction_id
    assert answer.check_integrity(PASSWORD) and answer.check_fingerprint()
    mapped = answer.get(stun.XOR_MAPPED_ADDRESS)
    assert mapped is not None and stun.read_xor_address(mapped, answer.transaction_id) == ("127.0.0.1", 5000)


def test_junk_is_not_stun() -> None:
    assert stun.parse(b"\x00" * 19) is None
    assert stun.parse(REQUEST[:-1]) is None
    bad_cookie = bytearray(REQUEST)
    bad_cookie[4] ^= 1
    assert stun.parse(bytes(bad_cookie)) is None
    past_end = bytearray(REQUEST)
    past_end[23] = 0x40  # SOFTWARE's length runs past the message
    assert stun.parse(bytes(past_end)) is None
    flipped = bytearray(REQUEST)
    flipped[30] ^= 1
    msg = stun.parse(bytes(flipped))
    assert msg is not None and not msg.check_fingerprint() and not msg.check_integrity(PASSWORD)
    assert not stun.is_stun(b"\x16\xfe\xfd" + b"\x00" * 30)  # a DTLS record
