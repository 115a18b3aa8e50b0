"""SCTP chunks (RFC 9260 §3.3, RFC 3758, RFC 6525, RFC 7053, RFC 8260): one dataclass per type, padded encoders,
and the per-type decoders that parse_packet dispatches to."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

from mux.sctp.params import (
    ErrorCause,
    Param,
    ParseError,
    iter_tlvs,
    parse_causes,
    parse_params,
    parse_raw_params,
)

CHUNK_HEADER = struct.Struct("!BBH")
DATA_HEADER = struct.Struct("!BBHIHHI")  # chunk header + tsn, stream id, ssn, ppid
IDATA_HEADER = struct.Struct("!BBHIHHII")  # chunk header + tsn, stream id, reserved, mid, ppid or fsn
INIT_HEADER = struct.Struct("!BBHIIHHI")  # chunk header + tag, a_rwnd, OS, MIS, initial tsn
SACK_HEADER = struct.Struct("!BBHIIHH")  # chunk header + cum tsn, a_rwnd, #gaps, #dups
_DATA_FIXED = struct.Struct("!IHHI")
_IDATA_FIXED = struct.Struct("!IHHII")
_IFWD_ENTRY = struct.Struct("!HHI")  # stream id, reserved bits and U, mid
_INIT_FIXED = struct.Struct("!IIHHI")
_SACK_FIXED = struct.Struct("!IIHH")
_GAP = struct.Struct("!HH")
_U32 = struct.Struct("!I")
_HB_INFO = 1  # Heartbeat Info parameter type
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")  # indexed by length % 4

# DATA and I-DATA flags
FLAG_E = 0x01
FLAG_B = 0x02
FLAG_U = 0x04
FLAG_I = 0x08
FLAG_T = 0x01  # ABORT / SHUTDOWN COMPLETE: verification tag reflected
FLAG_IFWD_U = 0x0001  # I-FORWARD-TSN entry: the skipped message is unordered


def _tlv_list(type_: int, flags: int, fixed: bytes, tlvs: list[bytes]) -> bytes:
    """A chunk whose body ends in TLVs; its length excludes the last TLV's padding (RFC 9260 §3.2)."""
    tail = b"".join(tlvs)
    n = 4 + len(fixed) + len(tail)
    if tlvs:
        last = tlvs[-1]
        n -= len(last) - (int.from_bytes(last[2:4], "big"))
    return CHUNK_HEADER.pack(type_, flags, n) + fixed + tail


def _simple(type_: int, flags: int, body: bytes) -> bytes:
    n = 4 + len(body)
    return CHUNK_HEADER.pack(type_, flags, n) + body + _PAD[n & 3]


@dataclass(slots=True)
class DataChunk:
    tsn: int
    stream_id: int
    ssn: int
    ppid: int
    data: bytes
    unordered: bool = False
    beginning: bool = True
    ending: bool = True
    immediate: bool = False
    TYPE: ClassVar[int] = 0

    def serialize(self) -> bytes:
        data = self.data
        n = 16 + len(data)
        flags = (
            (FLAG_U if self.unordered else 0)
            | (FLAG_B if self.beginning else 0)
            | (FLAG_E if self.ending else 0)
            | (FLAG_I if self.immediate else 0)
        )
        return b"".join(
            (DATA_HEADER.pack(0, flags, n, self.tsn, self.stream_id, self.ssn, self.ppid), data, _PAD[n & 3])
        )


@dataclass(slots=True)
class IDataChunk:
    """RFC 8260 I-DATA: a fragment of message ``mid`` (per stream, a counter each for ordered and unordered messages).

    One wire field holds the PPID in a message's first fragment (whose FSN is 0) and the FSN in the others, so
    ``ppid`` is 0 unless ``beginning`` and ``fsn`` is 0 when it is; other values are not encoded.
    """

    tsn: int
    stream_id: int
    mid: int
    ppid: int
    fsn: int
    data: bytes
    unordered: bool = False
    beginning: bool = True
    ending: bool = True
    immediate: bool = False
    TYPE: ClassVar[int] = 64

    def serialize(self) -> bytes:
        data = self.data
        n = 20 + len(data)
        flags = (
            (FLAG_U if self.unordered else 0)
            | (FLAG_B if self.beginning else 0)
            | (FLAG_E if self.ending else 0)
            | (FLAG_I if self.immediate else 0)
        )
        field = self.ppid if self.beginning else self.fsn
        return b"".join(
            (IDATA_HEADER.pack(64, flags, n, self.tsn, self.stream_id, 0, self.mid, field), data, _PAD[n & 3])
        )

    @property
    def ssn(self) -> int:
        """The MID, under DATA's name: the association's receive path takes either chunk."""
        return self.mid


