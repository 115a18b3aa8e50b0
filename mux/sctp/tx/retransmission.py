"""What the association does with a SACK and with T3-rtx (RFC 9260 §6.2.1, §6.3.3, §7.2), and PR-SCTP's abandoning
of messages and the FORWARD-TSN that tells the peer (RFC 3758 §3.5; with I-DATA, by message and I-FORWARD-TSN,
RFC 8260 §2.3): dcsctp's retransmission queue, on top of
``Outstanding`` (what is in flight), ``Congestion`` and ``RttEstimator``.

Beyond RFC 9260 (``tx.rack``): each SACK also runs RACK's time-based loss detection next to the miss-indication
count, and may prove earlier retransmissions spurious (undoing their window reduction); the association's loss timer
(``_t_loss``: RACK's reordering timer or the tail loss probe) lands in ``on_loss_timer``, and ``sent`` restarts the
probe timer whenever DATA leaves. A fast recovery begins once per window whichever detector marked the chunk.

It works on the association it belongs to, which owns those parts (they are rebuilt on a restart) and the timers;
``Association._fwd_due`` says a FORWARD-TSN is to go in the next packet, and this part builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mux.sctp import events as ev
from mux.sctp import extensions as ext
from mux.sctp.chunks import FLAG_B, FLAG_E, FLAG_U, ForwardTsnChunk, IForwardTsnChunk
from mux.sctp.packet import serialize_packet
from mux.sctp.params import protocol_violation_cause
from mux.sctp.state import DATA_FLOWS, ESTABLISHED, SHUTDOWN_ACK_SENT, SHUTDOWN_SENT
from mux.sctp.tx.outstanding import BEYOND
from mux.sctp.tx.rack import MAX_PROBES
from mux.sctp.tx.scheduler import encode_idata
from mux.sctp.tx.send_queue import OutChunk

if TYPE_CHECKING:
    from mux.sctp.association import Association

MASK = 0xFFFFFFFF
HALF = 0x80000000


class Retransmission:
    __slots__ = ("a", "fwd_sent_at")

    def __init__(self, assoc: Association) -> None:
        self.a = assoc
        #: when a FORWARD-TSN last left: it is repeated at most once per RTO
        self.fwd_sent_at = 0.0

    def on_ack(
        self, cum: int, a_rwnd: int | None, gaps: list[tuple[int, int]], now: float, dups: list[int] | None = None
    ) -> None:
        """A SACK (or a SHUTDOWN's cumulative TSN ack, ``a_rwnd`` None); ``dups``, the SACK's duplicate TSNs."""
        a = self.a
        out = a._out
        flight_before = out.flight
        d, acked_bytes, newly = out.ack(cum, gaps, now, a._rtt)
        if d == BEYOND:
            a._abort_with(
                protocol_violation_cause(b"cumulative TSN ack beyond the highest TSN sent"), "peer acked unsent data"
            )
            return
        if a_rwnd is not None:
            a._peer_arwnd = a_rwnd
        cc = a._cc
        rack = out.rack
        srtt = a._rtt.srtt
        # RACK looks for losses only where there can be some: below a gap block, or among chunks sent again
        # (a chunk sent once and not yet acked, with nothing acked above it, was sent after all that was)
        suspects = bool(gaps) or bool(rack.retx)
        if acked_bytes:
            a._error_count = 0
            paths = a._paths
            held = paths.held_below
            # the primary works once data sent to it is acknowledged: not what a T3 sent to another address
            if held is None or (cum != held and ((cum - held) & MASK) < HALF):
                paths.primary.errors = 0
                paths.held_below = None
        if acked_bytes or d:
            rack.delivered(out, d, newly, cum, now, cc, srtt, a.stats)
        if dups:
            rack.duplicates(dups, now, cc, srtt, a.stats)
        if d and cc.recovery_exit is not None:
            cc.on_cum_ack(cum)
            if cc.recovery_exit is None:
                rack.recovery_ended(cc, a.stats)
        marked = 0
        if newly and newly[-1] > out.head:
            marked = out.mark_misses(newly, now)
            if marked:
                a.stats["fast_retransmits"] += marked
        lost = 0
        if acked_bytes and suspects and len(out.sent) > out.head:
            # RACK: chunks sent before the newest one delivered, and long enough before it, are lost
            lost = rack.detect(out, gaps, now, srtt)
            if lost:
                a.stats["rack_retransmits"] += lost
        if out.lapsed:
            self.abandon_lapsed()
        if (marked or lost) and cc.recovery_exit is None:
            rack.begin(cc)
            cc.on_fast_retransmit((out.next_tsn - 1) & MASK)
            a._t3 = now + a._rtt.rto
        if d and acked_bytes and cc.recovery_exit is None:
            cc.on_acked(acked_bytes, flight_before)
        if out.flight <= 0:
            out.flight = 0
            cc.pba = 0
        clock = acked_bytes
        if acked_bytes:
            # new data acknowledged: the probes start over, from now
            if rack.probes:
                rack.probes = 0
                clock = 0  # the SACK a probe brought adds nothing to the ack clock: no burst after it
            rack.rto_recovery = False
        # T3 (§6.3.2): restart when the earliest outstanding TSN is acked, stop when nothing is outstanding
        if len(out.sent) == out.head:
            a._t3 = None
            rack.reo_at = rack.pto_at = None
        else:
            if d:
                a._t3 = now + a._rtt.rto
            if acked_bytes:
                self._arm_pto(now)
        if a.features & ext.PRSCTP and out.head < len(out.sent) and out.sent[out.head].abandoned:
            # §3.5 C1-C3: abandoned chunks right above the cumulative ack point: tell the peer to move past them
            # (again, if it has not within an RTO of the last FORWARD-TSN)
            adv = out.advanced()
            if adv is not None and (adv[0] != out.forwarded or now - self.fwd_sent_at >= a._rtt.rto):
                a._fwd_due = True
        cc.acked_since_send += clock
        r, p = rack.reo_at, rack.pto_at
        a._t_loss = r if p is None or (r is not None and r < p) else p
        if a._blocked and a.buffered_amount() <= a.config.sndbuf // 2:
            a._blocked = False
            a._events.append(ev.SendQueueDrained())
        if a.state != ESTABLISHED:
            a._shutdown.check(now)

    def on_t3(self, now: float) -> None:
        a = self.a
        if a.state not in DATA_FLOWS and a.state != SHUTDOWN_ACK_SENT:
            return
        if not len(a._out):
            return
        a.stats["t3_expiries"] += 1
        a._error_count += 1
        if a._error_count > a.config.asocmaxrxt:
            a._lost()
            return
        a._cc.on_t3()
        a._rtt.backoff()
        if a._pmtud is not None:
            a._pmtud.on_t3(now)
        paths = a._paths
        primary = paths.primary
        paths.primary_missed(now)  # past pathmaxrxt this fails over: what follows goes to the new primary path
        if paths.primary is primary and len(paths.by_index) > 1:
            other = paths.alternate()
            if other is not None:  # §6.4.1: retransmit what timed out to another active address
                a._rtx_to = other.addr
                paths.held_below = (a._out.next_tsn - 1) & MASK
        out = a._out
        out.rack.on_t3()
        a._t_loss = None
        out.mark_all(now)
        if out.lapsed:
            self.abandon_lapsed()
        if a.features & ext.PRSCTP and out.advanced() is not None:
            a._fwd_due = True  # §3.5 C4: the FORWARD-TSN goes again
        a._t3 = now + a._rtt.rto

    # -- RACK-TLP (``tx.rack``) ---------------------------------------------------------------------------------

    def sent(self, now: float, immediate: bool) -> None:
        """DATA left (new or retransmitted; ``immediate``: its last chunk carried the I bit): the probe timer runs
        from now."""
        a = self.a
        a._probing = False
        rack = a._out.rack
        rack.immediate = immediate
        if not rack.rto_recovery:
            self._arm_pto(now)
            r, p = rack.reo_at, rack.pto_at
            a._t_loss = r if p is None or (r is not None and r < p) else p

    def _arm_pto(self, now: float) -> None:
        a = self.a
        rack = a._out.rack
        rack.pto_at = None
        if rack.probes >= MAX_PROBES:
            return
        pto = rack.pto(a._rtt, a._out.flight, a._mtu)
        if pto is None:
            return
        at = now + pto
        t3 = a._t3
        if t3 is None or at < t3:  # T3 first: no probe
            rack.pto_at = at

    def on_loss_timer(self, now: float) -> None:
        """The RACK timer or the probe timer (``Association._t_loss``) fired."""
        a = self.a
        out = a._out
        rack = out.rack
        if (a.state not in DATA_FLOWS and a.state != SHUTDOWN_ACK_SENT) or len(out.sent) == out.head:
            rack.reo_at = rack.pto_at = None
            return
        if rack.reo_at is not None and now >= rack.reo_at:
            lost = rack.detect(out, [], now, a._rtt.srtt)
            if out.lapsed:
                self.abandon_lapsed()
            if lost:
                a.stats["rack_retransmits"] += lost
                cc = a._cc
                if cc.recovery_exit is None:
                    rack.begin(cc)
                    cc.on_fast_retransmit((out.next_tsn - 1) & MASK)
                    a._t3 = now + a._rtt.rto
        if rack.pto_at is not None and now >= rack.pto_at:
            rack.pto_at = None
            self.probe(now)
        r, p = rack.reo_at, rack.pto_at
        a._t_loss = r if p is None or (r is not None and r < p) else p

    def probe(self, now: float) -> None:
        """Tail loss probe (RFC 8985 §7.3): new data if the windows let it go, else the highest outstanding chunk
        again, alone and with the I bit (RFC 7053) so the SACK comes at once. No change to cwnd."""
        a = self.a
        out = a._out
        rack = out.rack
        for m in out.rtx or ():
            if m.marked and not m.acked:
                return  # a retransmission is about to go anyway, whatever cwnd says: that is the probe
        rack.probes += 1
        a.stats["tlp_probes"] += 1
        cc = a._cc
        if a.state != SHUTDOWN_SENT and (q := a._queue.peek()) is not None:
            flight = out.flight
            if flight + q.size <= cc.cwnd and q.size <= a._peer_arwnd - flight:
                a._probing = True  # Nagle stands aside once; ``sent`` arms the next probe as it leaves
                return
        sent = out.sent
        probe: OutChunk | None = None
        for i in range(len(sent) - 1, out.head - 1, -1):
            c = sent[i]
            if c.acked or c.marked:
                continue
            if c.lapsed(now):  # PR-SCTP: given up rather than sent again (the FORWARD-TSN then asks for a SACK)
                out.lapsed.append(c)
                continue
            probe = c
            break
        if out.lapsed:
            self.abandon_lapsed()
        if probe is not None:
            wire = encode_idata(probe, True) if a._hdr == 20 else probe.encode(immediate=True)
            a._raw.append(serialize_packet(a.local_port, a.remote_port, a.peer_vtag, [wire]))
            probe.sent += 1
            probe.sent_at = now
            if probe is out.rtt_chunk:
                out.rtt_chunk = None  # Karn
            rack.probed(probe)
            a.stats["retransmitted_chunks"] += 1
            cc.acked_since_send = 0
        self._arm_pto(now)

    # -- PR-SCTP (RFC 3758) -----------------------------------------------------------------------------------

    def abandon_lapsed(self) -> None:
        """Abandon the messages of the chunks whose policy lapsed as they came due for retransmission."""
        a = self.a
        out = a._out
        idata = a.features & ext.IDATA
        lapsed, out.lapsed = out.lapsed, []
        for c in lapsed:
            if c.abandoned:
                continue
            if idata:
                # by (stream, U, MID): its fragments interleave with other messages'. A stream sends its messages
                # one after the other, so the rest, if any, is at the front of the stream's queue; it takes one TSN
                # that never leaves, as with DATA, so the I-FORWARD-TSN naming the message is never out of date.
                if not out.abandon_message(c.stream_id, c.flags & FLAG_U, c.ssn):
                    a._queue.drop_message(c.stream_id)
                    out.skip_rest(c)
            elif not out.abandon(c):
                a._queue.drop_message()  # the message's later fragments never left: they never will
                out.skip_rest(c)
            a.stats["abandoned_messages"] = a.stats.get("abandoned_messages", 0) + 1
        if out.advanced() is not None:
            a._fwd_due = True

    def abandon_queued(self, c: OutChunk) -> None:
        """The message at the head of the send queue lapsed (``timed``) before all of it left."""
        a = self.a
        queue = a._queue
        head = queue.head
        mid = head.mid if head is not None else 0
        queue.drop_message()
        a.stats["abandoned_messages"] = a.stats.get("abandoned_messages", 0) + 1
        if not c.flags & FLAG_B and a.features & ext.IDATA:
            out = a._out
            c.ssn = mid  # the message's MID, for ``skip_rest``
            out.abandon_message(c.stream_id, c.flags & FLAG_U, mid)
            out.skip_rest(c)
            if out.advanced() is not None:
                a._fwd_due = True
        elif not c.flags & FLAG_B:  # its first fragments are out: abandon those too
            out = a._out
            last = out.sent[-1] if out.sent else None
            if last is not None and last.stream_id == c.stream_id and not last.flags & FLAG_E:
                out.abandon(last)
                out.skip_rest(last)
            if out.advanced() is not None:
                a._fwd_due = True

    def forward_tsn(self, now: float) -> bytes:
        """The FORWARD-TSN (with I-DATA, I-FORWARD-TSN) chunk that moves the peer past what we abandoned (§3.5 C2),
        or nothing."""
        a = self.a
        a._fwd_due = False
        out = a._out
        if a.features & ext.IDATA:
            iadv = out.advanced_idata()
            if iadv is None:
                return b""
            new_cum, entries = iadv
            wire = IForwardTsnChunk(new_cum, entries).serialize()
        else:
            adv = out.advanced()
            if adv is None:
                return b""
            new_cum, streams = adv
            wire = ForwardTsnChunk(new_cum, sorted(streams.items())).serialize()
        out.forwarded = new_cum
        self.fwd_sent_at = now
        a.stats["forward_tsns_sent"] = a.stats.get("forward_tsns_sent", 0) + 1
        if a._t3 is None:
            a._t3 = now + a._rtt.rto
        return wire
