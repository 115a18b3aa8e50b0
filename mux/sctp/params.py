"""SCTP variable-length parameters and error causes: the TLVs carried inside chunks (RFC 9260 §3.2.1, §3.3.10).

ParseError lives here, the lowest layer of the codec, so chunks and params can raise it without an import cycle;
`mux.sctp.packet` re-exports it as the public name.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias


class ParseError(ValueError):
    """The only exception the codec's parsers raise; the message is a short reason fit for a counter label."""


TLV_HEADER = struct.Struct("!HH")
_U32 = struct.Struct("!I")
_U16_PAIR = struct.Struct("!HH")
_U32x2 = struct.Struct("!II")
_U32x3 = struct.Struct("!III")
_ADD = struct.Struct("!IHH")
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")  # indexed by length % 4


def encode_tlv(type_: int, value: bytes) -> bytes:
    """One TLV padded to 4 bytes; the length field counts header and value, never the padding."""
    n = 4 + len(value)
    return TLV_HEADER.pack(type_, n) + value + _PAD[n & 3]


def iter_tlvs(body: memoryview) -> Iterable[tuple[int, memoryview, memoryview]]:
    """Yield (type, value, raw_unpadded_tlv) for each TLV in `body`.

    The last TLV may come without its padding because a chunk's length excludes the padding of its last
    parameter (RFC 9260 §3.2); a length below 4 or past the end is malformed.
    """
    end = len(body)
    off = 0
    while off < end:
        if end - off < 4:
            raise ParseError("truncated tlv header")
        type_, length = TLV_HEADER.unpack_from(body, off)
        if length < 4:
            raise ParseError("tlv length < 4")
        stop = off + length
        if stop > end:
            raise ParseError("tlv beyond chunk")
        yield type_, body[off + 4 : stop], body[off:stop]
        off = (stop + 3) & ~3


# --- parameters -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class IPv4AddressParam:
    address: str
    TYPE: ClassVar[int] = 5

    def value(self) -> bytes:
        return socket.inet_pton(socket.AF_INET, self.address)

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, self.value())


@dataclass(slots=True)
class IPv6AddressParam:
    address: str
    TYPE: ClassVar[int] = 6

    def value(self) -> bytes:
        return socket.inet_pton(socket.AF_INET6, self.address)

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, self.value())


@dataclass(slots=True)
class StateCookieParam:
    cookie: bytes
    TYPE: ClassVar[int] = 7

    def value(self) -> bytes:
        return self.cookie

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, self.cookie)


@dataclass(slots=True)
class UnrecognizedParam:
    """Carries the peer's unrecognized parameter TLV verbatim back to it in an INIT-ACK."""

    param: bytes
    TYPE: ClassVar[int] = 8

    def value(self) -> bytes:
        return self.param

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, self.param)


@dataclass(slots=True)
class CookiePreservativeParam:
    increment_ms: int
    TYPE: ClassVar[int] = 9

    def value(self) -> bytes:
        return _U32.pack(self.increment_ms)

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, self.value())


@dataclass(slots=True)
class HostNameParam:
    """Deprecated by RFC 9260 (answered with Unresolvable Address); `name` is the raw value, NUL terminator included."""

    name: bytes
    TYPE: ClassVar[int] = 11

    def value(self) -> bytes:
        return self.name

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, self.name)


@dataclass(slots=True)
class SupportedAddressTypesParam:
    types: list[int]
    TYPE: ClassVar[int] = 12

    def value(self) -> bytes:
        return struct.pack(f"!{len(self.types)}H", *self.types)

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, self.value())


@dataclass(slots=True)
class SupportedExtensionsParam:
    chunk_types: list[int]
    TYPE: ClassVar[int] = 0x8008

    def value(self) -> bytes:
        return bytes(self.chunk_types)

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, self.value())


@dataclass(slots=True)
class ForwardTsnSupportedParam:
    TYPE: ClassVar[int] = 0xC000

    def value(self) -> bytes:
        return b""

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, b"")