@dataclass(slots=True)
class InitChunk:
    initiate_tag: int
    a_rwnd: int
    num_ostreams: int
    max_instreams: int
    initial_tsn: int
    params: list[Param] = field(default_factory=list)
    TYPE: ClassVar[int] = 1

    def serialize(self) -> bytes:
        return _tlv_list(
            self.TYPE,
            0,
            _INIT_FIXED.pack(self.initiate_tag, self.a_rwnd, self.num_ostreams, self.max_instreams, self.initial_tsn),
            [p.serialize() for p in self.params],
        )


@dataclass(slots=True)
class InitAckChunk:
    initiate_tag: int
    a_rwnd: int
    num_ostreams: int
    max_instreams: int
    initial_tsn: int
    params: list[Param] = field(default_factory=list)
    TYPE: ClassVar[int] = 2

    def serialize(self) -> bytes:
        return _tlv_list(
            self.TYPE,
            0,
            _INIT_FIXED.pack(self.initiate_tag, self.a_rwnd, self.num_ostreams, self.max_instreams, self.initial_tsn),
            [p.serialize() for p in self.params],
        )


@dataclass(slots=True)
class SackChunk:
    """Gap blocks are (start, end) offsets from cum_tsn, exactly as on the wire."""

    cum_tsn: int
    a_rwnd: int
    gaps: list[tuple[int, int]] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    TYPE: ClassVar[int] = 3

    def serialize(self) -> bytes:
        gaps = self.gaps
        dups = self.duplicates
        ng = len(gaps)
        nd = len(dups)
        head = SACK_HEADER.pack(3, 0, 16 + 4 * (ng + nd), self.cum_tsn, self.a_rwnd, ng, nd)
        if not ng and not nd:
            return head
        parts = [head]
        if ng:
            pack = _GAP.pack
            parts += [pack(s, e) for s, e in gaps]
        if nd:
            parts.append(struct.pack(f"!{nd}I", *dups))
        return b"".join(parts)


@dataclass(slots=True)
class HeartbeatChunk:
    """`info` is the Heartbeat Info parameter's value; the peer echoes it back untouched."""

    info: bytes
    TYPE: ClassVar[int] = 4

    def serialize(self) -> bytes:
        return _tlv_list(self.TYPE, 0, b"", [_hb_tlv(self.info)])


@dataclass(slots=True)
class HeartbeatAckChunk:
    info: bytes
    TYPE: ClassVar[int] = 5

    def serialize(self) -> bytes:
        return _tlv_list(self.TYPE, 0, b"", [_hb_tlv(self.info)])


def _hb_tlv(info: bytes) -> bytes:
    n = 4 + len(info)
    return _GAP.pack(_HB_INFO, n) + info + _PAD[n & 3]


@dataclass(slots=True)
class AbortChunk:
    causes: list[ErrorCause] = field(default_factory=list)
    t_bit: bool = False
    TYPE: ClassVar[int] = 6

    def serialize(self) -> bytes:
        return _tlv_list(self.TYPE, FLAG_T if self.t_bit else 0, b"", [c.serialize() for c in self.causes])


@dataclass(slots=True)
class ShutdownChunk:
    cum_tsn: int
    TYPE: ClassVar[int] = 7

    def serialize(self) -> bytes:
        return CHUNK_HEADER.pack(7, 0, 8) + _U32.pack(self.cum_tsn)


@dataclass(slots=True)
class ShutdownAckChunk:
    TYPE: ClassVar[int] = 8

    def serialize(self) -> bytes:
        return CHUNK_HEADER.pack(8, 0, 4)


@dataclass(slots=True)
class ErrorChunk:
    causes: list[ErrorCause] = field(default_factory=list)
    TYPE: ClassVar[int] = 9

    def serialize(self) -> bytes:
        return _tlv_list(self.TYPE, 0, b"", [c.serialize() for c in self.causes])


@dataclass(slots=True)
class CookieEchoChunk:
    cookie: bytes
    TYPE: ClassVar[int] = 10

    def serialize(self) -> bytes:
        return _simple(10, 0, self.cookie)


