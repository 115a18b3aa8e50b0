"""The peer's transport addresses and what the association knows of each (RFC 9260 §6.4, §8.2, §8.3).

An association starts with one path, the address its handshake ran over. The peer's INIT or INIT-ACK may list more
(IPv4/IPv6 Address parameters); each is added unconfirmed and probed with a HEARTBEAT at once (§5.4), and becomes
active when its HEARTBEAT-ACK comes back. Data only ever goes to the primary path. A path whose error count passes
``pathmaxrxt`` (a T3 expiry or an unanswered HEARTBEAT each count one) is inactive; when that is the primary, the
association fails over to the first active path, and it returns to its preferred primary (the handshake's path or
``primary_addr``) as soon as that one answers a HEARTBEAT again.

Each path has its own RTT estimator and congestion window (§7.2: cwnd is per destination). The association keeps
working on the primary path's two objects (``Association._rtt`` and ``_cc``), which this part swaps on a change of
primary, so the data path never looks a path up. Over UDP (RFC 6951) an address is (IP, UDP port): the peer's other
addresses take the UDP port of the packet that listed them.

The primary path's idle HEARTBEATs stay ``Heartbeat``'s (``heartbeat.py``); this part probes the others, with an
info of its own size so an ack says which path it answers.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import TYPE_CHECKING, Any

from mux.sctp import events as ev
from mux.sctp.chunks import HeartbeatChunk
from mux.sctp.packet import serialize_packet
from mux.sctp.params import IPv4AddressParam, IPv6AddressParam
from mux.sctp.pmtud import ip_overhead
from mux.sctp.tx.congestion import Congestion
from mux.sctp.tx.rtt import RttEstimator

if TYPE_CHECKING:
    from mux.sctp.association import Addr, Association

#: a peer lists at most this many addresses we keep (the handshake's own path included)
MAX_PATHS = 8
#: nonce, when sent, path index: longer than ``Heartbeat``'s info, so an ack tells whose probe it answers
INFO = struct.Struct("!QdH")

UNCONFIRMED = "unconfirmed"
ACTIVE = "active"
INACTIVE = "inactive"


class Path:
    __slots__ = ("addr", "cc", "errors", "hb_at", "index", "nonce", "rtt", "sent_at", "state")

    def __init__(self, index: int, addr: Addr, state: str, rtt: RttEstimator, cc: Congestion) -> None:
        self.index = index
        self.addr = addr
        self.state = state
        self.errors = 0
        self.rtt = rtt
        self.cc = cc
        #: when this path's next HEARTBEAT goes (None: the primary, whose probes are ``Heartbeat``'s)
        self.hb_at: float | None = None
        #: the nonce of the probe awaiting its ack
        self.nonce: int | None = None
        self.sent_at = 0.0

    def info(self, primary: bool, mtu: int) -> dict[str, Any]:
        """gen_sctp's ``#sctp_paddrinfo{}``: state, cwnd, srtt, rto, mtu (times in ms)."""
        srtt = self.rtt.srtt
        return {
            "address": self.addr[:2],
            "state": self.state,
            "primary": primary,
            "cwnd": self.cc.cwnd,
            "srtt_ms": round(srtt * 1000, 3) if srtt is not None else None,
            "rto_ms": round(self.rtt.rto * 1000, 3),
            "mtu": mtu,
            "error_count": self.errors,
        }


def address_params(hosts: tuple[str, ...]) -> list[IPv4AddressParam | IPv6AddressParam]:
    """Our addresses for an INIT or INIT-ACK: none for a single one (§5.1.2: the packet's source says it)."""
    if len(hosts) < 2:
        return []
    return [IPv6AddressParam(h) if ":" in h else IPv4AddressParam(h) for h in hosts]


def same_host(a: Addr, b: Addr) -> bool:
    return bool(a[0] == b[0] and a[1] == b[1])