@dataclass(slots=True)
class AdaptationLayerIndicationParam:
    """RFC 5061 §4.2.7: a 32-bit code naming the upper layer; mux offers ``extensions.MUX_ADAPTATION`` so two mux
    peers know each other (see ``mux.sctp.extensions``)."""

    code: int
    TYPE: ClassVar[int] = 0xC006

    def value(self) -> bytes:
        return _U32.pack(self.code & 0xFFFFFFFF)

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, self.value())


# --- RE-CONFIG parameters (RFC 6525 §4): carried only in RE-CONFIG chunks, decoded by ``parse_reconfig_params`` ---


@dataclass(slots=True)
class OutgoingSsnResetRequest:
    """§4.1: the sender resets its outgoing streams (all of them when ``streams`` is empty) after ``last_tsn``."""

    request_seq: int
    response_seq: int
    last_tsn: int
    streams: list[int] = field(default_factory=list)
    TYPE: ClassVar[int] = 13

    def serialize(self) -> bytes:
        body = _U32x3.pack(self.request_seq, self.response_seq, self.last_tsn)
        return encode_tlv(self.TYPE, body + struct.pack(f"!{len(self.streams)}H", *self.streams))


@dataclass(slots=True)
class IncomingSsnResetRequest:
    """§4.2: the sender asks its peer to reset the peer's outgoing streams (all when ``streams`` is empty)."""

    request_seq: int
    streams: list[int] = field(default_factory=list)
    TYPE: ClassVar[int] = 14

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, _U32.pack(self.request_seq) + struct.pack(f"!{len(self.streams)}H", *self.streams))


@dataclass(slots=True)
class SsnTsnResetRequest:
    """§4.3: reset every SSN and the TSNs of the association (mux answers Denied)."""

    request_seq: int
    TYPE: ClassVar[int] = 15

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, _U32.pack(self.request_seq))


@dataclass(slots=True)
class ReconfigResponse:
    """§4.4: the result of request ``response_seq``; the two TSNs only answer an SSN/TSN Reset Request."""

    response_seq: int
    result: int
    sender_next_tsn: int | None = None
    receiver_next_tsn: int | None = None
    TYPE: ClassVar[int] = 16

    def serialize(self) -> bytes:
        body = _U32x2.pack(self.response_seq, self.result)
        if self.sender_next_tsn is not None and self.receiver_next_tsn is not None:
            body += _U32x2.pack(self.sender_next_tsn, self.receiver_next_tsn)
        return encode_tlv(self.TYPE, body)


@dataclass(slots=True)
class AddOutgoingStreamsRequest:
    """§4.5: the sender adds ``count`` outgoing streams (the receiver's incoming ones)."""

    request_seq: int
    count: int
    TYPE: ClassVar[int] = 17

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, _ADD.pack(self.request_seq, self.count, 0))


@dataclass(slots=True)
class AddIncomingStreamsRequest:
    """§4.6: the sender asks its peer to add ``count`` outgoing streams (the sender's incoming ones)."""

    request_seq: int
    count: int
    TYPE: ClassVar[int] = 18

    def serialize(self) -> bytes:
        return encode_tlv(self.TYPE, _ADD.pack(self.request_seq, self.count, 0))


ReconfigParam: TypeAlias = (
    OutgoingSsnResetRequest
    | IncomingSsnResetRequest
    | SsnTsnResetRequest
    | ReconfigResponse
    | AddOutgoingStreamsRequest
    | AddIncomingStreamsRequest
)

#: RE-CONFIG results (RFC 6525 §4.4)
RESULT_NOTHING_TO_DO = 0
RESULT_PERFORMED = 1
RESULT_DENIED = 2
RESULT_WRONG_SSN = 3
RESULT_ALREADY_IN_PROGRESS = 4
RESULT_BAD_SEQUENCE = 5
RESULT_IN_PROGRESS = 6
RESULT_NAMES = {
    RESULT_NOTHING_TO_DO: "success_nothing_to_do",
    RESULT_PERFORMED: "success_performed",
    RESULT_DENIED: "denied",
    RESULT_WRONG_SSN: "error_wrong_ssn",
    RESULT_ALREADY_IN_PROGRESS: "error_request_already_in_progress",
    RESULT_BAD_SEQUENCE: "error_bad_sequence_number",
    RESULT_IN_PROGRESS: "in_progress",
}


