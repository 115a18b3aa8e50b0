"""Loss recovery beyond RFC 9260's minimum, after RACK-TLP (RFC 8985): time-based loss detection, the tail loss
probe, and undoing the window reduction of retransmissions that turn out spurious.

**RACK** (RFC 8985 §6). Each SACK that newly acknowledges data advances ``xmit``: the most recent send time among
the chunks it acknowledges (cumulatively or by gap block), with that chunk's TSN to break ties and its RTT
(``rtt``). A chunk sent only once is an unambiguous witness. A retransmitted chunk is taken only if the SACK came
at least ``min_rtt`` after its latest transmission (RFC 8985 §6.2 step 2): a SACK sooner than that was for an
earlier transmission, which proves the retransmission spurious; one later is still ambiguous, and taken all the same,
as RFC 8985 does, because only so can the SACK a probe brings expose the rest of a lost tail at once (a wrong guess
costs a spurious retransmission, which the undo below covers). An outstanding chunk not yet
acknowledged that was sent before that witness is lost once ``rtt + reo_wnd`` has passed since it was sent: at the
SACK when the witness was sent more than ``reo_wnd`` later, else when the RACK timer (``reo_at``) fires. Because a
retransmitted chunk carries the time of its latest transmission, a lost retransmission is found the same way, which
miss-indication counting (§7.2.4, once per chunk) cannot do. Fast retransmit by three miss indications (and Early
Retransmit) stays beside it: it acts on a count, RACK on time, and whichever marks a chunk first sends it.

The reordering window ``reo_wnd`` is ``reo_mult * min_rtt / 4``, at most SRTT (RFC 8985 §6.2 step 4).
``reo_mult`` starts at 1 and grows by one (at most once a round trip, up to ``MAX_REO_MULT``) for each fast or
RACK retransmission proven spurious; it returns to 1 after ``REO_PERSIST`` recoveries without such evidence.

**Tail loss probe** (RFC 8985 §7, with RFC 9002's backoff). While data is outstanding, the probe timer (``pto_at``)
runs from the last transmission and from each SACK that acknowledges new data: PTO = max(2 SRTT, SRTT + 4 RTTVAR),
plus ``WC_DELACK`` when at most one packet is in flight and the last DATA chunk did not carry the SACK-IMMEDIATELY
bit (RFC 7053; the association sets it when its send queue drains), floored at ``PTO_MIN``. When it fires, queued
data goes if the windows allow it, else the highest outstanding chunk is sent again, alone, with the I bit; the
congestion window is left as it is. ``MAX_PROBES`` probes may go (the second after twice the PTO) until a SACK
acknowledges new data; never after a T3 expiry until then (RTO recovery), and only when due before T3, which stays
the backstop with its backoff and error count.

The I bit is set whenever the send queue drains with a chunk (a lone message, a transfer's tail, a probe): the
peer's SACK then comes at once instead of after its delayed-SACK timer, and the PTO can do without the
delayed-SACK allowance. A peer that ignores the bit (RFC 7053 lets it) shows itself when ``IBIT_DOUBT`` probes in a
row turn out unnecessary (their TSNs come back as duplicates) with no SACK between them that arrived sooner than a
delayed one would (``min_rtt + WC_DELACK / 2``): from then on the allowance is added again.

**Spurious retransmissions.** A retransmission is proven unnecessary when the SACK acknowledging its chunk came
sooner than ``min_rtt`` after it, or when the peer reports the TSN as a duplicate (DSACK-like). A fast recovery
records cwnd and ssthresh as it begins (``begin``) and counts the retransmissions it sends; when every one of them
is proven unnecessary, or none was sent before the recovery ended, the reduction is undone: cwnd and ssthresh back
to at least what they were (the Eifel response, RFC 4015, as Linux's undo). T3 retransmissions and probes never
undo anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mux.sctp.tx.send_queue import OutChunk
from mux.sctp.unwritten import Unwritten

if TYPE_CHECKING:
    from mux.sctp.tx.congestion import Congestion
    from mux.sctp.tx.outstanding import Outstanding
    from mux.sctp.tx.rtt import RttEstimator

MASK = 0xFFFFFFFF
HALF = 0x80000000
INF = float("inf")

#: the PTO's floor (s): timer granularity. asyncio wakes a timer up to a millisecond late and a busy event loop
#: (ours or the peer's, reading a batch of datagrams) answers a few milliseconds late; below this a loopback path's
#: sub-millisecond SRTT would fire probes at every hiccup
PTO_MIN = 0.005
#: the peer's worst-case delayed SACK (s): RFC 9260 §6.2's 200 ms default, RFC 8985's WCDelAckT
WC_DELACK = 0.2
#: probes allowed until a SACK acknowledges new data
MAX_PROBES = 2
#: ``reo_mult`` is kept this many recoveries after it last grew
REO_PERSIST = 16
MAX_REO_MULT = 16
#: probes proven unnecessary in a row before the I bit is no longer trusted to bring the SACK at once
IBIT_DOUBT = 3
#: retransmitted chunks remembered after their ack, for duplicate-TSN reports
_ACKED_KEPT = 256

#: what a retransmission was: a tail loss probe, or a T3 retransmission (fast recoveries count up from 1)
PROBE = -1
TIMEOUT = -2


def _after(t1: float, tsn1: int, t2: float, tsn2: int) -> bool:
    """(t1, tsn1) was sent after (t2, tsn2): RFC 8985's RACK_sent_after, TSNs compared serially."""
    return t1 > t2 or (t1 == t2 and tsn1 != tsn2 and ((tsn1 - tsn2) & MASK) < HALF)


