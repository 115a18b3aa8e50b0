"""DPLPMTUD for SCTP (RFC 8899 §6.2): probe with a HEARTBEAT padded by a PAD chunk (RFC 4820) to the probe size;
its HEARTBEAT-ACK confirms the size, and the association then sends packets (and cuts new messages) that large.

The search (``mux.pmtud.Search``) runs on the primary path, from ``pmtu`` (the base) up to the smaller of
``maximum_mtu`` and the interface MTU toward the peer (the driver asks the kernel, ``set_interface_mtu``). A new
primary starts over from the base, as an unknown path must. A probe's info is 20 bytes (nonce, send time, size):
longer than the idle and the path HEARTBEATs' (16 and 18), so its ack tells itself apart. A probe unanswered for
an RTO counts as lost. Black holes: ``mtu_discovery_missing_probe_count`` T3 expiries in a row without the
cumulative TSN moving between them drop the size back to the base.

When the size falls, what is still queued is cut again (``Scheduler.recut``). A DATA chunk keeps its size once it
has a TSN: chunks in flight at the larger size are retransmitted as they are (the kernel may fragment them at IP;
a path that drops them silently stalls them). Messages of at most the base's fragmentation point are never
affected.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from mux.pmtud import Search
from mux.sctp import extensions as ext
from mux.sctp.chunks import HeartbeatChunk
from mux.sctp.packet import serialize_packet
from mux.sctp.state import ESTABLISHED

if TYPE_CHECKING:
    from mux.sctp.association import Association
    from mux.sctp.config import SctpConfig

#: nonce, when sent, probe size (IP MTU)
PROBE_INFO = struct.Struct("!QdI")
#: RFC 4820's PAD chunk: the upper bits 10 say "skip, do not report" to a peer that does not know it
PAD_TYPE = 0x84
_CHUNK_HEADER = struct.Struct("!BBH")


def ip_overhead(a: Association) -> int:
    """IP header plus encapsulation (UDP) header of this association's packets."""
    ip = 40 if ":" in str(a.peer_addr[0]) else 20
    return ip + (8 if a.config.encapsulation == "udp" else 0)


def set_size(a: Association, pmtu: int) -> None:
    """Make ``pmtu`` (an IP MTU) the association's packet size: its bundling budget, the fragmentation point of
    messages queued from now on, and the congestion controller's unit."""
    config = a.config
    budget = pmtu - ip_overhead(a) - 12
    a._budget = budget
    frag = budget - (20 if a._offered & ext.IDATA else 16)
    if config.maxseg:
        frag = min(frag, config.maxseg)
    frag = max(frag & ~3, 4)
    if frag < a.fragmentation_point:
        a._queue.recut(frag)  # what waits is cut again: only chunks already sent keep the larger size
    a.fragmentation_point = a._queue.fragmentation_point = frag
    a._mtu = budget + 12
    a._cc.mtu = a._mtu
    a._stalled_below = min(2 * a._mtu, config.recbuf // 4)
    a._update_step = min(a._mtu, config.recbuf // 4)


def idle_info(config: SctpConfig, maximum: int) -> dict[str, Any] | None:
    """``stats()['pmtud']`` of an association whose search has not begun (None: discovery is off)."""
    if not maximum:
        return None
    return {"pmtu": config.pmtu, "state": "idle", "maximum": maximum, "probes_sent": 0, "fallbacks": 0}


class SctpPmtud:
    __slots__ = ("_cum_at_t3", "a", "nonce", "search")

    def __init__(self, assoc: Association) -> None:
        self.a = assoc
        c = assoc.config
        self.search = Search(
            c.pmtu, c.maximum_mtu, max_probes=c.mtu_discovery_missing_probe_count, raise_interval=c.mtu_raise_s
        )
        self.nonce: int | None = None
        self._cum_at_t3: int | None = None

    def set_interface_mtu(self, mtu: int | None) -> None:
        if mtu is not None:
            self.search.set_maximum(min(self.search.maximum, mtu))

    def next_timer(self) -> float | None:
        a = self.a
        if a.state != ESTABLISHED or a.on_hold:  # not once shutdown began: an ack would outlive the association
            return None
        return self.search.next_timer()

    def on_timer(self, now: float) -> None:
        a = self.a
        if a.state != ESTABLISHED or a.on_hold:
            return
        size = self.search.probe_due(now, a._rtt.rto)
        if size is None:
            return
        nonce = a._rng.getrandbits(64)
        self.nonce = nonce
        hb = HeartbeatChunk(PROBE_INFO.pack(nonce, now, size)).serialize()
        pad = (size - ip_overhead(a) - 12 - len(hb)) & ~3  # the PAD chunk, header included
        chunks = [hb]
        if pad >= 4:
            chunks.append(_CHUNK_HEADER.pack(PAD_TYPE, 0, pad) + bytes(pad - 4))
        a._to_paths.append((serialize_packet(a.local_port, a.remote_port, a.peer_vtag, chunks), a.peer_addr))

    def on_ack(self, info: bytes, now: float) -> None:
        """A HEARTBEAT-ACK with a probe's info: the size got through, if the nonce is our current probe's."""
        nonce, _sent_at, size = PROBE_INFO.unpack(info)
        if nonce != self.nonce:
            return
        self.nonce = None
        if self.search.probe_acked(size, now):
            set_size(self.a, self.search.pmtu)

    def on_t3(self, now: float) -> None:
        """A T3 expired: a full-size packet lost for want of any answer. In a row, they are a black hole."""
        cum = self.a._out.cum_acked
        if cum != self._cum_at_t3:
            self.search.progress()
            self._cum_at_t3 = cum
        if self.search.packet_lost(now):
            set_size(self.a, self.search.pmtu)

    def primary_changed(self, now: float) -> None:
        """A new primary path: nothing is known of its MTU; back to the base, and search it."""
        if self.search.pmtu != self.search.base or self.search.state != "searching":
            self.search.black_hole(now)
            set_size(self.a, self.search.pmtu)

    def info(self) -> dict[str, Any]:
        return self.search.info()
