"""SCTP directly on IP (protocol 132): a raw socket shaped like the bound UDP socket ``mux.udp.Driver`` reads.

``encapsulation: none`` swaps the socket and nothing else: the endpoint, its associations and the driver are the
same as over UDP. ``RawSctpSocket.recvfrom`` returns the SCTP packet (an IPv4 raw socket's recv includes the IP
header: it is cut off; an IPv6 one's does not) and, as the address, ``(source IP, source SCTP port)``, which plays
the part of the UDP address: associations are keyed, cookies bound and replies sent by it. ``sendto`` gives the
kernel the packet alone: it writes the IP header and its checksum; the SCTP CRC32c is ours as over UDP.

**The demux is the kernel's.** A raw socket gets a copy of every protocol-132 packet the host receives, whoever it
is for: other mux endpoints, usrsctp programs, anything. Each of our raw sockets carries a classic BPF filter that
keeps only packets whose SCTP destination port is its endpoint's (and ``bind`` keeps only its local address), so
packets for other ports never reach Python, in this process or another, and are never answered out of the blue,
which would abort the other endpoint's associations. The endpoint's own port check (``wrong_port``) stays behind
it. One socket per endpoint, rather than one per process demuxed in Python, keeps each endpoint's socket its own
(the client's linger closes it like a UDP one) and filters other processes' traffic too.

**Ports.** Raw IP has no kernel port allocation. Each endpoint reserves its (family, SCTP port) with an abstract
Unix socket named after it (``\\0mux-sctp/<family>/<port>``): the abstract namespace belongs to the network
namespace, the same scope as the port, so two mux endpoints on one host, in one process or two, can never share
a port, and the reservation goes with the socket (or the process). Programs that are not mux (usrsctp) do not see
it: a listener's port must be one they do not use, and a client picks a random one in 49152-65535 as they do.

Raw sockets need root or CAP_NET_RAW; without, ``open_raw`` raises ``NeedsRoot``, one line saying so.
"""

from __future__ import annotations

import ctypes
import errno
import random
import socket
import struct

from mux.udp import Address

IPPROTO_SCTP = 132
#: where a client's SCTP port is drawn from when none is configured (IANA's dynamic range, as usrsctp's)
EPHEMERAL = (49152, 65536)
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_FILTER = struct.Struct("HBBI")  # struct sock_filter: code, jt, jf, k
NEEDS_ROOT = "SCTP without UDP encapsulation needs raw IP sockets: run as root or with CAP_NET_RAW"


class NeedsRoot(PermissionError):
    """No CAP_NET_RAW: ``str()`` is the one line to show (no errno prefix)."""

    def __str__(self) -> str:
        return NEEDS_ROOT


class PortTaken(OSError):
    """Another mux endpoint on this host holds the SCTP port (an errno-less OSError: ``str()`` is the message)."""


def port_filter(family: int, port: int) -> bytes:
    """A classic BPF program accepting only SCTP packets to ``port``, as a raw socket of ``family`` sees them.

    An IPv4 raw socket's filter sees the IP header first (its length in the low nibble of byte 0); an IPv6 raw
    socket's sees the SCTP header at offset 0. The destination port is the SCTP header's bytes 2-3.
    """
    ld_h_abs, ld_h_ind, ldx_msh = 0x28, 0x48, 0xB1  # BPF_LD|BPF_H|BPF_ABS, BPF_LD|BPF_H|BPF_IND, BPF_LDX|BPF_B|BPF_MSH
    jeq, ret = 0x15, 0x06  # BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    # IPv4: X = 4 * IHL, then A = the half-word at X + 2; IPv6: A = the half-word at 2
    load = [(ldx_msh, 0, 0, 0), (ld_h_ind, 0, 0, 2)] if family == socket.AF_INET else [(ld_h_abs, 0, 0, 2)]
    program = [*load, (jeq, 0, 1, port), (ret, 0, 0, 0xFFFFFFFF), (ret, 0, 0, 0)]
    return b"".join(_FILTER.pack(*insn) for insn in program)