def acceptable(host: str, source: Addr) -> bool:
    """An address a peer may list (§5.1.2): a unicast one of the source's family; loopback only from loopback."""
    try:
        ip = ipaddress.ip_address(host)
        src = ipaddress.ip_address(str(source[0]).split("%")[0])
    except ValueError:
        return False
    if ip.version != src.version or ip.is_unspecified or ip.is_multicast:
        return False
    return not ip.is_loopback or src.is_loopback


class Paths:
    __slots__ = ("_rng", "a", "by_index", "changed", "hbinterval", "held_below", "pathmaxrxt", "preferred", "primary")

    def __init__(self, assoc: Association, first: Addr) -> None:
        self.a = assoc
        config = assoc.config
        self.pathmaxrxt = config.pathmaxrxt
        self.hbinterval = config.hbinterval / 1000.0
        self._rng = assoc._rng
        self.primary = Path(0, first, ACTIVE, assoc._rtt, assoc._cc)
        #: every path, in the order learnt; a path is never removed while the association lives
        self.by_index: list[Path] = [self.primary]
        #: the path the association goes back to when it works: the handshake's, or ``primary_addr``
        self.preferred = self.primary
        #: a path was added since the endpoint last indexed them (it must find packets from there)
        self.changed = False
        #: after a T3 sent its retransmissions elsewhere (§6.4.1), the highest TSN then sent: acks up to it say
        #: nothing of the primary path, whose error count stays until data above it is acknowledged (§8.2)
        self.held_below: int | None = None

    def __len__(self) -> int:
        return len(self.by_index)

    def addresses(self) -> list[Addr]:
        return [p.addr for p in self.by_index]

    def find(self, addr: Addr) -> Path | None:
        for p in self.by_index:
            if same_host(p.addr, addr):
                return p
        return None

    # -- learning addresses -----------------------------------------------------------------------------------

    def learn(self, hosts: list[str], source: Addr, now: float) -> None:
        """The addresses a peer's INIT or INIT-ACK listed, the packet coming from ``source``."""
        for host in hosts:
            if len(self.by_index) >= MAX_PATHS:
                return
            if not acceptable(host, source):
                continue
            addr = (host, source[1], *source[2:]) if len(source) > 2 else (host, source[1])
            if self.find(addr) is None:
                self.add(addr, now)

    def add(self, addr: Addr, now: float) -> Path:
        a = self.a
        c = a.config
        rtt = RttEstimator(c.rto_initial / 1000.0, c.rto_min / 1000.0, c.rto_max / 1000.0)
        path = Path(len(self.by_index), addr, UNCONFIRMED, rtt, Congestion(a._mtu))
        path.hb_at = now  # §5.4: probe a new address at once, to confirm it
        self.by_index.append(path)
        self.changed = True
        a._events.append(ev.PathChanged(addr, "added"))
        if c.primary_addr and addr[0] == c.primary_addr:
            self.preferred = path
        return path

    def alternate(self) -> Path | None:
        """An active path other than the primary: where a retransmission after a T3 goes (§6.4.1)."""
        return next((p for p in self.by_index if p is not self.primary and p.state == ACTIVE), None)

    # -- failure detection ----------------------------------------------------------------------------------------

    def primary_missed(self, now: float) -> None:
        """A T3 expired, or a HEARTBEAT went unanswered, on the primary path (its RTO already backed off): one more
        error there; past ``pathmaxrxt`` this fails over."""
        self._error(self.primary, now)

    def _error(self, path: Path, now: float) -> None:
        path.errors += 1
        if path.errors > self.pathmaxrxt and path.state != INACTIVE:
            path.state = INACTIVE
            self.a._events.append(ev.PathChanged(path.addr, "unreachable"))
            if path is self.primary:
                alternate = self.alternate()
                if alternate is not None:
                    self._switch(alternate, now)

    def _switch(self, path: Path, now: float) -> None:
        """Make ``path`` the primary: the data path works on its RTT and cwnd from now on."""
        a = self.a
        old = self.primary
        if path is old:
            return
        old.hb_at = now + self._interval(old)  # the old primary is probed as any other path now
        old.nonce = None
        path.hb_at = None
        path.nonce = None
        self.primary = path
        a._rtt = path.rtt
        a._cc = path.cc
        # what was in flight to the old path cannot be acknowledged through the new one's window
        path.cc.acked_since_send = 0
        a.peer_addr = path.addr
        a._heartbeat.nonce = None
        a._events.append(ev.PrimaryChanged(path.addr, old.addr))
        if a._pmtud is not None:
            a._pmtud.primary_changed(now)

    # -- heartbeats to the other paths ----------------------------------------------------------------------------

    def _interval(self, path: Path) -> float:
        """§8.3: hbinterval plus the path's RTO, jittered; an unconfirmed or inactive path once per RTO."""
        rto = path.rtt.rto
        if path.state != ACTIVE or not self.hbinterval:
            return rto
        return self.hbinterval + rto * (0.5 + self._rng.random())

    def next_timer(self) -> float | None:
        at: float | None = None
        for p in self.by_index:
            t = p.hb_at
            if t is not None and p is not self.primary and (at is None or t < at):
                at = t
        return at

    def on_timer(self, now: float, out: list[tuple[bytes, Addr]]) -> None:
        """Probe every path whose turn has come; ``out`` gets (packet, address) for each."""
        a = self.a
        for p in self.by_index:
            if p is self.primary or p.hb_at is None or p.hb_at > now:
                continue
            if p.nonce is not None:  # the last probe went unanswered
                p.rtt.backoff()
                if p.state == UNCONFIRMED:
                    p.errors += 1  # §5.4: an address that never answers stays unconfirmed (and unused)
                else:
                    self._error(p, now)
            nonce = self._rng.getrandbits(64)
            p.nonce = nonce
            p.sent_at = now
            chunk = HeartbeatChunk(INFO.pack(nonce, now, p.index)).serialize()
            out.append((serialize_packet(a.local_port, a.remote_port, a.peer_vtag, [chunk]), p.addr))
            p.hb_at = now + (p.rtt.rto if p.state != ACTIVE else self._interval(p))

    def on_ack(self, info: bytes, now: float) -> None:
        """A HEARTBEAT-ACK for one of our path probes: the path works (and is confirmed, §5.4)."""
        nonce, sent_at, index = INFO.unpack(info)
        if index >= len(self.by_index):
            return
        p = self.by_index[index]
        if p.nonce is None or p.nonce != nonce:
            return
        p.nonce = None
        p.rtt.sample(now - sent_at)
        p.errors = 0
        was = p.state
        p.state = ACTIVE
        if was != ACTIVE:
            self.a._events.append(ev.PathChanged(p.addr, "confirmed" if was == UNCONFIRMED else "available"))
        if p is not self.primary:
            p.hb_at = now + self._interval(p)
            if p is self.preferred or self.primary.state == INACTIVE:
                self._switch(p, now)

    def set_primary(self, addr: Addr, now: float) -> bool:
        """gen_sctp's ``primary_addr``: prefer the path to ``addr`` (by host); False when there is none."""
        for p in self.by_index:
            if p.addr[0] == addr[0] and (len(addr) < 2 or not addr[1] or p.addr[1] == addr[1]):
                self.preferred = p
                if p.state == ACTIVE:
                    self._switch(p, now)
                return True
        return False

    def info(self) -> list[dict[str, Any]]:
        """Per path; ``mtu`` is the SCTP packet size: the primary's as PMTU discovery found it, the others' the
        base (``pmtu``), as a path becomes primary unsearched."""
        a = self.a
        base = a.config.pmtu - ip_overhead(a)
        return [p.info(p is self.primary, a._mtu if p is self.primary else base) for p in self.by_index]
