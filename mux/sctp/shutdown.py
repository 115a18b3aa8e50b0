"""An association's graceful close (RFC 9260 §9.2): SHUTDOWN once nothing is left to send or in flight, SHUTDOWN-ACK,
SHUTDOWN-COMPLETE, and T2-shutdown retransmitting them.

It works on the association it belongs to, which owns the states, the timers (T2, and T5, the shutdown guard) and
what must drain first: the send queue, the data in flight and our RE-CONFIG requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mux.sctp import events as ev
from mux.sctp.chunks import ShutdownAckChunk, ShutdownChunk, ShutdownCompleteChunk
from mux.sctp.packet import serialize_packet
from mux.sctp.state import (
    CLOSED,
    COOKIE_ECHOED,
    COOKIE_WAIT,
    DATA_FLOWS,
    ESTABLISHED,
    SHUTDOWN_ACK_SENT,
    SHUTDOWN_PENDING,
    SHUTDOWN_RECEIVED,
    SHUTDOWN_SENT,
)
from mux.sctp.tx.outstanding import HALF, MASK

if TYPE_CHECKING:
    from mux.sctp.association import Association


class Shutdown:
    __slots__ = ("a",)

    def __init__(self, assoc: Association) -> None:
        self.a = assoc

    def check(self, now: float) -> None:
        """SHUTDOWN-PENDING or -RECEIVED, and everything drained: the next step of the close goes."""
        a = self.a
        state = a.state
        if a._queue or len(a._out) or a._queue.paused or a._reconfig.busy:
            return
        if state == SHUTDOWN_PENDING:
            a.state = SHUTDOWN_SENT
            a._ctrl.append(ShutdownChunk(a._rx.cum_tsn).serialize())
            a._t2 = now + a._rtt.rto
            a._t5 = now + 5 * a.config.rto_max / 1000.0
            a._t3 = None
        elif state == SHUTDOWN_RECEIVED:
            a.state = SHUTDOWN_ACK_SENT
            a._ctrl.append(ShutdownAckChunk().serialize())
            a._t2 = now + a._rtt.rto
            a._t3 = None

    def on_shutdown(self, cum: int, now: float) -> None:
        a = self.a
        state = a.state
        if state not in DATA_FLOWS:
            return
        out = a._out
        d = (cum - out.cum_acked) & MASK
        if d < HALF and d > len(out.sent) - out.head:
            # acking what we never sent. A SACK doing so is a protocol violation (and aborts), but pion puts a
            # TSN of its own here, and Linux and usrsctp would abort its graceful close for it: the field is
            # ignored instead (it only repeats what SACKs say), the close goes on, and anything of ours still
            # unacknowledged must be SACKed as always before our SHUTDOWN-ACK
            a.stats["shutdown_cum_ignored"] = a.stats.get("shutdown_cum_ignored", 0) + 1
        else:
            a._retx.on_ack(cum, None, [], now)
        if a.state == CLOSED:
            return
        if state in (ESTABLISHED, SHUTDOWN_PENDING):
            a.state = SHUTDOWN_RECEIVED
            a._events.append(ev.ShutdownReceived())
            self.check(now)
        elif state == SHUTDOWN_SENT:
            a.state = SHUTDOWN_ACK_SENT
            a._ctrl.append(ShutdownAckChunk().serialize())
            a._t2 = now + a._rtt.rto

    def on_shutdown_ack(self, vtag: int, now: float) -> None:
        a = self.a
        if a.state in (SHUTDOWN_SENT, SHUTDOWN_ACK_SENT):
            a._raw.append(serialize_packet(a.local_port, a.remote_port, a.peer_vtag, [ShutdownCompleteChunk()]))
            a._finish(None)
        elif a.state in (COOKIE_WAIT, COOKIE_ECHOED):
            # §8.5.1 E: treat as out of the blue
            a._raw.append(serialize_packet(a.local_port, a.remote_port, vtag, [ShutdownCompleteChunk(t_bit=True)]))

    def on_t2(self, now: float) -> None:
        a = self.a
        if a.state not in (SHUTDOWN_SENT, SHUTDOWN_ACK_SENT):
            return
        a._error_count += 1
        if a._error_count > a.config.asocmaxrxt:
            a._lost()
            return
        a._rtt.backoff()
        if a.state == SHUTDOWN_SENT:
            a._ctrl.append(ShutdownChunk(a._rx.cum_tsn).serialize())
        else:
            a._ctrl.append(ShutdownAckChunk().serialize())
        a._t2 = now + a._rtt.rto