def _attach(sock: socket.socket, program: bytes) -> None:
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // _FILTER.size, ctypes.addressof(buffer))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)  # the kernel copies the program


def _reserve(family: int, port: int) -> socket.socket | None:
    """Hold ``port`` for this endpoint among mux endpoints on the host; None if one already holds it."""
    token = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        token.bind(f"\0mux-sctp/{'6' if family == socket.AF_INET6 else '4'}/{port}")
    except OSError as exc:
        token.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise
    return token


class RawSctpSocket:
    """One endpoint's raw protocol-132 socket on one local address and SCTP port (see the module docstring)."""

    def __init__(self, sock: socket.socket, token: socket.socket | None, host: str, port: int) -> None:
        self._sock = sock
        self._token = token
        self.family = sock.family
        self.host = host
        self.port = port
        self._v4 = sock.family == socket.AF_INET
        self.fileno = sock.fileno
        self.setblocking = sock.setblocking
        self.setsockopt = sock.setsockopt

    def recvfrom(self, size: int) -> tuple[bytes, Address]:
        data, addr = self._sock.recvfrom(size)
        if self._v4:
            data = data[(data[0] & 15) * 4 :]
        sport = (data[0] << 8 | data[1]) if len(data) >= 2 else 0
        if self._v4:
            return data, (addr[0], sport)
        return data, (addr[0], sport, addr[2], addr[3])

    def sendto(self, data: bytes, addr: Address) -> int:
        # the SCTP port travels in the packet: the raw socket's port field is the protocol (0: the socket's own)
        if self._v4:
            return self._sock.sendto(data, (addr[0], 0))
        return self._sock.sendto(data, (addr[0], 0, *addr[2:4]))

    def getsockname(self) -> Address:
        """(local IP, SCTP port): the endpoint's transport address, as a UDP socket's name is."""
        name = self._sock.getsockname()
        return (name[0], self.port, *name[2:4])

    def close(self) -> None:
        self._sock.close()
        if self._token is not None:
            self._token.close()

    def __repr__(self) -> str:
        return f"<RawSctpSocket {self.host} SCTP port {self.port}>"


def open_raw(host: str, port: int, *, claimed: bool = False) -> RawSctpSocket:
    """A raw SCTP socket on ``host`` receiving only packets to SCTP ``port``; 0 picks a free ephemeral port.

    Raises ``NeedsRoot`` (a ``PermissionError``) without CAP_NET_RAW and ``PortTaken`` when a mux endpoint on this
    host holds ``port``. ``claimed``: the port is already this endpoint's (a multi-homed endpoint's further
    addresses share its one reservation).
    """
    infos = socket.getaddrinfo(host, 0, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    try:
        sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_SCTP)
    except PermissionError:
        raise NeedsRoot(errno.EPERM, NEEDS_ROOT) from None
    try:
        sock.bind(sockaddr)
        token: socket.socket | None = None
        if not claimed:
            token, port = _claim(family, port)
        try:
            _attach(sock, port_filter(family, port))
        except BaseException:
            if token is not None:
                token.close()
            raise
    except BaseException:
        sock.close()
        raise
    # packets queued between socket() and the filter passed no filter: drop them (a peer retransmits)
    sock.setblocking(False)
    while True:
        try:
            sock.recv(1)
        except OSError:
            break
    return RawSctpSocket(sock, token, str(sockaddr[0]), port)


def _claim(family: int, port: int) -> tuple[socket.socket, int]:
    """The reservation of ``port``, or of a free ephemeral port when it is 0, and the port."""
    if port:
        token = _reserve(family, port)
        if token is None:
            raise PortTaken(f"SCTP port {port} is already used by another mux endpoint on this host")
        return token, port
    rng = random.SystemRandom()
    for _ in range(64):
        port = rng.randrange(*EPHEMERAL)
        token = _reserve(family, port)
        if token is not None:
            return token, port
    raise PortTaken("no free SCTP port found in 64 tries")