def _streams(v: memoryview, offset: int) -> list[int]:
    if (len(v) - offset) & 1:
        raise ParseError("odd stream list")
    return [s for (s,) in struct.iter_unpack("!H", v[offset:])]


def _r_outgoing(v: memoryview) -> ReconfigParam:
    if len(v) < 12:
        raise ParseError("outgoing ssn reset request length")
    req, resp, last = _U32x3.unpack_from(v)
    return OutgoingSsnResetRequest(req, resp, last, _streams(v, 12))


def _r_incoming(v: memoryview) -> ReconfigParam:
    if len(v) < 4:
        raise ParseError("incoming ssn reset request length")
    return IncomingSsnResetRequest(_U32.unpack_from(v)[0], _streams(v, 4))


def _r_ssn_tsn(v: memoryview) -> ReconfigParam:
    if len(v) != 4:
        raise ParseError("ssn/tsn reset request length")
    return SsnTsnResetRequest(_U32.unpack_from(v)[0])


def _r_response(v: memoryview) -> ReconfigParam:
    if len(v) == 8:
        return ReconfigResponse(*_U32x2.unpack_from(v))
    if len(v) == 16:
        seq, result = _U32x2.unpack_from(v)
        sender, receiver = _U32x2.unpack_from(v, 8)
        return ReconfigResponse(seq, result, sender, receiver)
    raise ParseError("re-configuration response length")


def _r_add(
    kind: type[AddOutgoingStreamsRequest] | type[AddIncomingStreamsRequest],
) -> Callable[[memoryview], ReconfigParam]:
    def parse(v: memoryview) -> ReconfigParam:
        if len(v) != 8:
            raise ParseError("add streams request length")
        seq, count, _reserved = _ADD.unpack_from(v)
        return kind(seq, count)

    return parse


_RECONFIG_PARSERS: dict[int, Callable[[memoryview], ReconfigParam]] = {
    13: _r_outgoing,
    14: _r_incoming,
    15: _r_ssn_tsn,
    16: _r_response,
    17: _r_add(AddOutgoingStreamsRequest),
    18: _r_add(AddIncomingStreamsRequest),
}


def parse_reconfig_params(params: Iterable[Param]) -> list[ReconfigParam]:
    """Decode a RE-CONFIG chunk's parameters (kept raw by the chunk codec). Raises ``ParseError`` on a malformed
    or unknown one: RFC 6525 defines no optional RE-CONFIG parameters, so the chunk is dropped whole."""
    out: list[ReconfigParam] = []
    for p in params:
        if type(p) is not UnknownParam:
            out.append(p)  # type: ignore[arg-type]  # built locally (tests), already decoded
            continue
        parser = _RECONFIG_PARSERS.get(p.type)
        if parser is None:
            raise ParseError(f"re-config parameter type {p.type}")
        out.append(parser(memoryview(p.value)))
    return out


@dataclass(slots=True)
class UnknownParam:
    """Any parameter we do not decode; kept verbatim so it can be reported or skipped per its type's upper bits."""

    type: int
    value: bytes
    TYPE: ClassVar[int] = -1  # not a wire type: look at `.type`

    def serialize(self) -> bytes:
        return encode_tlv(self.type, self.value)


Param: TypeAlias = (
    IPv4AddressParam
    | IPv6AddressParam
    | StateCookieParam
    | UnrecognizedParam
    | CookiePreservativeParam
    | HostNameParam
    | SupportedAddressTypesParam
    | SupportedExtensionsParam
    | ForwardTsnSupportedParam
    | AdaptationLayerIndicationParam
    | OutgoingSsnResetRequest
    | IncomingSsnResetRequest
    | SsnTsnResetRequest
    | ReconfigResponse
    | AddOutgoingStreamsRequest
    | AddIncomingStreamsRequest
    | UnknownParam
)


def _p_ipv4(v: memoryview) -> Param:
    if len(v) != 4:
        raise ParseError("ipv4 address length")
    return IPv4AddressParam(socket.inet_ntop(socket.AF_INET, v))


def _p_ipv6(v: memoryview) -> Param:
    if len(v) != 16:
        raise ParseError("ipv6 address length")
    return IPv6AddressParam(socket.inet_ntop(socket.AF_INET6, v))


