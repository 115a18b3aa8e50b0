"""Hostile peers on real UDP sockets, for tests and for ``bench/hostile.py``.

They speak through mux's own codecs (SCTP) and aioquic (QUIC) but decide every field themselves, so
they can do what no well-behaved stack does: never acknowledge, never grant credit, send 1-byte
fragments that never end, lie in SACKs, replay a cookie from another port. Everything is blocking
and synchronous: the server under test runs elsewhere (another process or another thread's loop),
and a plain socket keeps the attacker's own cost predictable.
"""

from __future__ import annotations

import ast
import os
import random
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StreamDataReceived,
)

from mux.sctp.chunks import (
    AbortChunk,
    Chunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    HeartbeatChunk,
    InitAckChunk,
    InitChunk,
    SackChunk,
    ShutdownChunk,
)
from mux.sctp.packet import Packet, ParseError, parse_packet, serialize_packet
from mux.sctp.params import ErrorCause, Param, StateCookieParam, UnknownParam
from tests.sctp_link import DataBuilder

Addr = tuple[str, int]
MASK = 0xFFFFFFFF
#: what fits in one 1200-byte UDP payload after the SCTP common header
SCTP_ROOM = 1200 - 12


def udp_socket(host: str = "127.0.0.1", rcvbuf: int = 4 << 20) -> socket.socket:
    """A UDP socket on an ephemeral loopback port, with a receive buffer big enough to absorb an echo burst."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
    except OSError:
        pass
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def _read_all(sock: socket.socket, limit: int = 10_000) -> list[tuple[bytes, Addr]]:
    out: list[tuple[bytes, Addr]] = []
    for _ in range(limit):
        try:
            data, addr = sock.recvfrom(65536)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # ICMP errors surfacing on the socket: not a datagram
            break
        out.append((data, addr))
    return out


def _wait_readable(socks: Sequence[socket.socket], timeout: float) -> list[socket.socket]:
    if timeout <= 0:
        timeout = 0
    ready, _w, _x = select.select(list(socks), [], [], timeout)
    return ready


# -- SCTP ---------------------------------------------------------------------------------------------------------


@dataclass
class SctpReply:
    """A packet the server sent us, parsed, with the local socket it arrived on."""

    packet: Packet
    raw: bytes
    sock: socket.socket

    def has(self, kind: type) -> bool:
        return any(type(c) is kind for c in self.packet.chunks)

    def chunks(self, kind: type) -> list[Any]:
        return [c for c in self.packet.chunks if type(c) is kind]


@dataclass
class RawSctpPeer(DataBuilder):
    """One SCTP-over-UDP (RFC 6951) association driven by hand.

    ``tag`` is our verification tag (on the server's packets), ``peer_tag`` the server's (on ours).
    TSN and SSN bookkeeping is kept for the common case; every builder takes explicit values too.
    Nothing is acknowledged unless asked: a peer that never calls ``sack`` never reads.
    """

    server: Addr
    sctp_port: int = 7
    local_port: int = 5000
    a_rwnd: int = 1 << 20
    os_: int = 16
    mis: int = 16
    rng: random.Random = field(default_factory=random.Random)
    tag: int = 0
    peer_tag: int = 0
    next_tsn: int = 0
    #: the server's first TSN (from its INIT-ACK)
    server_initial_tsn: int = 0
    #: highest in-order TSN received from the server, and what arrived above it
    server_cum: int = 0
    server_above: set[int] = field(default_factory=set)
    #: the server's last advertised window and cumulative ack of our data
    server_arwnd: int = 0
    acked_cum: int = 0
    #: the highest TSN of ours the server has reported, cumulatively or in a gap block
    acked_high: int = 0
    sacks_received: int = 0
    cookie: bytes = b""
    init_ack: InitAckChunk | None = None
    ssn: dict[int, int] = field(default_factory=dict)
    socks: list[socket.socket] = field(default_factory=list)
    received: list[SctpReply] = field(default_factory=list)
    #: user data the server sent us, per stream, in arrival order (for echo checks)
    messages: list[tuple[int, bytes]] = field(default_factory=list)
    #: when a list, every packet we send is appended to it (a fuzzer's corpus)
    record: list[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.tag:
            self.tag = self.rng.randrange(1, 1 << 32)
        if not self.next_tsn:
            self.next_tsn = self.rng.randrange(0, 1 << 32)
        if not self.socks:
            self.socks.append(udp_socket())

    # -- sockets ------------------------------------------------------------------------------------------------

    @property
    def sock(self) -> socket.socket:
        return self.socks[0]

    def new_socket(self) -> socket.socket:
        """Another UDP source port on the same host (NAT rebinding, cookie replay)."""
        s = udp_socket()
        self.socks.append(s)
        return s

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks.clear()

    # -- sending ------------------------------------------------------------------------------------------------

    def packet(self, chunks: Iterable[Chunk | bytes], *, vtag: int | None = None, src_port: int | None = None) -> bytes:
        return serialize_packet(
            self.local_port if src_port is None else src_port,
            self.sctp_port,
            self.peer_tag if vtag is None else vtag,
            chunks,
        )

    def send(
        self,
        chunks: Iterable[Chunk | bytes],
        *,
        vtag: int | None = None,
        sock: socket.socket | None = None,
        src_port: int | None = None,
    ) -> int:
        """Send one packet; returns its size (the bytes the server receives)."""
        return self.send_raw(self.packet(chunks, vtag=vtag, src_port=src_port), sock=sock)

    def send_raw(self, data: bytes, *, sock: socket.socket | None = None) -> int:
        s = sock or self.sock
        if self.record is not None:
            self.record.append(data)
        while True:
            try:
                s.sendto(data, self.server)
                return len(data)
            except BlockingIOError:
                select.select([], [s], [], 1.0)

    # -- receiving ----------------------------------------------------------------------------------------------

    def recv(self, timeout: float, *, socks: Sequence[socket.socket] | None = None) -> list[SctpReply]:
        """Whatever arrives within ``timeout`` (at least one batch if any came), parsed; garbage is skipped."""
        watch = list(socks or self.socks)
        out: list[SctpReply] = []
        ready = _wait_readable(watch, timeout)
        for s in ready:
            for data, _addr in _read_all(s):
                try:
                    pkt = parse_packet(data)
                except ParseError:
                    continue
                reply = SctpReply(pkt, data, s)
                self._absorb(reply)
                out.append(reply)
        self.received.extend(out)
        return out

    def drain(self) -> list[SctpReply]:
        return self.recv(0)

    def recv_until(
        self,
        pred: Callable[[SctpReply], bool],
        timeout: float,
        *,
        socks: Sequence[socket.socket] | None = None,
        ack: bool = False,
    ) -> SctpReply | None:
        """The first reply matching ``pred`` within ``timeout``; with ``ack`` server DATA is SACKed on the way."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            got = self.recv(min(left, 0.05), socks=socks)
            if ack and any(r.has(DataChunk) for r in got):
                self.send([self.sack()])
            for r in got:
                if pred(r):
                    return r

    def _absorb(self, reply: SctpReply) -> None:
        for c in reply.packet.chunks:
            kind = type(c)
            if kind is DataChunk:
                assert isinstance(c, DataChunk)
                t = c.tsn
                d = (t - self.server_cum) & MASK
                if d == 0 or d >= 0x80000000 or t in self.server_above:
                    continue
                if c.beginning and c.ending:
                    self.messages.append((c.stream_id, c.data))
                if d == 1:
                    cum = t
                    while ((cum + 1) & MASK) in self.server_above:
                        cum = (cum + 1) & MASK
                        self.server_above.discard(cum)
                    self.server_cum = cum
                else:
                    self.server_above.add(t)
            elif kind is SackChunk:
                assert isinstance(c, SackChunk)
                self.sacks_received += 1
                if ((c.cum_tsn - self.acked_cum) & MASK) < 0x80000000:
                    self.acked_cum = c.cum_tsn
                high = (c.cum_tsn + max((e for _s, e in c.gaps), default=0)) & MASK
                if ((high - self.acked_high) & MASK) < 0x80000000:
                    self.acked_high = high
                self.server_arwnd = c.a_rwnd

    # -- handshake ----------------------------------------------------------------------------------------------

    def init_chunk(self, params: Sequence[Param] = ()) -> InitChunk:
        return InitChunk(self.tag, self.a_rwnd, self.os_, self.mis, self.next_tsn, list(params))

    def send_init(
        self, params: Sequence[Param] = (), *, sock: socket.socket | None = None, timeout: float = 2.0
    ) -> SctpReply | None:
        """INIT (tag 0) and the INIT-ACK it draws, or None; the cookie and the server's tag are kept."""
        self.send([self.init_chunk(params)], vtag=0, sock=sock)
        reply = self.recv_until(lambda r: r.has(InitAckChunk), timeout, socks=[sock] if sock else None)
        if reply is None:
            return None
        ack: InitAckChunk = reply.chunks(InitAckChunk)[0]
        self.init_ack = ack
        self.peer_tag = ack.initiate_tag
        self.server_initial_tsn = ack.initial_tsn
        self.server_cum = (ack.initial_tsn - 1) & MASK
        self.server_arwnd = ack.a_rwnd
        self.acked_cum = self.acked_high = (self.next_tsn - 1) & MASK
        self.cookie = next(p.cookie for p in ack.params if isinstance(p, StateCookieParam))
        return reply

    def cookie_echo_packet(self) -> bytes:
        return self.packet([CookieEchoChunk(self.cookie)])

    def handshake(self, timeout: float = 3.0) -> None:
        """INIT, INIT-ACK, COOKIE-ECHO, COOKIE-ACK; raises TimeoutError if the server does not answer."""
        deadline = time.monotonic() + timeout
        while self.send_init(timeout=min(1.0, max(deadline - time.monotonic(), 0.01))) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no INIT-ACK from {self.server}")
        while True:
            self.send_raw(self.cookie_echo_packet())
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no COOKIE-ACK from {self.server}")
            if self.recv_until(lambda r: r.has(CookieAckChunk), min(left, 1.0)) is not None:
                return

    # -- chunk builders -----------------------------------------------------------------------------------------

    def fragments(self, count: int, *, size: int = 1, stream_id: int = 0, begin: bool = True) -> list[DataChunk]:
        """``count`` consecutive fragments of one message that never ends (no E bit on any)."""
        ssn = self.ssn.get(stream_id, 0)
        out = []
        for i in range(count):
            out.append(self.data(b"f" * size, stream_id=stream_id, ssn=ssn, beginning=begin and i == 0, ending=False))
        return out

    def sack(
        self,
        cum: int | None = None,
        *,
        a_rwnd: int | None = None,
        gaps: Sequence[tuple[int, int]] | None = None,
        dups: Sequence[int] = (),
    ) -> SackChunk:
        """A SACK; by default the truth about what the server sent us (its cum TSN and gap blocks)."""
        if cum is None:
            cum = self.server_cum
        if gaps is None:
            offsets = sorted((t - cum) & MASK for t in self.server_above)
            built: list[tuple[int, int]] = []
            for o in offsets:
                if built and built[-1][1] == o - 1:
                    built[-1] = (built[-1][0], o)
                else:
                    built.append((o, o))
            gaps = built[:200]
        return SackChunk(cum, self.a_rwnd if a_rwnd is None else a_rwnd, list(gaps), list(dups))

    @staticmethod
    def error_chunk(
        size: int, rng: random.Random | None = None, *, code: int = 0x00FF, cause_size: int = 1000
    ) -> ErrorChunk:
        """An ERROR chunk of about ``size`` bytes of causes, each with ``cause_size`` random bytes of info."""
        r = rng or random.Random(0)
        causes: list[ErrorCause] = []
        left = size
        while left >= 4 + cause_size:
            causes.append(ErrorCause(code, r.randbytes(cause_size)))
            left -= 4 + cause_size + (-cause_size % 4)
        return ErrorChunk(causes)

    @staticmethod
    def abort_chunk(reason: bytes = b"") -> AbortChunk:
        return AbortChunk([ErrorCause(12, reason)] if reason else [])

    def shutdown_chunk(self) -> ShutdownChunk:
        return ShutdownChunk(self.server_cum)

    @staticmethod
    def heartbeat(info: bytes = b"hb") -> HeartbeatChunk:
        return HeartbeatChunk(info)

    @staticmethod
    def unrecognized_params(count: int, *, size: int = 0, first_type: int = 0xC100) -> list[Param]:
        """Parameters the server cannot know, typed "skip and report" (top bits 11), to be echoed in its INIT-ACK."""
        return [UnknownParam(first_type + i, b"\x00" * size) for i in range(count)]

    # -- flows --------------------------------------------------------------------------------------------------

    def pack(self, chunks: Sequence[Chunk], room: int = SCTP_ROOM) -> list[list[Chunk]]:
        """Group chunks into packets of at most ``room`` bytes of chunks (each padded to 4)."""
        packets: list[list[Chunk]] = []
        cur: list[Chunk] = []
        used = 0
        for c in chunks:
            n = len(c.serialize())
            if cur and used + n > room:
                packets.append(cur)
                cur, used = [], 0
            cur.append(c)
            used += n
        if cur:
            packets.append(cur)
        return packets

    def echo(self, payload: bytes, *, stream_id: int = 0, timeout: float = 3.0) -> bytes | None:
        """Send one message and wait for the same bytes to come back (acknowledging what arrives)."""
        before = len(self.messages)
        chunk = self.data(payload, stream_id=stream_id)
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                self.send([chunk])
                next_send = time.monotonic() + 0.5
            got = self.recv(0.05)
            if any(r.has(DataChunk) for r in got):
                self.send([self.sack()])
            for sid, data in self.messages[before:]:
                if sid == stream_id and data == payload:
                    return data
        return None

    def send_paced(
        self,
        packets: Sequence[Sequence[Chunk]],
        *,
        window: int = 8,
        stall_limit: float = 2.0,
        rto: float = 0.5,
        on_packet: Callable[[int], None] | None = None,
    ) -> int:
        """Send pre-built DATA packets (TSNs ascending), at most ``window`` ahead of what the server reported.

        Progress is the highest TSN the server reports, cumulatively or in a gap block, so this paces
        both in-order data and data above a hole. A packet not reported within ``rto`` is sent again;
        after ``stall_limit`` seconds without progress we stop: the server is dropping (it hit a limit).
        Returns how many packets the server took.
        """
        ends = []
        for pkt in packets:
            tsns = [c.tsn for c in pkt if isinstance(c, DataChunk)]
            ends.append(tsns[-1] if tsns else None)
        base = (self.acked_high) & MASK

        def taken() -> int:
            high = (self.acked_high - base) & MASK
            if high >= 0x80000000:
                return 0
            n = 0
            while n < len(ends):
                e = ends[n]
                if e is not None and ((e - base) & MASK) > high:
                    break
                n += 1
            return n

        done = 0
        nxt = 0
        last_progress = time.monotonic()
        resend_at = last_progress + rto
        while done < len(packets):
            now = time.monotonic()
            if now - last_progress > stall_limit:
                break
            if now > resend_at:
                nxt = done
                resend_at = now + rto
            while nxt < len(packets) and nxt - done < window:
                self.send(packets[nxt])
                nxt += 1
                if on_packet is not None:
                    on_packet(nxt)
            self.recv(0.01)
            n = taken()
            if n > done:
                done = n
                last_progress = time.monotonic()
                resend_at = last_progress + rto
        return done

    def send_bulk(
        self,
        total: int,
        *,
        size: int = 1100,
        stream_id: int = 0,
        window: int = 256 * 1024,
        ack_server: bool = False,
        time_limit: float = 60.0,
        stall_limit: float = 3.0,
        per_packet: int = 1,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Push ``total`` bytes of ordered messages, go-back-N on the server's SACKs; returns bytes acked.

        The window is ours and the server's a_rwnd, whichever is smaller; we stop when everything is
        acked, at ``time_limit``, or after ``stall_limit`` seconds without progress (a server that
        applies backpressure holds its window shut: that is the point, not an error). With
        ``ack_server`` the echo is SACKed; without it the server's data is never acknowledged.
        """
        first = self.next_tsn
        base_ssn = self.ssn.get(stream_id, 0)
        count = (total + size - 1) // size
        payload = b"x" * size
        self.acked_cum = (first - 1) & MASK
        nxt = 0  # index of the next chunk to (re)send
        high = 0  # chunks sent at least once
        start = last_progress = time.monotonic()
        last_acked = 0
        retransmit_at = start + 1.0

        def acked() -> int:
            return min(((self.acked_cum - first + 1) & MASK), count)

        while True:
            done = acked()
            now = time.monotonic()
            if done != last_acked:
                last_acked = done
                last_progress = now
                retransmit_at = now + 1.0
                if on_progress is not None:
                    on_progress(done * size)
            if done >= count or now - start > time_limit or now - last_progress > stall_limit:
                break
            if nxt < done:
                nxt = done
            if now > retransmit_at:  # nothing moved for a while: go back to the first unacked chunk
                nxt = done
                retransmit_at = now + 1.0
            limit = min(window, max(self.server_arwnd, size))
            while nxt < count and (nxt - done) * size < limit:
                chunks: list[Chunk] = []
                for _ in range(per_packet):
                    if nxt >= count or (nxt - done) * size >= limit:
                        break
                    tsn = (first + nxt) & MASK
                    chunks.append(DataChunk(tsn, stream_id, (base_ssn + nxt) & 0xFFFF, 0, payload))
                    nxt += 1
                high = max(high, nxt)
                self.send(chunks)
                if nxt % 32 == 0:
                    got = self.drain()
                    if ack_server and any(r.has(DataChunk) for r in got):
                        self.send([self.sack()])
            got = self.recv(0.02)
            if ack_server and any(r.has(DataChunk) for r in got):
                self.send([self.sack()])
        self.next_tsn = (first + high) & MASK  # what was sent and not acked stays outstanding
        self.ssn[stream_id] = (base_ssn + high) & 0xFFFF
        return acked() * size


# -- QUIC ---------------------------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    if n < 0x40:
        return bytes([n])
    if n < 0x4000:
        return struct.pack("!H", n | 0x4000)
    if n < 0x40000000:
        return struct.pack("!I", n | 0x80000000)
    return struct.pack("!Q", n | 0xC000000000000000)


def garbage_initial(rng: random.Random, size: int = 1200, version: int = 1) -> bytes:
    """A datagram whose long header is a valid v1 Initial (random CIDs, no token) and whose rest is random.

    It parses as an Initial but can never decrypt: anyone can send it from any (spoofed) address.
    """
    dcid = rng.randbytes(8)
    scid = rng.randbytes(8)
    head = bytes([0xC3]) + struct.pack("!I", version) + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    head += _varint(0)  # token length
    rest = size - len(head) - 2
    head += _varint(rest)  # two bytes: rest < 0x4000
    return head + rng.randbytes(rest)


def client_configuration(
    alpn: Sequence[str] = ("echo",),
    *,
    max_data: int | None = None,
    max_stream_data: int | None = None,
    idle_timeout: float = 30.0,
    datagrams: bool = False,
) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=list(alpn),
        verify_mode=ssl.CERT_NONE,
        idle_timeout=idle_timeout,
        max_datagram_frame_size=65536 if datagrams else None,
    )
    if max_data is not None:
        config.max_data = max_data
    if max_stream_data is not None:
        config.max_stream_data = max_stream_data
    return config


def real_initial_flight(server: Addr, alpn: Sequence[str] = ("echo",)) -> list[bytes]:
    """The first flight of a real aioquic client (it decrypts and parses at the server), for replay or abandonment."""
    quic = QuicConnection(configuration=client_configuration(alpn))
    now = time.monotonic()
    quic.connect(server, now=now)
    return [data for data, _addr in quic.datagrams_to_send(now=now)]


def flood(server: Addr, flights: Iterable[Sequence[bytes]], *, sockets: int = 0) -> list[socket.socket]:
    """Send each flight from its own UDP socket (``sockets`` > 0: round-robin over that many) and abandon it.

    The sockets are returned open and unread, like spoofed sources that never answer; close them when done.
    """
    socks: list[socket.socket] = []
    for i, flight in enumerate(flights):
        if sockets and len(socks) >= sockets:
            s = socks[i % sockets]
        else:
            s = udp_socket(rcvbuf=64 * 1024)
            socks.append(s)
        for data in flight:
            while True:
                try:
                    s.sendto(data, server)
                    break
                except BlockingIOError:
                    select.select([], [s], [], 1.0)
    return socks


class NeverCreditQuicConnection(QuicConnection):
    """A client that never raises MAX_DATA or MAX_STREAM_DATA: it never "reads" what the server sends.

    With small initial windows the server can send it only that much, so whatever the server's
    application keeps writing backs up on the server side.
    """

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        return None

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        return None


class QuicClient:
    """An aioquic client pumped by hand over one blocking-free UDP socket."""

    def __init__(
        self,
        server: Addr,
        *,
        alpn: Sequence[str] = ("echo",),
        conn_cls: type[QuicConnection] = QuicConnection,
        max_data: int | None = None,
        max_stream_data: int | None = None,
        sock: socket.socket | None = None,
        datagrams: bool = False,
    ) -> None:
        self.server = server
        self.quic = conn_cls(
            configuration=client_configuration(
                alpn, max_data=max_data, max_stream_data=max_stream_data, datagrams=datagrams
            )
        )
        self.sock = sock or udp_socket()
        self.connected = False
        self.terminated: ConnectionTerminated | None = None
        self.data: dict[int, bytearray] = {}
        self.events: list[QuicEvent] = []
        self.rx_datagrams = 0
        #: inspect (and swallow, by returning False) each datagram before the connection sees it
        self.filter: Callable[[bytes], bool] | None = None
        #: when a list, every datagram we send is appended to it (a fuzzer's corpus)
        self.record: list[bytes] | None = None
        self._started = False

    def close(self) -> None:
        self.sock.close()

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.quic.connect(self.server, now=time.monotonic())
            self.flush()

    def flush(self) -> None:
        for data, addr in self.quic.datagrams_to_send(now=time.monotonic()):
            if self.record is not None:
                self.record.append(data)
            try:
                self.sock.sendto(data, addr)
            except BlockingIOError:
                pass  # a full socket buffer is loss; QUIC recovers

    def feed(self, data: bytes) -> None:
        self.quic.receive_datagram(data, self.server, now=time.monotonic())
        self._events()

    def _events(self) -> None:
        while True:
            event = self.quic.next_event()
            if event is None:
                return
            self.events.append(event)
            if isinstance(event, HandshakeCompleted):
                self.connected = True
            elif isinstance(event, ConnectionTerminated):
                self.terminated = event
            elif isinstance(event, StreamDataReceived):
                self.data.setdefault(event.stream_id, bytearray()).extend(event.data)

    def pump(self, timeout: float) -> None:
        """Send, wait for datagrams or the next timer (at most ``timeout``), receive, fire timers, send."""
        self.flush()
        now = time.monotonic()
        timer = self.quic.get_timer()
        wait = timeout if timer is None else max(0.0, min(timeout, timer - now))
        if _wait_readable([self.sock], wait):
            for data, _addr in _read_all(self.sock, limit=256):
                self.rx_datagrams += 1
                if self.filter is not None and not self.filter(data):
                    continue
                self.quic.receive_datagram(data, self.server, now=time.monotonic())
        timer = self.quic.get_timer()
        if timer is not None and time.monotonic() >= timer:
            self.quic.handle_timer(now=time.monotonic())
        self._events()
        self.flush()

    def run_until(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0 or self.terminated is not None:
                return pred()
            self.pump(min(left, 0.05))
        return True

    def connect(self, timeout: float = 5.0) -> float:
        """Seconds to a completed handshake; raises TimeoutError or ConnectionError."""
        start = time.monotonic()
        self.start()
        self.run_until(lambda: self.connected, timeout)
        if not self.connected:
            if self.terminated is not None:
                raise ConnectionError(
                    f"QUIC handshake closed: error 0x{self.terminated.error_code:x} {self.terminated.reason_phrase!r}"
                )
            raise TimeoutError(f"no QUIC handshake with {self.server} within {timeout} s")
        return time.monotonic() - start

    def echo(self, payload: bytes, timeout: float = 3.0) -> bytes | None:
        """One bidirectional stream: send ``payload`` with FIN, wait for the same bytes back."""
        sid = self.quic.get_next_available_stream_id()
        self.quic.send_stream_data(sid, payload, end_stream=True)
        self.run_until(lambda: len(self.data.get(sid, b"")) >= len(payload), timeout)
        got = self.data.get(sid)
        return bytes(got) if got is not None else None

    def send_bulk(
        self,
        total: int,
        *,
        piece: int = 64 * 1024,
        buffered: int = 1 << 20,
        time_limit: float = 60.0,
        stall_limit: float = 3.0,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Push ``total`` bytes on one stream, keeping at most ``buffered`` queued in aioquic; returns bytes sent.

        "Sent" counts what left our send buffer (the server's flow control let it go). We stop at
        ``time_limit`` or after ``stall_limit`` seconds in which the server granted nothing.
        """
        sid = self.quic.get_next_available_stream_id()
        chunk = b"y" * piece
        self.quic.send_stream_data(sid, chunk[: min(piece, total)])
        queued = min(piece, total)
        sender = self.quic._streams[sid].sender
        start = last_progress = time.monotonic()
        last_sent = -1
        while True:
            sent: int = sender.highest_offset
            now = time.monotonic()
            if sent != last_sent:
                last_sent = sent
                last_progress = now
                if on_progress is not None:
                    on_progress(sent)
            if sent >= total or now - start > time_limit or now - last_progress > stall_limit:
                return sent
            if self.terminated is not None:
                return sent
            while queued < total and queued - sent < buffered:
                n = min(piece, total - queued)
                self.quic.send_stream_data(sid, chunk[:n])
                queued += n
            self.pump(0.005)


def random_cid(n: int = 8) -> bytes:
    return os.urandom(n)


# -- a real server process ----------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent
_SERVING = re.compile(r"serving (\S+) on \('([^']+)', (\d+)\)")
_POOL_TOTAL = re.compile(r"pool total \((\w+)\): (\{.*\})")
_ERROR_LINE = re.compile(r"^\S+ (error|critical)\s", re.MULTILINE)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid``, in seconds, at nanosecond resolution (schedstat).

    /proc/PID/stat's utime and stime tick at 100 Hz, too coarse for per-packet figures; schedstat's run time
    is the same CPU time, finer. Falls back to stat where schedstat is missing.
    """
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Samples a process's VmRSS in a thread while an attack runs; ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.base = rss_bytes(pid)
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.peak = max(self.peak, rss_bytes(self.pid))
        except OSError:
            pass

    @property
    def growth(self) -> int:
        return self.peak - self.base


class ServerProcess:
    """``mux serve`` in a subprocess with QUIC and SCTP listeners on port 0; its log goes to a file.

    ``mux_path`` goes first on the child's PYTHONPATH, so the same harness runs another checkout's code
    (``/work/before``). The ports are read back from the "serving NAME on (HOST, PORT)" log lines.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        behaviour: str = "behaviours.echo:Echo",
        pool: dict[str, Any] | None = None,
        quic: dict[str, Any] | None = None,
        sctp: dict[str, Any] | None = None,
        mux_path: str | None = None,
        log_level: str = "info",
        name: str = "server",
    ) -> None:
        self.workdir = workdir
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        listeners: list[dict[str, Any]] = []
        if quic is not None:
            listeners.append({"name": "quic", "transport": "quic", "host": "127.0.0.1", "port": 0, "alpn": ["echo"]})
            listeners[-1].update(quic)
        if sctp is not None:
            listeners.append({"name": "sctp", "transport": "sctp", "host": "127.0.0.1", "port": 0, "sctp_port": 7})
            listeners[-1].update(sctp)
        self.config: dict[str, Any] = {
            "behaviour": behaviour,
            "options": {},
            "logging": {"level": log_level, "format": "text"},
            "pool": {"shutdown_timeout_ms": 500, **(pool or {})},
            "listeners": listeners,
        }
        self.mux_path = mux_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.addresses: dict[str, Addr] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def quic_addr(self) -> Addr:
        return self.addresses["quic"]

    @property
    def sctp_addr(self) -> Addr:
        return self.addresses["sctp"]

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.config_path.write_text(yaml.safe_dump(self.config))
        env = dict(os.environ)
        paths = [p for p in (self.mux_path, str(REPO_ROOT), env.get("PYTHONPATH")) if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mux.cli", "serve", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self.workdir),  # not the repo: the cwd would come first on sys.path
                env=env,
            )
        want = {lst["name"] for lst in self.config["listeners"]}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in _SERVING.finditer(self.log_text()):
                self.addresses[m.group(1)] = (m.group(2), int(m.group(3)))
            if want <= set(self.addresses):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mux serve did not start; its log:\n{self.log_text()[-4000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def error_lines(self) -> list[str]:
        return [m.group(0) + line for m, line in self._error_matches()]

    def _error_matches(self) -> list[tuple[re.Match[str], str]]:
        text = self.log_text()
        out = []
        for m in _ERROR_LINE.finditer(text):
            end = text.find("\n", m.end())
            out.append((m, text[m.end() : end if end >= 0 else len(text)]))
        return out

    def has_traceback(self) -> bool:
        return "Traceback" in self.log_text()

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def settle(self, quiet: float = 0.1, threshold: float = 0.002, timeout: float = 10.0) -> None:
        """Wait until the server burns less than ``threshold`` s of CPU in ``quiet`` s (its backlog is done)."""
        deadline = time.monotonic() + timeout
        last = self.cpu()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.cpu()
            if now - last < threshold:
                return
            last = now

    def pool_info(self, timeout: float = 3.0) -> dict[str, Any] | None:
        """The pool's total counts, as the server logs them on SIGUSR1 (None if it does not answer)."""
        before = len(_POOL_TOTAL.findall(self.log_text()))
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _POOL_TOTAL.findall(self.log_text())
            if len(found) > before:
                try:
                    info = ast.literal_eval(found[-1][1])
                except (ValueError, SyntaxError):
                    return None
                return dict(info) if isinstance(info, dict) else None
            time.sleep(0.05)
        return None

    def stop(self, timeout: float = 5.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "SCTP_ROOM",
    "NeverCreditQuicConnection",
    "QuicClient",
    "RawSctpPeer",
    "RssSampler",
    "SctpReply",
    "ServerProcess",
    "client_configuration",
    "cpu_seconds",
    "flood",
    "garbage_initial",
    "real_initial_flight",
    "rss_bytes",
    "udp_socket",
]
