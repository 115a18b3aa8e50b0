"""Packetization Layer Path MTU Discovery (RFC 8899, DPLPMTUD), sans-IO: the search both transports share.

A transport starts at a size every path carries (the *base*: QUIC's 1200-byte UDP payload, SCTP's ``pmtu``) and
probes larger ones with packets that carry no data (SCTP: HEARTBEAT + PAD, QUIC: PING + PADDING), so a lost probe
costs nothing but the probe. Sizes are IP MTUs (quicer's ``minimum_mtu``/``maximum_mtu``: IP header, UDP header and
payload); each transport converts to its own unit.

The search climbs a list of sizes common on real paths (tunnels, PPPoE, Ethernet, jumbo frames, and the largest
powers of two below 64 KiB that loopback carries), plus the maximum itself, which is the smaller of the configured
one and the interface's MTU toward the peer (``interface_mtu``, which the driver asks and tells the search). A
size that ``max_probes`` probes in a row fail to confirm is too big: the search ends below it (search complete)
and tries again larger after ``raise_interval`` (RFC 8899's raise timer, 600 s). Climbing in order means at most
one size fails per search; each confirmed one costs a round trip.

Black holes (§4.3): a path that stops carrying the size in use shows as ``max_probes`` losses of full-sized
packets in a row with no progress between them (SCTP: T3 expiries; QUIC: probe timeouts). The size then drops to
the base and the search starts over (base state: the base is confirmed by a probe first; if that fails as well the
path is in error state and keeps the base, probing it again).

States (§5.2): ``base``, ``searching``, ``search_complete``, ``error``, or ``disabled``.
"""

from __future__ import annotations

import socket
import time
from typing import Any

DISABLED = "disabled"
BASE = "base"
SEARCHING = "searching"
SEARCH_COMPLETE = "search_complete"
ERROR = "error"

#: IP MTUs worth trying, in order: IPsec/WireGuard tunnels, PPPoE, Ethernet, jumbo frames, then loopback's
COMMON_MTUS = (1400, 1420, 1480, 1492, 1500, 4096, 9000, 16384, 32768, 65535)
#: RFC 8899's MAX_PROBES (quicer: ``mtu_discovery_missing_probe_count``)
MAX_PROBES = 3
#: RFC 8899's raise timer (quicer: ``mtu_discovery_search_complete_timeout_us``), seconds
RAISE_INTERVAL = 600.0

IP_MTU = getattr(socket, "IP_MTU", 14)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)


def ip_udp_overhead(host: str) -> int:
    """IP and UDP headers of a datagram to ``host``: 28 bytes over IPv4, 48 over IPv6."""
    return 48 if ":" in host else 28


#: interface MTUs by peer host, with when they were asked: a server asks once a minute per host, not per handshake
_IFACE_CACHE: dict[str, tuple[float, int | None]] = {}
_IFACE_TTL = 60.0


def interface_mtu(addr: Any) -> int | None:
    """The MTU of the interface the kernel routes ``addr`` (host, port, ...) through, or None where it cannot say
    (not Linux, no route). Asks a throwaway connected UDP socket (nothing is sent); remembered a minute per host."""
    host = str(addr[0])
    now = time.monotonic()
    cached = _IFACE_CACHE.get(host)
    if cached is not None and now - cached[0] < _IFACE_TTL:
        return cached[1]
    if len(_IFACE_CACHE) >= 4096:
        _IFACE_CACHE.clear()
    mtu = _ask_interface_mtu(addr)
    _IFACE_CACHE[host] = (now, mtu)
    return mtu


def _ask_interface_mtu(addr: Any) -> int | None:
    host = str(addr[0])
    v6 = ":" in host
    try:
        with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, int(addr[1]) or 9))
            if v6:
                return int(s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU))
            return int(s.getsockopt(socket.IPPROTO_IP, IP_MTU))
    except (OSError, ValueError, IndexError):
        return None


