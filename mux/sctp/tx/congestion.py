"""Congestion control of RFC 9260 §7.2: slow start, congestion avoidance and fast recovery, in bytes.

Two departures from the letter of the RFC, both as Linux does for TCP: slow start counts every byte a SACK
acknowledges, without the one-PMTU-per-SACK cap, because peers that read in batches (usrsctp, our own driver)
acknowledge many packets per SACK and a per-SACK cap makes slow start crawl; and bursts are bounded by an ack
clock on top of Max.Burst (§7.2.4): each acknowledged packet releases one (two in slow start) plus ``max_burst``.
"""

from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x80000000


class Congestion:
    __slots__ = ("acked_since_send", "cwnd", "full", "mtu", "pba", "recovery_exit", "ssthresh")

    def __init__(self, mtu: int) -> None:
        self.mtu = mtu
        self.cwnd = min(4 * mtu, max(2 * mtu, 4380))  # §7.2.1
        self.ssthresh = 1 << 30
        self.pba = 0  # partial_bytes_acked (§7.2.2)
        #: the highest TSN outstanding when fast recovery began (§7.2.4); None outside it
        self.recovery_exit: int | None = None
        #: bytes newly acknowledged since data last left: the ack clock
        self.acked_since_send = 0
        #: whether the window was in use (§7.2.1) when data last left: judged then, not at each SACK, because a
        #: batch of SACKs read together shrinks the flight before the next send, and only the first would count
        self.full = False

    def on_cum_ack(self, cum: int) -> None:
        """The cumulative TSN moved: fast recovery ends once it reaches the exit point."""
        exit_ = self.recovery_exit
        if exit_ is not None and (exit_ == cum or ((exit_ - cum) & MASK) >= HALF):
            self.recovery_exit = None

    def on_sent(self, flight: int) -> None:
        """Data left and ``flight`` bytes are now outstanding."""
        self.acked_since_send = 0
        self.full = flight + self.mtu > self.cwnd

    def on_acked(self, acked: int, flight_before: int) -> None:
        """New data was cumulatively acknowledged outside fast recovery (§7.2.1, §7.2.2)."""
        cwnd = self.cwnd
        mtu = self.mtu
        in_use = self.full or flight_before + mtu > cwnd
        if cwnd <= self.ssthresh:
            if in_use:
                self.cwnd = cwnd + acked
        else:
            self.pba += acked
            if self.pba >= cwnd and in_use:
                self.pba -= cwnd
                self.cwnd = cwnd + mtu

    def on_fast_retransmit(self, highest_sent: int) -> None:
        """Chunks were marked for fast retransmission (§7.2.4): once per recovery, halve the window."""
        if self.recovery_exit is None:
            self.ssthresh = max(self.cwnd // 2, 4 * self.mtu)
            self.cwnd = self.ssthresh
            self.pba = 0
            self.recovery_exit = highest_sent

    def undo(self, cwnd: int, ssthresh: int) -> None:
        """The fast recovery that began at ``cwnd`` and ``ssthresh`` was spurious (``Rack``): restore them (RFC 4015's
        Eifel response, as Linux's undo) and leave fast recovery."""
        if cwnd > self.cwnd:
            self.cwnd = cwnd
        if ssthresh > self.ssthresh:
            self.ssthresh = ssthresh
        self.recovery_exit = None

    def on_t3(self) -> None:
        """The retransmission timer expired (§7.2.3): back to one packet."""
        self.ssthresh = max(self.cwnd // 2, 4 * self.mtu)
        self.cwnd = self.mtu
        self.pba = 0
        self.recovery_exit = None

    def burst(self, max_burst: int) -> int:
        """Full packets of new data that may leave now (§7.2.4 Max.Burst on top of the ack clock)."""
        if not max_burst:
            return 1 << 30
        clock = -(-self.acked_since_send // self.mtu)
        return max_burst + (2 * clock if self.cwnd <= self.ssthresh else clock)
