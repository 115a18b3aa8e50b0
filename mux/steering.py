"""Steering each datagram of a reuseport group to the worker that owns its connection.

With ``workers: N`` every listener is N UDP sockets bound to one address with SO_REUSEPORT, one per worker
process. The kernel's own choice hashes the 4-tuple, so a peer that changes its UDP port (a NAT rebinding,
QUIC migration) would land on a worker that has never heard of it (hypercorn's multi-worker QUIC fails so).
Instead a classic BPF program (SO_ATTACH_REUSEPORT_CBPF, a plain setsockopt) picks the socket from the UDP
payload, which is where the kernel starts a reuseport program's packet data; the socket index it returns is
the group's binding order (``mux.workers`` binds socket i for worker i and keeps every socket open, since
closing one moves the last socket into its slot). An index out of range falls back to the 4-tuple hash.

* SCTP: the common header's verification tag (payload bytes 4-7) modulo N. Each worker draws its local tags
  (the Initiate Tag of its INIT-ACKs) with ``tag % N == index``, so everything after the INIT, COOKIE-ECHO
  included, reaches the worker that answered the INIT. An INIT (tag 0) goes by the 4-tuple hash: any worker
  may answer it, the cookie being stateless, and its retransmissions stay on one worker.
* QUIC: the first 32 bits of the destination connection ID modulo N: from byte 6 in a long header (byte 5
  is its length; under 4 bytes falls back to the hash), from byte 1 in a short header. Each worker makes its
  connection IDs (the first one, NEW_CONNECTION_ID's, a Retry's) with that word ``% N == index``; a client's
  first Initials carry a random DCID, which the same rule hashes, so its retransmissions and 0-RTT packets
  reach the one worker that then hands out its own IDs.

The choice of IDs and tags lives here too, with the process's ``Steering`` (its index, the group size, the
SCTP cookie secret the supervisor shares, the sockets it bound); a process that is not a worker has none.
"""

from __future__ import annotations

import ctypes
import os
import random
import socket
import struct
from dataclasses import dataclass, field

SO_ATTACH_REUSEPORT_CBPF = 51
#: a socket index no group has: the kernel then falls back to its 4-tuple hash
FALLBACK = 0xFFFFFFFF

# classic BPF opcodes (linux/filter.h)
_LDB_ABS, _LDW_ABS = 0x30, 0x20
_JSET_K, _JGE_K, _JEQ_K, _JA = 0x45, 0x35, 0x15, 0x05
_MOD_K = 0x94
_RET_A, _RET_K = 0x16, 0x06

Insn = tuple[int, int, int, int]  # struct sock_filter: code, jt, jf, k


def sctp_program(count: int) -> list[Insn]:
    """Socket index = verification tag % count; tag 0 (an INIT) by the kernel's hash."""
    return [
        (_LDW_ABS, 0, 0, 4),  # A = vtag (a packet shorter than 8 bytes ends the program: index 0)
        (_JEQ_K, 0, 1, 0),
        (_RET_K, 0, 0, FALLBACK),
        (_MOD_K, 0, 0, count),
        (_RET_A, 0, 0, 0),
    ]


def quic_program(count: int) -> list[Insn]:
    """Socket index = first 32 bits of the destination connection ID % count."""
    return [
        (_LDB_ABS, 0, 0, 0),
        (_JSET_K, 0, 5, 0x80),  # long header? else to the short one
        (_LDB_ABS, 0, 0, 5),  # DCID length
        (_JGE_K, 1, 0, 4),
        (_RET_K, 0, 0, FALLBACK),
        (_LDW_ABS, 0, 0, 6),
        (_JA, 0, 0, 1),
        (_LDW_ABS, 0, 0, 1),  # short header: our own fixed-length DCID
        (_MOD_K, 0, 0, count),
        (_RET_A, 0, 0, 0),
    ]


def program_for(transport: str, count: int) -> list[Insn]:
    if transport == "quic":
        return quic_program(count)
    if transport == "sctp":
        return sctp_program(count)
    raise ValueError(f"no steering program for transport {transport!r}")


def attach(sock: socket.socket, program: list[Insn]) -> None:
    """Attach ``program`` to the reuseport group ``sock`` belongs to (after its bind)."""
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))  # struct sock_fprog; the kernel copies it
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def with_residue(value: int, index: int, count: int, bits: int = 32) -> int:
    """``value`` moved to the nearest number below it (within ``bits``) that is ``index`` modulo ``count``."""
    value = value - value % count + index
    if value >= 1 << bits:
        value -= count
    return value


def quic_cid(index: int, count: int, length: int = 8) -> bytes:
    """A random connection ID (at least 4 bytes) whose first 32 bits are ``index`` modulo ``count``."""
    raw = os.urandom(length)
    word = with_residue(int.from_bytes(raw[:4], "big"), index, count)
    return word.to_bytes(4, "big") + raw[4:]


def sctp_tag(rng: random.Random, index: int, count: int) -> int:
    """A random nonzero verification tag that is ``index`` modulo ``count``."""
    while True:
        tag = with_residue(rng.randrange(1, 1 << 32), index, count)
        if tag:
            return tag


def quic_owner(cid: bytes, count: int) -> int:
    """The worker the program sends a connection ID to."""
    return int.from_bytes(cid[:4], "big") % count


@dataclass
class Steering:
    """What a worker process inherits from the supervisor."""

    index: int
    count: int
    #: the SCTP cookie secret, the same in every worker: a restarted worker still opens the cookies in flight
    secret: bytes
    #: listener name -> the socket bound for this worker
    sockets: dict[str, socket.socket] = field(default_factory=dict)


_current: Steering | None = None


def current() -> Steering | None:
    return _current


def install(steering: Steering | None) -> None:
    global _current
    _current = steering


def take_socket(name: str) -> socket.socket | None:
    """The socket the supervisor bound for listener ``name`` in this worker, once; None outside workers."""
    if _current is None:
        return None
    return _current.sockets.pop(name, None)
