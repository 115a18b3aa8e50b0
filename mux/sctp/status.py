"""What an association reports: gen_sctp's #sctp_status{}, and the counters it keeps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mux.sctp import extensions as ext
from mux.sctp.pmtud import idle_info

if TYPE_CHECKING:
    from mux.sctp.association import Association

#: the counters every association shows, 0 until counted
STATS = (
    "tx_packets",
    "rx_packets",
    "tx_data_chunks",
    "rx_data_chunks",
    "retransmitted_chunks",
    "fast_retransmits",
    "t3_expiries",
    "rack_retransmits",
    "tlp_probes",
    "duplicate_tsns",
    "rwnd_drops",
    "bad_vtag",
    "unrecognized_chunks",
    "messages_sent",
    "messages_received",
)
ZERO_STATS = dict.fromkeys(STATS, 0)


class Counts(dict[str, int]):
    """Counters that read 0 until first counted: an idle association stores only the few it has counted."""

    __slots__ = ()

    def __missing__(self, key: str) -> int:
        return 0


def status(a: Association) -> dict[str, object]:
    """gen_sctp's #sctp_status{} plus counters."""
    return {
        "state": a.state,
        "rwnd": a.rwnd,
        "peer_rwnd": a.peer_rwnd,
        "unackdata": len(a._out),
        "penddata": a._queue.chunks,
        "instrms": a.inbound_streams,
        "outstrms": a.outbound_streams,
        "fragmentation_point": a.fragmentation_point,
        "held_bytes": a._reasm.held,
        "held_fragments": a._reasm.fragments,
        "gap_ranges": a._rx.ranges,
        "buffered": a.buffered_amount(),
        "streams_in_use": len(a._sflags),
        "extensions": ext.names(a.features),
        "scheduler": a._queue.name,
        "interleaving": a._queue.interleave,
        "reconfig": {
            "in_flight": a._reconfig.inflight is not None,
            "waiting": len(a._reconfig.out_wanted) + len(a._reconfig.in_wanted),
            "deferred": len(a._reconfig.deferred),
            "held_chunks": len(a._streams.held),
        },
        "primary": {
            "cwnd": a._cc.cwnd,
            "ssthresh": a._cc.ssthresh,
            "flight": a._out.flight,
            "srtt": round(a._rtt.srtt * 1000, 3) if a._rtt.srtt is not None else None,
            "rto": round(a._rtt.rto * 1000, 3),
            "mtu": a._mtu,
        },
        "paths": a._paths.info(),
        "pmtud": a._pmtud.info() if a._pmtud is not None else idle_info(a.config, a._pmtud_max),
        **ZERO_STATS,
        **a.stats,
    }
