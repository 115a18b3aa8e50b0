"""The retransmission timeout of RFC 9260 §6.3: smoothed RTT and its variance, clamped to ``rtoinfo``."""

from __future__ import annotations


class RttEstimator:
    __slots__ = ("_max", "_min", "rto", "rttvar", "srtt")

    def __init__(self, initial: float, minimum: float, maximum: float) -> None:
        """Times in seconds: RTO.Initial, RTO.Min, RTO.Max."""
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = initial
        self._min = minimum
        self._max = maximum

    def sample(self, r: float) -> None:
        """One RTT measurement (§6.3.1, C1 to C5); a negative one (a clock step) is ignored."""
        if r < 0:
            return
        srtt = self.srtt
        if srtt is None:
            self.srtt = srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(srtt - r)
            self.srtt = srtt = 0.875 * srtt + 0.125 * r
        rto = srtt + max(4 * self.rttvar, 0.001)
        self.rto = min(max(rto, self._min), self._max)

    def backoff(self) -> None:
        """A timer expired (§6.3.3 E2): double the RTO, up to RTO.Max."""
        self.rto = min(self.rto * 2, self._max)