#: ``retx`` and ``acked_retx`` until their first entry: shared, read and popped but never written
_NO_RETX: dict[OutChunk, int] = Unwritten()
_NO_ACKED: dict[int, int] = Unwritten()


class Rack:
    """RACK-TLP state of one ``Outstanding`` (rebuilt with it on a restart)."""

    __slots__ = (
        "acked_retx",
        "episode",
        "ibit_doubt",
        "immediate",
        "min_rtt",
        "probes",
        "pto_at",
        "reo_at",
        "reo_grown_at",
        "reo_mult",
        "reo_persist",
        "retx",
        "rto_recovery",
        "rtt",
        "tag",
        "tsn",
        "undo",
        "undo_retrans",
        "xmit",
    )

    def __init__(self) -> None:
        #: the RACK witness: send time, TSN and RTT of the most recently sent chunk known delivered
        self.xmit = -INF
        self.tsn = 0
        self.rtt = 0.0
        #: the smallest RTT seen (from unambiguous witnesses)
        self.min_rtt = INF
        self.reo_mult = 1
        self.reo_persist = 0
        self.reo_grown_at = -INF
        #: outstanding retransmitted chunks, with what their latest retransmission was (an episode, PROBE, TIMEOUT)
        self.retx: dict[OutChunk, int] = _NO_RETX  # its own dict from its first entry: most never retransmit
        #: TSN -> what its retransmission was, for retransmitted chunks acknowledged ambiguously
        self.acked_retx: dict[int, int] = _NO_ACKED
        #: the latest fast recovery, and what a retransmission sent now belongs to
        self.episode = 0
        self.tag = TIMEOUT
        #: (cwnd, ssthresh) before the latest fast recovery, while it may be undone; its retransmissions not yet
        #: proven unnecessary
        self.undo: tuple[int, int] | None = None
        self.undo_retrans = 0
        #: deadlines: the RACK timer and the probe timer
        self.reo_at: float | None = None
        self.pto_at: float | None = None
        #: probes sent since a SACK last acknowledged new data
        self.probes = 0
        #: T3 expired and no SACK has acknowledged new data since: no probes
        self.rto_recovery = False
        #: the last DATA chunk sent carried the I bit
        self.immediate = False
        self.ibit_doubt = 0

    # -- what a SACK says -----------------------------------------------------------------------------------------

    def delivered(
        self,
        out: Outstanding,
        d: int,
        newly: list[int],
        cum: int,
        now: float,
        cc: Congestion,
        srtt: float | None,
        stats: dict[str, int],
    ) -> None:
        """A SACK acknowledged new data or moved the cumulative ack point: advance the witness, settle the
        retransmitted chunks it acknowledged."""
        c: OutChunk | None = None
        if newly:
            sent = out.sent
            for i in reversed(newly):
                x = sent[i]
                if x.sent == 1:
                    c = x
                    break
        if c is None and d:
            x2 = out.last_cum
            if x2 is not None and x2.sent == 1:
                c = x2
        if c is not None:
            t = c.sent_at
            r = now - t
            if r < self.min_rtt:
                self.min_rtt = r
            if _after(t, c.tsn, self.xmit, self.tsn):
                self.xmit = t
                self.tsn = c.tsn
                self.rtt = r
            if r < self.min_rtt + WC_DELACK / 2:
                self.ibit_doubt = 0  # a SACK that no delayed-SACK timer held back
        if self.retx:
            self._settle(cum, now, cc, srtt, stats)

    def _settle(self, cum: int, now: float, cc: Congestion, srtt: float | None, stats: dict[str, int]) -> None:
        """Retransmitted chunks now acknowledged: a witness if unambiguous enough, proof of a spurious retransmission
        if the SACK came sooner than a round trip after it."""
        retx = self.retx
        min_rtt = self.min_rtt
        for c, tag in list(retx.items()):
            if c.abandoned:
                del retx[c]
                continue
            if not c.acked and ((cum - c.tsn) & MASK) >= HALF:
                continue  # still outstanding
            del retx[c]
            t = c.sent_at
            r = now - t
            if min_rtt == INF:
                continue
            if r < min_rtt:
                self.spurious(tag, now, cc, srtt, stats)
                continue
            if _after(t, c.tsn, self.xmit, self.tsn):
                self.xmit = t
                self.tsn = c.tsn
                self.rtt = r
            acked = self.acked_retx
            if acked is _NO_ACKED:
                acked = self.acked_retx = {}
            acked[c.tsn] = tag
            if len(acked) > _ACKED_KEPT:
                del acked[next(iter(acked))]

    def duplicates(
        self, dups: list[int], now: float, cc: Congestion, srtt: float | None, stats: dict[str, int]
    ) -> None:
        """The peer got these TSNs more than once: a retransmission among them was unnecessary."""
        acked = self.acked_retx
        for tsn in dups:
            tag = acked.pop(tsn, None)
            if tag is not None:
                self.spurious(tag, now, cc, srtt, stats)

    def spurious(self, tag: int, now: float, cc: Congestion, srtt: float | None, stats: dict[str, int]) -> None:
        stats["spurious_retransmits"] = stats.get("spurious_retransmits", 0) + 1
        if tag == PROBE:
            self.ibit_doubt += 1
            return
        if tag < 0:
            return  # T3: nothing to undo here (RFC 4015's Eifel response to spurious timeouts is not done)
        # reordering (or a delay spike) fooled the loss detection: widen the window, once a round trip
        if now - self.reo_grown_at >= (srtt or 0.0):
            self.reo_mult = min(self.reo_mult + 1, MAX_REO_MULT)
            self.reo_grown_at = now
        self.reo_persist = REO_PERSIST
        if tag == self.episode and self.undo is not None:
            self.undo_retrans -= 1
            if self.undo_retrans <= 0:
                self._undo(cc, stats)

    def _undo(self, cc: Congestion, stats: dict[str, int]) -> None:
        assert self.undo is not None
        cwnd, ssthresh = self.undo
        self.undo = None
        cc.undo(cwnd, ssthresh)
        stats["cwnd_undos"] = stats.get("cwnd_undos", 0) + 1

    def recovery_ended(self, cc: Congestion, stats: dict[str, int]) -> None:
        """The fast recovery ended: if it never sent a retransmission (its marked chunks were acknowledged first,
        so they were not lost), undo it."""
        if self.undo is not None and self.undo_retrans <= 0 and self.tag == self.episode:
            self._undo(cc, stats)

    # -- recoveries -----------------------------------------------------------------------------------------------

    def begin(self, cc: Congestion) -> None:
        """A fast recovery begins (call before ``Congestion.on_fast_retransmit``)."""
        self.episode += 1
        self.tag = self.episode
        self.undo = (cc.cwnd, cc.ssthresh)
        self.undo_retrans = 0
        if self.reo_mult > 1:
            self.reo_persist -= 1
            if self.reo_persist <= 0:
                self.reo_mult = 1

    def resent(self, c: OutChunk) -> None:
        """``c`` (marked: by fast retransmit, RACK or T3) left again."""
        tag = self.tag
        if self.retx is _NO_RETX:
            self.retx = {}
        self.retx[c] = tag
        if tag == self.episode and self.undo is not None:
            self.undo_retrans += 1

    def probed(self, c: OutChunk) -> None:
        """``c`` left again as a tail loss probe."""
        if self.retx is _NO_RETX:
            self.retx = {}
        self.retx[c] = PROBE

    def on_t3(self) -> None:
        self.tag = TIMEOUT
        self.undo = None
        self.probes = 0
        self.rto_recovery = True
        self.reo_at = self.pto_at = None

    # -- loss detection -------------------------------------------------------------------------------------------

    def reo_wnd(self, srtt: float | None) -> float:
        w = self.reo_mult * self.min_rtt * 0.25
        return srtt if srtt is not None and w > srtt else w

    def detect(self, out: Outstanding, gaps: list[tuple[int, int]], now: float, srtt: float | None) -> int:
        """Mark for retransmission the outstanding chunks RACK finds lost; arm ``reo_at`` for those sent before the
        witness that are not lost yet. ``gaps`` (the SACK's, relative to the cumulative ack point) lets the scan skip
        what they acknowledge; without them it skips acknowledged chunks one by one. Returns how many were marked."""
        self.reo_at = None
        xmit = self.xmit
        if xmit == -INF:
            return 0
        wait = self.rtt + self.reo_wnd(srtt)
        rtsn = self.tsn
        sent = out.sent
        head = out.head
        n = len(sent)
        holes: list[tuple[int, int]] = []
        lo = head
        if gaps:
            for start, end in sorted(gaps) if len(gaps) > 1 else gaps:
                if start == 0 or start > end:
                    continue
                b = head + start - 1
                if b > lo:
                    holes.append((lo, b if b < n else n))
                e = head + end
                if e > lo:
                    lo = e
                if lo >= n:
                    break
        if lo < n:
            holes.append((lo, n))
        marked = 0
        due: float | None = None
        rtx = out.need_rtx()
        for lo, hi in holes:
            for i in range(lo, hi):
                c = sent[i]
                if c.acked or c.marked:
                    continue
                t = c.sent_at
                if t < xmit or (t == xmit and c.tsn != rtsn and ((rtsn - c.tsn) & MASK) < HALF):
                    at = t + wait
                    if at <= now:
                        if c.lapsed(now):
                            out.lapsed.append(c)
                            continue
                        c.marked = True
                        c.fast_rtx = True  # miss indications no longer count for it: RACK watches its retransmission
                        c.missing = 0
                        out.flight -= c.size
                        rtx.append(c)
                        marked += 1
                        continue
                    if due is None or at < due:
                        due = at
                if c.sent == 1:
                    # everything above it was first sent after it, and sent again (if at all) later still
                    self.reo_at = due
                    return marked
        self.reo_at = due
        return marked

    # -- the probe timer ------------------------------------------------------------------------------------------

    def pto(self, rtt: RttEstimator, flight: int, mtu: int) -> float | None:
        """The probe timeout now, backed off by the probes already sent; None without an RTT estimate."""
        srtt = rtt.srtt
        if srtt is None:
            return None
        p = 2 * srtt
        v = srtt + 4 * rtt.rttvar
        if v > p:
            p = v
        if flight <= mtu and not (self.immediate and self.ibit_doubt < IBIT_DOUBT):
            p += WC_DELACK
        if p < PTO_MIN:
            p = PTO_MIN
        return p * (1 << self.probes)
