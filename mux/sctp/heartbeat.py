"""HEARTBEATs on an idle path (RFC 9260 §8.3): when the next is due, the probe, and what its ack measures.

The association owns the timer and the error counter; this keeps the nonce that proves an ack answers our
probe (an ack we did not ask for is ignored) and the send time it carries back, for an RTT sample.
"""

from __future__ import annotations

import random
import struct

from mux.sctp.chunks import HeartbeatChunk

_INFO = struct.Struct("!Qd")  # nonce, when sent


class Heartbeat:
    __slots__ = ("_rng", "interval", "nonce")

    def __init__(self, interval_ms: int, rng: random.Random) -> None:
        self.interval = interval_ms / 1000.0
        self._rng = rng
        #: the nonce of the probe awaiting its ack, if any
        self.nonce: int | None = None

    def due(self, now: float, rto: float) -> float:
        """When the next probe goes: the interval plus RTO jittered by ±50% (§8.3)."""
        return now + self.interval + rto * (0.5 + self._rng.random())

    def probe(self, now: float) -> bytes:
        """A new HEARTBEAT chunk (encoded); an earlier probe still unanswered is forgotten."""
        nonce = self._rng.getrandbits(64)
        self.nonce = nonce
        return HeartbeatChunk(_INFO.pack(nonce, now)).serialize()

    def acked(self, info: bytes, now: float) -> float | None:
        """The RTT a HEARTBEAT-ACK measures, when it answers our current probe; None otherwise."""
        if len(info) != _INFO.size or self.nonce is None:
            return None
        nonce, sent_at = _INFO.unpack(info)
        if nonce != self.nonce:
            return None
        self.nonce = None
        return now - float(sent_at)
