"""The stateless State Cookie (RFC 9260 §5.1.3): everything needed to build the association, MAC'd.

The server keeps nothing between INIT and COOKIE-ECHO; the cookie carries the negotiated parameters and is
authenticated with HMAC-SHA256 under the endpoint's secret and bound to the peer's whole UDP address (host and
port), so it can neither be forged nor replayed from elsewhere: not even from another UDP port of the same host,
which would otherwise turn one cookie into a second association (RFC 6951 makes the UDP port part of where an
association lives). ``created`` is the endpoint's clock (the driver's monotonic time).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
from dataclasses import dataclass
from typing import Any

_BODY = struct.Struct("!BdIIIIIIHHHHIIB")
_PORT = struct.Struct("!H")
_MAC_LEN = 32
COOKIE_LEN = _BODY.size + _MAC_LEN  # without addresses
_VERSION = 3
#: the peer's other addresses its INIT listed (multi-homing, ``paths``): at most this many ride in the cookie
MAX_ADDRESSES = 7
_FAMILY = {4: socket.AF_INET, 16: socket.AF_INET6}


@dataclass(slots=True, frozen=True)
class Cookie:
    created: float
    lifetime_ms: int
    local_tag: int
    local_tsn: int
    peer_tag: int
    peer_tsn: int
    peer_rwnd: int
    #: what the peer offered (its OS and MIS), negotiated into stream counts when the TCB is built
    peer_os: int
    peer_mis: int
    local_port: int
    peer_port: int
    #: the existing association's tags when the INIT hit one (§5.2.1, §5.2.2); zero otherwise
    tie_local: int
    tie_peer: int
    #: the extensions both sides offered (``mux.sctp.extensions`` bits)
    features: int = 0
    #: the IPv4/IPv6 addresses the peer's INIT listed, as text
    addresses: tuple[str, ...] = ()


def _mac(secret: bytes, body: bytes, peer: tuple[Any, ...]) -> bytes:
    # the port as two fixed bytes after the host: no (host, port) pair can spell another's MAC input
    bound = str(peer[0]).encode() + _PORT.pack(int(peer[1]) & 0xFFFF)
    return hmac.new(secret, body + bound, hashlib.sha256).digest()


def encode(cookie: Cookie, secret: bytes, peer: tuple[Any, ...]) -> bytes:
    """The cookie for the peer at UDP address ``peer`` (host, port, ...)."""
    body = _BODY.pack(
        _VERSION,
        cookie.created,
        cookie.lifetime_ms,
        cookie.local_tag,
        cookie.local_tsn,
        cookie.peer_tag,
        cookie.peer_tsn,
        cookie.peer_rwnd,
        cookie.peer_os,
        cookie.peer_mis,
        cookie.local_port,
        cookie.peer_port,
        cookie.tie_local,
        cookie.tie_peer,
        cookie.features,
    )
    for host in cookie.addresses[:MAX_ADDRESSES]:
        raw = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        body += bytes([len(raw)]) + raw
    return body + _mac(secret, body, peer)


def decode(data: bytes, secret: bytes, peer: tuple[Any, ...]) -> Cookie | None:
    """The cookie if it is ours and untampered, else None. Staleness is the caller's check."""
    if not COOKIE_LEN <= len(data) <= COOKIE_LEN + 17 * MAX_ADDRESSES:
        return None
    body = data[:-_MAC_LEN]
    if not hmac.compare_digest(data[-_MAC_LEN:], _mac(secret, body, peer)):
        return None
    version, *fields = _BODY.unpack_from(body)
    if version != _VERSION:
        return None
    addresses: list[str] = []
    i = _BODY.size
    while i < len(body):  # our own encoding, under our MAC: well formed
        n = body[i]
        addresses.append(socket.inet_ntop(_FAMILY[n], body[i + 1 : i + 1 + n]))
        i += 1 + n
    return Cookie(*fields, tuple(addresses))  # type: ignore[call-arg]


def expires_at(cookie: Cookie) -> float:
    return cookie.created + cookie.lifetime_ms / 1000.0
