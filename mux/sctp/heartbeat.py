"""HEARTBEATs on an idle path (RFC 9260 §8.3): when the next is due, the probe, and what its ack measures.

The association owns the timer and the error counter (this part works on it, as dcsctp's heartbeat handler works
on its socket's context); this keeps the nonce that proves an ack answers our probe (an ack we did not ask for is
ignored) and the send time it carries back, for an RTT sample.
"""

from __future__ import annotations

import random
import struct
from typing import TYPE_CHECKING

from mux.sctp.chunks import HeartbeatChunk
from mux.sctp.state import DATA_FLOWS

if TYPE_CHECKING:
    from mux.sctp.association import Association

_INFO = struct.Struct("!Qd")  # nonce, when sent


class Heartbeat:
    __slots__ = ("_rng", "a", "interval", "nonce")

    def __init__(self, assoc: Association, rng: random.Random) -> None:
        self.a = assoc
        self.interval = assoc.config.hbinterval / 1000.0
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

    def on_timer(self, now: float) -> None:
        a = self.a
        if a.state not in DATA_FLOWS:
            a._t_hb = None
            return
        rtt = a._rtt
        if self.nonce is not None:  # the last probe went unanswered (§8.3)
            a._error_count += 1
            rtt.backoff()
            a._paths.primary_missed(now)  # an error of the primary path too: with another path, it may fail over
            rtt = a._rtt
            if a._error_count > a.config.asocmaxrxt:
                a._lost()
                return
        a._ctrl.append(self.probe(now))
        a._t_hb = now + rtt.rto

    def on_ack(self, info: bytes, now: float) -> None:
        a = self.a
        sample = self.acked(info, now)
        if sample is None:
            return
        a._error_count = 0
        a._paths.primary.errors = 0
        a._rtt.sample(sample)
        if a.config.hbinterval and a.state in DATA_FLOWS:
            a._t_hb = self.due(now, a._rtt.rto)