@dataclass(slots=True)
class CookieAckChunk:
    TYPE: ClassVar[int] = 11

    def serialize(self) -> bytes:
        return CHUNK_HEADER.pack(11, 0, 4)


@dataclass(slots=True)
class ShutdownCompleteChunk:
    t_bit: bool = False
    TYPE: ClassVar[int] = 14

    def serialize(self) -> bytes:
        return CHUNK_HEADER.pack(14, FLAG_T if self.t_bit else 0, 4)


@dataclass(slots=True)
class ForwardTsnChunk:
    """RFC 3758: `streams` are (stream id, ssn) pairs for ordered streams whose messages were abandoned."""

    new_cum_tsn: int
    streams: list[tuple[int, int]] = field(default_factory=list)
    TYPE: ClassVar[int] = 192

    def serialize(self) -> bytes:
        n = 8 + 4 * len(self.streams)
        pack = _GAP.pack
        return b"".join(
            [CHUNK_HEADER.pack(192, 0, n), _U32.pack(self.new_cum_tsn), *(pack(s, q) for s, q in self.streams)]
        )


@dataclass(slots=True)
class IForwardTsnChunk:
    """RFC 8260 I-FORWARD-TSN: ``streams`` are (stream id, unordered, mid) entries, each the largest MID abandoned
    on that stream among its ordered (or unordered) messages."""

    new_cum_tsn: int
    streams: list[tuple[int, bool, int]] = field(default_factory=list)
    TYPE: ClassVar[int] = 194

    def serialize(self) -> bytes:
        n = 8 + 8 * len(self.streams)
        pack = _IFWD_ENTRY.pack
        return b"".join(
            [
                CHUNK_HEADER.pack(194, 0, n),
                _U32.pack(self.new_cum_tsn),
                *(pack(s, FLAG_IFWD_U if u else 0, m) for s, u, m in self.streams),
            ]
        )


@dataclass(slots=True)
class ReconfigChunk:
    """RFC 6525 RE-CONFIG; its parameters are kept as raw UnknownParam TLVs for now."""

    params: list[Param] = field(default_factory=list)
    TYPE: ClassVar[int] = 130

    def serialize(self) -> bytes:
        return _tlv_list(self.TYPE, 0, b"", [p.serialize() for p in self.params])


@dataclass(slots=True)
class UnknownChunk:
    """A chunk type we do not implement, kept verbatim so it can be reported back (Unrecognized Chunk Type)."""

    type: int
    flags: int
    body: bytes
    TYPE: ClassVar[int] = -1  # not a wire type: look at `.type`

    def serialize(self) -> bytes:
        return _simple(self.type, self.flags, self.body)


Chunk: TypeAlias = (
    DataChunk
    | InitChunk
    | InitAckChunk
    | SackChunk
    | HeartbeatChunk
    | HeartbeatAckChunk
    | AbortChunk
    | ShutdownChunk
    | ShutdownAckChunk
    | ErrorChunk
    | CookieEchoChunk
    | CookieAckChunk
    | ShutdownCompleteChunk
    | ForwardTsnChunk
    | ReconfigChunk
    | IDataChunk
    | IForwardTsnChunk
    | UnknownChunk
)

# --- decoders: (flags, body after the 4-byte chunk header, unpadded) -> Chunk -------------------------------------


def parse_data(flags: int, body: memoryview) -> Chunk:
    if len(body) < 12:
        raise ParseError("data chunk too short")
    tsn, sid, ssn, ppid = _DATA_FIXED.unpack_from(body)
    return DataChunk(
        tsn,
        sid,
        ssn,
        ppid,
        body[12:].tobytes(),
        bool(flags & FLAG_U),
        bool(flags & FLAG_B),
        bool(flags & FLAG_E),
        bool(flags & FLAG_I),
    )


def parse_idata(flags: int, body: memoryview) -> Chunk:
    if len(body) < 16:
        raise ParseError("i-data chunk too short")
    tsn, sid, _reserved, mid, field = _IDATA_FIXED.unpack_from(body)
    b = bool(flags & FLAG_B)
    return IDataChunk(
        tsn,
        sid,
        mid,
        field if b else 0,
        0 if b else field,
        body[16:].tobytes(),
        bool(flags & FLAG_U),
        b,
        bool(flags & FLAG_E),
        bool(flags & FLAG_I),
    )


