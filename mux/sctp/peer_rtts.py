"""The round-trip times recent associations measured to each peer host, for the next association's first INIT.

RFC 8961 §4 asks for a 1 s initial timeout only without prior knowledge of the path's latency; Linux keeps such
per-destination metrics for TCP (tcp_metrics) and QUIC may reuse an RTT from a previous connection to the same
host (RFC 9002 §6.2.2). Bounded (least recently used go first) and aged, so neither many peers nor an old figure
can mislead: an entry older than ``ttl`` seconds is forgotten.
"""

from __future__ import annotations

from collections import OrderedDict


class PeerRtts:
    __slots__ = ("_entries", "capacity", "ttl")

    def __init__(self, capacity: int = 1024, ttl: float = 600.0) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[float, float, float]] = OrderedDict()

    def remember(self, host: str, srtt: float | None, rttvar: float, now: float) -> None:
        """An association to ``host`` measured (SRTT, RTTVAR) in seconds; None: it measured nothing."""
        if srtt is None:
            return
        entries = self._entries
        entries[host] = (srtt, rttvar, now)
        entries.move_to_end(host)
        while len(entries) > self.capacity:
            entries.popitem(last=False)

    def lookup(self, host: str, now: float) -> tuple[float, float] | None:
        entry = self._entries.get(host)
        if entry is None:
            return None
        srtt, rttvar, at = entry
        if now - at > self.ttl:
            del self._entries[host]
            return None
        self._entries.move_to_end(host)
        return srtt, rttvar

    def __len__(self) -> int:
        return len(self._entries)