def _p_cookie_preservative(v: memoryview) -> Param:
    if len(v) != 4:
        raise ParseError("cookie preservative length")
    return CookiePreservativeParam(_U32.unpack_from(v)[0])


def _p_address_types(v: memoryview) -> Param:
    if len(v) & 1:
        raise ParseError("supported address types length")
    return SupportedAddressTypesParam([t for (t,) in struct.iter_unpack("!H", v)])


def _p_fwd_tsn_supported(v: memoryview) -> Param:
    # The parameter has no value; a non-empty one is tolerated (receivers ignore what they do not need).
    return ForwardTsnSupportedParam()


def _p_adaptation(v: memoryview) -> Param:
    if len(v) != 4:
        raise ParseError("adaptation layer indication length")
    return AdaptationLayerIndicationParam(_U32.unpack_from(v)[0])


_PARAM_PARSERS: dict[int, Callable[[memoryview], Param]] = {
    5: _p_ipv4,
    6: _p_ipv6,
    7: lambda v: StateCookieParam(bytes(v)),
    8: lambda v: UnrecognizedParam(bytes(v)),
    9: _p_cookie_preservative,
    11: lambda v: HostNameParam(bytes(v)),
    12: _p_address_types,
    0x8008: lambda v: SupportedExtensionsParam(list(v)),
    0xC000: _p_fwd_tsn_supported,
    0xC006: _p_adaptation,
}


def parse_params(body: memoryview) -> list[Param]:
    """Decode a parameter list; unknown types become UnknownParam (apply `param_action` to them)."""
    out: list[Param] = []
    get = _PARAM_PARSERS.get
    for type_, value, _raw in iter_tlvs(body):
        parser = get(type_)
        out.append(parser(value) if parser is not None else UnknownParam(type_, bytes(value)))
    return out


def parse_raw_params(body: memoryview) -> list[Param]:
    """Outer TLVs only, every one as UnknownParam (RE-CONFIG's parameters are not decoded yet)."""
    return [UnknownParam(t, bytes(v)) for t, v, _raw in iter_tlvs(body)]


def serialize_params(params: Iterable[Param]) -> bytes:
    """Concatenated padded TLVs (the last one padded too; chunk builders subtract that padding from their length)."""
    return b"".join([p.serialize() for p in params])


def param_action(param_type: int) -> tuple[bool, bool]:
    """(stop_processing, report) from the two high bits of an unrecognized parameter type (RFC 9260 §3.2.1).

    00 stop and discard, 01 stop and report, 10 skip, 11 skip and report.
    """
    bits = (param_type >> 14) & 3
    return (bits < 2, bool(bits & 1))


# --- error causes -----------------------------------------------------------------------------------------------

INVALID_STREAM = 1
MISSING_PARAM = 2
STALE_COOKIE = 3
OUT_OF_RESOURCE = 4
UNRESOLVABLE_ADDRESS = 5
UNRECOGNIZED_CHUNK = 6
INVALID_MANDATORY_PARAM = 7
UNRECOGNIZED_PARAMS = 8
NO_USER_DATA = 9
COOKIE_WHILE_SHUTTING_DOWN = 10
RESTART_WITH_NEW_ADDRESSES = 11
USER_INITIATED_ABORT = 12
PROTOCOL_VIOLATION = 13

CAUSE_NAMES: dict[int, str] = {
    INVALID_STREAM: "invalid_stream",
    MISSING_PARAM: "missing_mandatory_parameter",
    STALE_COOKIE: "stale_cookie",
    OUT_OF_RESOURCE: "out_of_resource",
    UNRESOLVABLE_ADDRESS: "unresolvable_address",
    UNRECOGNIZED_CHUNK: "unrecognized_chunk_type",
    INVALID_MANDATORY_PARAM: "invalid_mandatory_parameter",
    UNRECOGNIZED_PARAMS: "unrecognized_parameters",
    NO_USER_DATA: "no_user_data",
    COOKIE_WHILE_SHUTTING_DOWN: "cookie_received_while_shutting_down",
    RESTART_WITH_NEW_ADDRESSES: "restart_with_new_addresses",
    USER_INITIATED_ABORT: "user_initiated_abort",
    PROTOCOL_VIOLATION: "protocol_violation",
}


