"""The Data Channel Establishment Protocol (RFC 8832) and WebRTC's PPIDs (RFC 8831 §8).

A channel is opened by a DATA_CHANNEL_OPEN message on the stream it will use (PPID 50), answered by a
DATA_CHANNEL_ACK on the same stream. Its type says whether messages are ordered and how reliable they are, which
map onto PR-SCTP's per-stream policies (``Association.configure_stream``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

PPID_DCEP = 50
PPID_STRING = 51
PPID_BINARY = 53
PPID_STRING_EMPTY = 56
PPID_BINARY_EMPTY = 57
#: the PPIDs an application's message may carry
DATA_PPIDS = (PPID_STRING, PPID_BINARY, PPID_STRING_EMPTY, PPID_BINARY_EMPTY)

OPEN = 0x03
ACK = 0x02
_OPEN = struct.Struct("!BBHIHH")

RELIABLE = 0x00
PARTIAL_RELIABLE_REXMIT = 0x01
PARTIAL_RELIABLE_TIMED = 0x02
UNORDERED = 0x80


class DcepError(ValueError):
    pass


@dataclass(slots=True)
class ChannelOpen:
    channel_type: int
    priority: int
    reliability_parameter: int
    label: str
    protocol: str

    @property
    def ordered(self) -> bool:
        return not self.channel_type & UNORDERED

    @property
    def reliability(self) -> tuple[str, int]:
        """Our PR-SCTP policy: ``reliable``, ``rexmit`` (at most so many retransmissions) or ``timed`` (ms)."""
        kind = self.channel_type & 0x7F
        if kind == PARTIAL_RELIABLE_REXMIT:
            return "rexmit", self.reliability_parameter
        if kind == PARTIAL_RELIABLE_TIMED:
            return "timed", self.reliability_parameter
        return "reliable", 0

    def props(self) -> dict[str, Any]:
        """``new_stream``'s props, under the names of the W3C ``RTCDataChannel``."""
        props: dict[str, Any] = {"label": self.label, "protocol": self.protocol, "ordered": self.ordered}
        kind, param = self.reliability
        props["max_retransmits"] = param if kind == "rexmit" else None
        props["max_packet_life_time"] = param if kind == "timed" else None
        props["priority"] = self.priority
        return props

    def encode(self) -> bytes:
        label, protocol = self.label.encode(), self.protocol.encode()
        head = _OPEN.pack(OPEN, self.channel_type, self.priority, self.reliability_parameter, len(label), len(protocol))
        return head + label + protocol


def parse_open(data: bytes) -> ChannelOpen:
    if len(data) < _OPEN.size or data[0] != OPEN:
        raise DcepError("not a DATA_CHANNEL_OPEN")
    _, channel_type, priority, param, label_len, protocol_len = _OPEN.unpack_from(data)
    if channel_type & 0x7F not in (RELIABLE, PARTIAL_RELIABLE_REXMIT, PARTIAL_RELIABLE_TIMED):
        raise DcepError(f"unknown channel type {channel_type:#x}")
    end = _OPEN.size + label_len + protocol_len
    if len(data) < end:
        raise DcepError("DATA_CHANNEL_OPEN shorter than its label and protocol")
    label = data[_OPEN.size : _OPEN.size + label_len].decode("utf-8", "replace")
    protocol = data[_OPEN.size + label_len : end].decode("utf-8", "replace")
    return ChannelOpen(channel_type, priority, param, label, protocol)


def ack() -> bytes:
    return bytes([ACK])
