"""WebTransport over HTTP/3 on the wire: the close capsule and the error-code mapping (draft-ietf-webtrans-http3).

Pure functions, no state: what ``mux.quic.wt_session`` sends and parses on a session's CONNECT stream, and how a
behaviour's 32-bit stream error codes travel in HTTP/3's error-code space.
"""

from __future__ import annotations

from aioquic.buffer import Buffer, BufferReadError, encode_uint_var  # type: ignore[attr-defined]

#: the capsule that ends a session with an application code and reason (draft §5)
CLOSE_WEBTRANSPORT_SESSION = 0x2843
#: the peer asks us to wind the session down; it carries nothing and needs no answer from mux
DRAIN_WEBTRANSPORT_SESSION = 0x78AE
#: a reason longer than this is a protocol error (draft §5); ours are cut to it
MAX_REASON = 1024
#: a capsule of any other type is skipped as it arrives, so a peer cannot make us buffer one
MAX_CLOSE_CAPSULE = 4 + MAX_REASON

#: HTTP/3 codes of the WebTransport application range (draft §4.3)
FIRST_ERROR = 0x52E4A40FA8DB
LAST_ERROR = 0x52E5AC983162
#: a stream of a session that has ended is reset with this
SESSION_GONE = 0x170D7B68
#: a stream for a session we do not know (and could not wait for) is refused with this
BUFFERED_STREAM_REJECTED = 0x3994BD84
H3_NO_ERROR = 0x100
H3_INTERNAL_ERROR = 0x102
H3_MESSAGE_ERROR = 0x10E


def to_http3(code: int) -> int:
    """A WebTransport application error code (0..2**32-1) as the HTTP/3 code that carries it: the range skips
    the reserved (greased) codes 0x1f * N + 0x21."""
    if not 0 <= code <= 0xFFFFFFFF:
        raise ValueError(f"a WebTransport error code is 0..2**32-1, not {code}")
    return FIRST_ERROR + code + code // 0x1E


def from_http3(code: int) -> int:
    """The application code an HTTP/3 stream error code carries; codes outside the range (an HTTP/3 error of the
    peer's stack, not of its application) arrive as they are."""
    if not FIRST_ERROR <= code <= LAST_ERROR or (code - 0x21) % 0x1F == 0:
        return code
    shifted = code - FIRST_ERROR
    return shifted - shifted // 0x1F


def close_capsule(code: int, reason: str) -> bytes:
    """CLOSE_WEBTRANSPORT_SESSION: a 32-bit code and a UTF-8 reason of at most 1024 bytes (cut on a character)."""
    raw = reason.encode()
    if len(raw) > MAX_REASON:
        raw = raw[:MAX_REASON].decode(errors="ignore").encode()
    body = (code & 0xFFFFFFFF).to_bytes(4, "big") + raw
    return encode_uint_var(CLOSE_WEBTRANSPORT_SESSION) + encode_uint_var(len(body)) + body


class CapsuleError(ValueError):
    """The peer's capsule stream is malformed: the session ends with H3_MESSAGE_ERROR."""


class CapsuleReader:
    """Reads the capsules of a CONNECT stream as they arrive (RFC 9297 §3.2).

    Only CLOSE_WEBTRANSPORT_SESSION is kept whole (it is bounded); any other capsule's value is dropped as it
    comes, so whatever a peer sends costs at most a capsule header and one close capsule of memory.
    """

    def __init__(self) -> None:
        self._buffer = b""
        #: bytes of an unwanted capsule's value still to drop
        self._skip = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Capsules completed by ``data``, as (type, value); only close capsules and drain capsules are returned."""
        found: list[tuple[int, bytes]] = []
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        buffer = self._buffer + data
        while buffer:
            buf = Buffer(data=buffer)
            try:
                kind = buf.pull_uint_var()
                length = buf.pull_uint_var()
            except BufferReadError:
                if len(buffer) > 16:  # two varints take at most 16 bytes
                    raise CapsuleError("malformed capsule header") from None
                break
            start = buf.tell()
            if kind not in (CLOSE_WEBTRANSPORT_SESSION, DRAIN_WEBTRANSPORT_SESSION):
                dropped = min(length, len(buffer) - start)
                self._skip = length - dropped
                buffer = buffer[start + dropped :]
                continue
            if kind == CLOSE_WEBTRANSPORT_SESSION and not 4 <= length <= MAX_CLOSE_CAPSULE:
                raise CapsuleError(f"CLOSE_WEBTRANSPORT_SESSION of {length} bytes")
            if kind == DRAIN_WEBTRANSPORT_SESSION and length:
                raise CapsuleError("DRAIN_WEBTRANSPORT_SESSION with a value")
            if len(buffer) - start < length:
                break
            found.append((kind, buffer[start : start + length]))
            buffer = buffer[start + length :]
        self._buffer = buffer
        return found


def parse_close(value: bytes) -> tuple[int, str]:
    """The code and reason of a CLOSE_WEBTRANSPORT_SESSION value (a reason that is not UTF-8 is replaced)."""
    return int.from_bytes(value[:4], "big"), value[4:].decode(errors="replace")