@dataclass(slots=True)
class ErrorCause:
    """One cause TLV of an ERROR or ABORT chunk; `info` is the cause-specific body, kept raw."""

    code: int
    info: bytes

    def serialize(self) -> bytes:
        return encode_tlv(self.code, self.info)


def parse_causes(body: memoryview) -> list[ErrorCause]:
    return [ErrorCause(code, bytes(info)) for code, info, _raw in iter_tlvs(body)]


def serialize_causes(causes: Iterable[ErrorCause]) -> bytes:
    return b"".join([c.serialize() for c in causes])


def invalid_stream_cause(stream_id: int) -> ErrorCause:
    return ErrorCause(INVALID_STREAM, _U16_PAIR.pack(stream_id, 0))


def missing_param_cause(types: Iterable[int]) -> ErrorCause:
    ts = list(types)
    return ErrorCause(MISSING_PARAM, _U32.pack(len(ts)) + struct.pack(f"!{len(ts)}H", *ts))


def stale_cookie_cause(staleness_us: int) -> ErrorCause:
    return ErrorCause(STALE_COOKIE, _U32.pack(min(max(staleness_us, 0), 0xFFFFFFFF)))


def out_of_resource_cause() -> ErrorCause:
    return ErrorCause(OUT_OF_RESOURCE, b"")


def unresolvable_address_cause(raw_address_param: bytes) -> ErrorCause:
    return ErrorCause(UNRESOLVABLE_ADDRESS, raw_address_param)


def unrecognized_chunk_cause(raw_chunk: bytes) -> ErrorCause:
    """`raw_chunk` is the unrecognized chunk as received (UnknownChunk.serialize())."""
    return ErrorCause(UNRECOGNIZED_CHUNK, raw_chunk)


def invalid_mandatory_param_cause() -> ErrorCause:
    return ErrorCause(INVALID_MANDATORY_PARAM, b"")


def unrecognized_params_cause(raw_params: bytes) -> ErrorCause:
    """`raw_params` are the unrecognized parameter TLVs, concatenated and padded."""
    return ErrorCause(UNRECOGNIZED_PARAMS, raw_params)


def no_user_data_cause(tsn: int) -> ErrorCause:
    return ErrorCause(NO_USER_DATA, _U32.pack(tsn))


def cookie_while_shutting_down_cause() -> ErrorCause:
    return ErrorCause(COOKIE_WHILE_SHUTTING_DOWN, b"")


def restart_with_new_addresses_cause(raw_address_params: bytes) -> ErrorCause:
    return ErrorCause(RESTART_WITH_NEW_ADDRESSES, raw_address_params)


def user_abort_cause(reason: bytes) -> ErrorCause:
    return ErrorCause(USER_INITIATED_ABORT, reason)


def protocol_violation_cause(info: bytes) -> ErrorCause:
    return ErrorCause(PROTOCOL_VIOLATION, info)


def describe(cause: ErrorCause) -> str:
    """Short human text for logs and close events; never raises, whatever a peer put in `info`."""
    name = CAUSE_NAMES.get(cause.code, f"cause_{cause.code}")
    info = cause.info
    code = cause.code
    if code == INVALID_STREAM and len(info) >= 2:
        return f"{name} stream={int.from_bytes(info[:2], 'big')}"
    if code == STALE_COOKIE and len(info) >= 4:
        return f"{name} staleness_us={int.from_bytes(info[:4], 'big')}"
    if code == NO_USER_DATA and len(info) >= 4:
        return f"{name} tsn={int.from_bytes(info[:4], 'big')}"
    if code == MISSING_PARAM and len(info) >= 4:
        n = min(int.from_bytes(info[:4], "big"), (len(info) - 4) // 2)
        types = [int.from_bytes(info[4 + 2 * i : 6 + 2 * i], "big") for i in range(n)]
        return f"{name} types={types}"
    if code == UNRECOGNIZED_CHUNK and info:
        return f"{name} type={info[0]}"
    if code in (USER_INITIATED_ABORT, PROTOCOL_VIOLATION) and info:
        return f"{name}: {info[:200].decode('utf-8', 'replace')}"
    if info:
        return f"{name} info={info[:32].hex()}"
    return name