class Search:
    """One path's search. The transport asks ``probe_due(now)`` for a probe to send, reports what became of it
    (``probe_acked``, ``probe_lost``; a probe unanswered by its deadline counts as lost), reports full-size losses
    and progress (``packet_lost``, ``progress``), and uses ``pmtu``: the largest size confirmed."""

    __slots__ = (
        "_fail_count",
        "_hi",
        "_losses",
        "_raise_at",
        "base",
        "candidates",
        "fallbacks",
        "max_probes",
        "maximum",
        "pmtu",
        "probe_deadline",
        "probe_size",
        "probes_sent",
        "raise_interval",
        "state",
    )

    def __init__(
        self,
        base: int,
        maximum: int,
        *,
        max_probes: int = MAX_PROBES,
        raise_interval: float = RAISE_INTERVAL,
        candidates: tuple[int, ...] = COMMON_MTUS,
        enabled: bool = True,
    ) -> None:
        self.base = base
        self.maximum = max(base, maximum)
        self.max_probes = max(1, max_probes)
        self.raise_interval = raise_interval
        self.candidates = tuple(sorted({c for c in candidates if base < c < self.maximum} | {self.maximum}))
        #: the largest size confirmed: what the transport sends
        self.pmtu = base
        self.state = SEARCHING if enabled and self.maximum > base else DISABLED
        #: the smallest size known to fail (the search stays below it until the raise timer)
        self._hi = self.maximum + 1
        #: the probe out, if any: its size, when it counts as lost, and how many probes of that size went
        self.probe_size: int | None = None
        self.probe_deadline: float | None = None
        self.probes_sent = 0
        self._fail_count = 0
        self._raise_at: float | None = None
        self._losses = 0
        #: times the size went back to the base (black holes, a new path)
        self.fallbacks = 0

    def set_maximum(self, maximum: int) -> None:
        """A new ceiling (the interface MTU learnt late, say); a confirmed size above it drops to it."""
        self.maximum = max(self.base, maximum)
        self.candidates = tuple(sorted({c for c in self.candidates if self.base < c < self.maximum} | {self.maximum}))
        self._hi = min(self._hi, self.maximum + 1)
        if self.pmtu > self.maximum:
            self.pmtu = self.maximum
        if self.state == SEARCHING and self._next_size() is None:
            self._complete(None)

    # -- what to send, and when --------------------------------------------------------------------------------

    def _next_size(self) -> int | None:
        if self.state == BASE or self.state == ERROR:
            return self.base
        if self.state != SEARCHING:
            return None
        for c in self.candidates:
            if self.pmtu < c < self._hi:
                return c
        return None

    def probe_due(self, now: float, timeout: float) -> int | None:
        """The size of a probe to send now (it is then out until ``timeout`` seconds have passed), or None."""
        if self.probe_size is not None:
            if self.probe_deadline is not None and now >= self.probe_deadline:
                self.probe_lost(self.probe_size, now)
            else:
                return None
        if self._raise_at is not None and now >= self._raise_at:
            self._raise_at = None
            if self.state == SEARCH_COMPLETE:  # RFC 8899 §5.2: the raise timer: look for a larger size again
                self.state = SEARCHING
                self._hi = self.maximum + 1
                if self._next_size() is None:
                    self._complete(now)
                    return None
        size = self._next_size()
        if size is None:
            return None
        self.probe_size = size
        self.probe_deadline = now + timeout
        self.probes_sent += 1
        return size

    def next_timer(self) -> float | None:
        """When ``probe_due`` next has something to do (a probe's deadline, the raise timer); None: only when
        the transport reports something."""
        if self.probe_size is not None:
            return self.probe_deadline
        if self.state in (SEARCHING, BASE, ERROR):
            return 0.0  # a probe is due at once (the transport sends it with its next packets)
        return self._raise_at

    # -- what became of it -------------------------------------------------------------------------------------

    def probe_acked(self, size: int, now: float) -> bool:
        """The peer acknowledged a probe of ``size``; True when ``pmtu`` changed."""
        if size != self.probe_size:
            if self.state == SEARCHING and self.pmtu < size < self._hi:
                pass  # a late ack of an earlier probe of a size still worth having: take it
            else:
                return False
        else:
            self.probe_size = None
            self.probe_deadline = None
        self._fail_count = 0
        self._losses = 0
        if self.state in (BASE, ERROR):
            self.state = SEARCHING  # the base works: search up from it
            if self._next_size() is None:
                self._complete(now)
            return False
        old = self.pmtu
        self.pmtu = max(self.pmtu, size)
        if self._next_size() is None:
            self._complete(now)
        return self.pmtu != old

    def probe_lost(self, size: int, now: float) -> None:
        """The probe of ``size`` was lost (or went unanswered past its deadline)."""
        if size != self.probe_size:
            return
        self.probe_size = None
        self.probe_deadline = None
        self._fail_count += 1
        if self._fail_count < self.max_probes:
            return  # the same size goes again
        self._fail_count = 0
        if self.state == SEARCHING:
            self._hi = size
            if self._next_size() is None:
                self._complete(now)
        elif self.state == BASE:
            self.state = ERROR  # §5.2: not even the base gets through; keep it and keep asking

    def _complete(self, now: float | None) -> None:
        self.state = SEARCH_COMPLETE
        self.probe_size = None
        self.probe_deadline = None
        self._raise_at = None if now is None or self.pmtu >= self.maximum else now + self.raise_interval

    def packet_lost(self, now: float) -> bool:
        """A full-size packet was lost for want of an answer (an SCTP T3, a QUIC probe timeout). ``max_probes`` in
        a row with no ``progress`` between are a black hole: back to the base and search again. True then."""
        if self.state == DISABLED or self.pmtu <= self.base:
            return False
        self._losses += 1
        if self._losses < self.max_probes:
            return False
        self.black_hole(now)
        return True

    def progress(self) -> None:
        """Data of the current size was acknowledged: the losses so far were not a black hole."""
        self._losses = 0

    def black_hole(self, now: float) -> None:
        """Back to the base (RFC 8899 §4.3), confirming it by a probe before searching up again."""
        self.fallbacks += 1
        self.pmtu = self.base
        self.state = BASE
        self._losses = 0
        self._fail_count = 0
        self.probe_size = None
        self.probe_deadline = None
        self._raise_at = None
        self._hi = self.maximum + 1

    def info(self) -> dict[str, Any]:
        return {
            "pmtu": self.pmtu,
            "state": self.state,
            "maximum": self.maximum,
            "probes_sent": self.probes_sent,
            "fallbacks": self.fallbacks,
        }
