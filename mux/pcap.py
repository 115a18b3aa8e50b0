"""``pcap: PATH`` on a listener: its UDP datagrams, both directions, in a pcap file Wireshark and tshark read.

The capture is a socket that writes what passes through ``recvfrom`` and ``sendto`` (``CapturingSocket``), so a
listener without ``pcap`` runs on a plain socket and pays nothing. Each datagram becomes one record of link type
RAW (an IPv4 or IPv6 packet, by the addresses) with an IP and a UDP header synthesized around the payload: the
listener's bound address as one end (as bound: 0.0.0.0 or :: when it listens on every address), the peer's as the
other. Checksums are left at zero (UDP over IPv4 allows it; tshark does not check them by default).

Bounded: once the file would pass ``pcap_max_bytes`` it is renamed to ``PATH.1`` (replacing the one before) and a
new one starts, so the capture holds the most recent traffic and at most twice that on disk.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

from mux import steering

log = logging.getLogger("mux.pcap")

LINKTYPE_RAW = 101
SNAPLEN = 65535
_FILE_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW)
_RECORD = struct.Struct("<IIII")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
DEFAULT_MAX_BYTES = 64 << 20


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def ip_udp(payload: bytes, src: tuple[Any, ...], dst: tuple[Any, ...]) -> bytes:
    """``payload`` as one IPv4 or IPv6 packet carrying a UDP datagram from ``src`` to ``dst`` (host, port...)."""
    a, b = ipaddress.ip_address(str(src[0]).split("%")[0]), ipaddress.ip_address(str(dst[0]).split("%")[0])
    if a.version != b.version:  # one side IPv4, the other an IPv6 socket's view: both as IPv6 (v4-mapped)
        a = a if a.version == 6 else ipaddress.IPv6Address(f"::ffff:{a}")
        b = b if b.version == 6 else ipaddress.IPv6Address(f"::ffff:{b}")
    length = _UDP.size + len(payload)
    udp = _UDP.pack(int(src[1]) & 0xFFFF, int(dst[1]) & 0xFFFF, length & 0xFFFF, 0)
    if a.version == 4:
        header = _IPV4.pack(0x45, 0, (20 + length) & 0xFFFF, 0, 0x4000, 64, 17, 0, a.packed, b.packed)
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        return header + udp + payload
    return _IPV6.pack(6 << 28, length & 0xFFFF, 17, 64, a.packed, b.packed) + udp + payload


class PcapWriter:
    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max(max_bytes, 4096)
        self._file = self._open()
        self.size = len(_FILE_HEADER)
        self.rotations = 0
        self._flushed = time.time()

    def _open(self) -> Any:
        f = self.path.open("wb")
        f.write(_FILE_HEADER)
        return f

    def write(self, payload: bytes, src: tuple[Any, ...], dst: tuple[Any, ...]) -> None:
        if self._file.closed:
            return
        try:
            packet = ip_udp(payload, src, dst)
        except ValueError:  # an address that is not an IP literal (cannot come from a UDP socket)
            return
        now = time.time()
        record = _RECORD.pack(int(now), int(now % 1 * 1_000_000), len(packet), len(packet)) + packet
        try:
            if self.size + len(record) > self.max_bytes:
                self._rotate()
            self._file.write(record)
            self.size += len(record)
            if now - self._flushed > 1.0:  # a reader (or a crash) misses at most the last second's worth
                self._file.flush()
                self._flushed = now
        except OSError as exc:  # a full disk, the directory gone: the capture stops, the datagram goes on
            log.error("pcap %s: %s; capture stopped", self.path, exc)
            self.close()

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self.rotations += 1
        self._file = self._open()
        self.size = len(_FILE_HEADER)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:  # the last flush failed (a full disk): nothing more to save
                pass


class CapturingSocket(socket.socket):
    """A UDP socket that records every datagram it receives and sends (``PcapWriter``)."""

    pcap: PcapWriter
    _local: tuple[Any, ...]

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        data, addr = super().recvfrom(bufsize, flags)
        self.pcap.write(data, addr, self._local)
        return data, addr

    def sendto(self, data: Any, *args: Any) -> int:
        sent = super().sendto(data, *args)
        self.pcap.write(bytes(data), self._local, args[-1])
        return sent

    def close(self) -> None:
        super().close()
        self.pcap.close()


def capture(sock: socket.socket, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> CapturingSocket:
    """``sock`` (bound) as a capturing socket writing to ``path``; the original object is detached."""
    local = tuple(sock.getsockname())
    capturing = CapturingSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    capturing.pcap = PcapWriter(path, max_bytes)
    capturing._local = local
    log.info("capturing %s to %s (rotated at %d bytes)", local[:2], path, capturing.pcap.max_bytes)
    return capturing


def maybe_capture(sock: socket.socket, options: Any) -> socket.socket:
    """The listener's socket, capturing if its options name a ``pcap`` file. Worker i of ``workers: N`` writes
    ``NAME.i.pcap`` for ``NAME.pcap`` (each process its own file; ``mergecap`` joins them)."""
    path = getattr(options, "pcap", None)
    if path is None:
        return sock
    worker = steering.current()
    if worker is not None:
        path = path.with_name(f"{path.stem}.{worker.index}{path.suffix}")
    return capture(sock, path, options.pcap_max_bytes)
