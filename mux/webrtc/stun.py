"""STUN messages as ICE uses them (RFC 8489, RFC 8445): parse, check, and build Binding responses.

Only what an ICE-lite agent needs: Binding requests in, Binding success or error responses out, with
MESSAGE-INTEGRITY (HMAC-SHA1 under the short-term password) and FINGERPRINT (CRC-32 xor ``0x5354554E``).
``parse`` never raises on a peer's bytes: it returns None for anything that is not a well-formed STUN message.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import zlib
from dataclasses import dataclass, field

MAGIC = 0x2112A442
HEADER = struct.Struct("!HHI12s")
ATTR = struct.Struct("!HH")

BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111
BINDING_INDICATION = 0x0011

USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
SOFTWARE = 0x8022
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A

_FINGERPRINT_XOR = 0x5354554E
#: attributes a message may carry at most (a request has about six): a peer cannot make us walk more
MAX_ATTRIBUTES = 32


@dataclass(slots=True)
class Message:
    type: int
    transaction_id: bytes
    #: (type, value) in order, as on the wire
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    #: the raw bytes it was parsed from (MESSAGE-INTEGRITY and FINGERPRINT are checked over them)
    raw: bytes = b""
    #: offsets of MESSAGE-INTEGRITY's and FINGERPRINT's attribute headers in ``raw``, when present
    integrity_at: int = -1
    fingerprint_at: int = -1

    def get(self, attr_type: int) -> bytes | None:
        for kind, value in self.attributes:
            if kind == attr_type:
                return value
        return None

    def has(self, attr_type: int) -> bool:
        return any(kind == attr_type for kind, _ in self.attributes)

    def check_fingerprint(self) -> bool:
        at = self.fingerprint_at
        if at < 0:
            return False
        return _fingerprint(self.raw[:at], at + 8 - 20) == self.raw[at + 4 : at + 8]

    def check_integrity(self, key: bytes) -> bool:
        """MESSAGE-INTEGRITY under ``key`` (the short-term password, RFC 8489 §9.2)."""
        at = self.integrity_at
        if at < 0:
            return False
        expected = _integrity(self.raw[:at], at + 24 - 20, key)
        return hmac.compare_digest(expected, self.raw[at + 4 : at + 24])


def is_stun(data: bytes) -> bool:
    """RFC 7983: a first byte of 0 to 3 is STUN (and a STUN message has the magic cookie)."""
    return len(data) >= 20 and data[0] < 4 and data[4:8] == b"\x21\x12\xa4\x42"


def parse(data: bytes) -> Message | None:
    """A STUN message, or None when ``data`` is not a well-formed one."""
    if len(data) < 20 or data[0] >= 4:
        return None
    kind, length, cookie, txid = HEADER.unpack_from(data)
    if cookie != MAGIC or length % 4 or 20 + length != len(data):
        return None
    msg = Message(kind, txid, raw=bytes(data))
    off, end = 20, 20 + length
    while off < end:
        if end - off < 4 or len(msg.attributes) >= MAX_ATTRIBUTES:
            return None
        atype, alen = ATTR.unpack_from(data, off)
        stop = off + 4 + alen
        if stop > end:
            return None
        if msg.fingerprint_at >= 0:
            return None  # nothing may follow FINGERPRINT
        if atype == MESSAGE_INTEGRITY:
            if alen != 20 or msg.integrity_at >= 0:
                return None
            msg.integrity_at = off
        elif atype == FINGERPRINT:
            if alen != 4:
                return None
            msg.fingerprint_at = off
        elif msg.integrity_at >= 0:
            # RFC 8489 §14.5: what follows MESSAGE-INTEGRITY (other than FINGERPRINT) is ignored
            off = (stop + 3) & ~3
            continue
        msg.attributes.append((atype, bytes(data[off + 4 : stop])))
        off = (stop + 3) & ~3
    return msg


def _fingerprint(head: bytes, length: int) -> bytes:
    """FINGERPRINT over ``head`` whose length field is set as if the message ended after the attribute."""
    patched = head[:2] + struct.pack("!H", length) + head[4:]
    return struct.pack("!I", (zlib.crc32(patched) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF)


def _integrity(head: bytes, length: int, key: bytes) -> bytes:
    patched = head[:2] + struct.pack("!H", length) + head[4:]
    return hmac.new(key, patched, hashlib.sha1).digest()


def xor_address(address: tuple[str, int], transaction_id: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS's value for ``address`` (RFC 8489 §14.2)."""
    ip = ipaddress.ip_address(address[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    port = address[1] ^ (MAGIC >> 16)
    if isinstance(ip, ipaddress.IPv4Address):
        return struct.pack("!BBHI", 0, 1, port, int(ip) ^ MAGIC)
    mask = int.from_bytes(struct.pack("!I", MAGIC) + transaction_id, "big")
    return struct.pack("!BBH", 0, 2, port) + (int(ip) ^ mask).to_bytes(16, "big")


def read_xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int] | None:
    if len(value) < 8:
        return None
    family, port = value[1], struct.unpack_from("!H", value, 2)[0] ^ (MAGIC >> 16)
    if family == 1:
        return str(ipaddress.IPv4Address(struct.unpack_from("!I", value, 4)[0] ^ MAGIC)), port
    if family == 2 and len(value) >= 20:
        mask = int.from_bytes(struct.pack("!I", MAGIC) + transaction_id, "big")
        return str(ipaddress.IPv6Address(int.from_bytes(value[4:20], "big") ^ mask)), port
    return None


def build(
    kind: int,
    transaction_id: bytes,
    attributes: list[tuple[int, bytes]],
    *,
    key: bytes | None = None,
    fingerprint: bool = True,
    pad: bytes = b"\x00",
) -> bytes:
    """A message with ``attributes``, then MESSAGE-INTEGRITY under ``key`` when given, then FINGERPRINT.
    ``pad`` is the padding byte (any value will do; RFC 5769's vectors use a space)."""
    body = bytearray()
    for atype, value in attributes:
        body += ATTR.pack(atype, len(value)) + value + pad * (-len(value) % 4)
    head = HEADER.pack(kind, len(body), MAGIC, transaction_id) + bytes(body)
    if key is not None:
        mac = _integrity(head, len(body) + 24, key)
        body += ATTR.pack(MESSAGE_INTEGRITY, 20) + mac
        head = HEADER.pack(kind, len(body), MAGIC, transaction_id) + bytes(body)
    if fingerprint:
        crc = _fingerprint(head, len(body) + 8)
        body += ATTR.pack(FINGERPRINT, 4) + crc
    return HEADER.pack(kind, len(body), MAGIC, transaction_id) + bytes(body)


def binding_success(request: Message, address: tuple[str, int], key: bytes) -> bytes:
    """The success response to an ICE connectivity check: where it came from, signed with our password."""
    tid = request.transaction_id
    return build(BINDING_SUCCESS, tid, [(XOR_MAPPED_ADDRESS, xor_address(address, tid))], key=key)


def binding_error(request: Message, code: int, reason: str, key: bytes | None = None) -> bytes:
    """An error response (400 Bad Request, 401 Unauthorized, 487 Role Conflict)."""
    value = struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()
    return build(BINDING_ERROR, request.transaction_id, [(ERROR_CODE, value)], key=key)