def _parse_init_fields(body: memoryview) -> tuple[int, int, int, int, int, list[Param]]:
    if len(body) < 16:
        raise ParseError("init chunk too short")
    tag, rwnd, os_, mis, tsn = _INIT_FIXED.unpack_from(body)
    return tag, rwnd, os_, mis, tsn, parse_params(body[16:])


def parse_init(flags: int, body: memoryview) -> Chunk:
    return InitChunk(*_parse_init_fields(body))


def parse_init_ack(flags: int, body: memoryview) -> Chunk:
    return InitAckChunk(*_parse_init_fields(body))


def parse_sack(flags: int, body: memoryview) -> Chunk:
    if len(body) < 12:
        raise ParseError("sack chunk too short")
    cum, rwnd, ng, nd = _SACK_FIXED.unpack_from(body)
    gap_end = 12 + 4 * ng
    if len(body) != gap_end + 4 * nd:
        raise ParseError("sack length mismatch")
    gaps: list[tuple[int, int]] = list(_GAP.iter_unpack(body[12:gap_end])) if ng else []
    dups: list[int] = list(struct.unpack_from(f"!{nd}I", body, gap_end)) if nd else []
    return SackChunk(cum, rwnd, gaps, dups)


def _hb_info(body: memoryview) -> bytes:
    tlvs = list(iter_tlvs(body))
    if len(tlvs) != 1 or tlvs[0][0] != _HB_INFO:
        raise ParseError("heartbeat without single info param")
    return tlvs[0][1].tobytes()


def parse_heartbeat(flags: int, body: memoryview) -> Chunk:
    return HeartbeatChunk(_hb_info(body))


def parse_heartbeat_ack(flags: int, body: memoryview) -> Chunk:
    return HeartbeatAckChunk(_hb_info(body))


def parse_abort(flags: int, body: memoryview) -> Chunk:
    return AbortChunk(parse_causes(body), bool(flags & FLAG_T))


def parse_shutdown(flags: int, body: memoryview) -> Chunk:
    if len(body) != 4:
        raise ParseError("shutdown length")
    return ShutdownChunk(_U32.unpack_from(body)[0])


def _empty(name: str, make: Callable[[], Chunk]) -> Callable[[int, memoryview], Chunk]:
    def parse(flags: int, body: memoryview) -> Chunk:
        if len(body):
            raise ParseError(f"{name} length")
        return make()

    return parse


def parse_shutdown_complete(flags: int, body: memoryview) -> Chunk:
    if len(body):
        raise ParseError("shutdown complete length")
    return ShutdownCompleteChunk(bool(flags & FLAG_T))


def parse_error(flags: int, body: memoryview) -> Chunk:
    return ErrorChunk(parse_causes(body))


def parse_cookie_echo(flags: int, body: memoryview) -> Chunk:
    return CookieEchoChunk(body.tobytes())


def parse_forward_tsn(flags: int, body: memoryview) -> Chunk:
    if len(body) < 4 or len(body) & 3:
        raise ParseError("forward tsn length")
    return ForwardTsnChunk(_U32.unpack_from(body)[0], list(_GAP.iter_unpack(body[4:])))


def parse_iforward_tsn(flags: int, body: memoryview) -> Chunk:
    if len(body) < 4 or (len(body) - 4) & 7:
        raise ParseError("i-forward tsn length")
    return IForwardTsnChunk(
        _U32.unpack_from(body)[0],
        [(s, bool(f & FLAG_IFWD_U), m) for s, f, m in _IFWD_ENTRY.iter_unpack(body[4:])],
    )


def parse_reconfig(flags: int, body: memoryview) -> Chunk:
    return ReconfigChunk(parse_raw_params(body))


CHUNK_PARSERS: dict[int, Callable[[int, memoryview], Chunk]] = {
    0: parse_data,
    1: parse_init,
    2: parse_init_ack,
    3: parse_sack,
    4: parse_heartbeat,
    5: parse_heartbeat_ack,
    6: parse_abort,
    7: parse_shutdown,
    8: _empty("shutdown ack", ShutdownAckChunk),
    9: parse_error,
    10: parse_cookie_echo,
    11: _empty("cookie ack", CookieAckChunk),
    14: parse_shutdown_complete,
    64: parse_idata,
    130: parse_reconfig,
    192: parse_forward_tsn,
    194: parse_iforward_tsn,
}
