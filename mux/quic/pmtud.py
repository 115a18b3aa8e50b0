"""DPLPMTUD for QUIC (RFC 9000 §14.3, RFC 8899): probe with PING + PADDING, raise aioquic's datagram size once a
probe is acknowledged.

aioquic (1.7.2) sends every packet at one ``_max_datagram_size`` fixed at construction and has no PMTU discovery.
This part builds its probes beside it: a 1-RTT packet of a PING and PADDING to the probe size, from aioquic's own
packet builder and keys, registered with its loss recovery like any packet, so the probe's ack (or loss) comes back
through the PING's delivery handler. On an ack the connection's ``_max_datagram_size`` rises, together with the
values aioquic derived from it (the congestion controller's and the pacer's): from the next packet on, everything
is built at the new size. No aioquic code is patched; the connection subclass (``mux.quic.core``) calls in here
from ``datagrams_to_send`` and ``get_timer``, and keeps probe losses away from congestion control (RFC 9000 §14.4).

Ceilings: the peer's ``max_udp_payload_size`` transport parameter, ``maximum_mtu`` and the interface MTU toward
the peer (the driver tells), and 16383 bytes of UDP payload because aioquic writes a STREAM frame's length in two
bytes (a larger packet would carry a frame it cannot encode). Black holes: ``max_probes`` probe timeouts in a row
(aioquic's PTO count) with the size above the base drop it back to the base (``mux.pmtud``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aioquic import tls
from aioquic.quic.packet import QuicFrameType, QuicPacketType
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder, QuicPacketBuilderStop

from mux.pmtud import Search, interface_mtu, ip_udp_overhead

if TYPE_CHECKING:
    from mux.quic.core import MuxQuicConnection
    from mux.quic.options import QuicOptions

#: aioquic writes a STREAM frame's length as a 2-byte varint: no packet may hold a frame of 16384 bytes or more
AIOQUIC_MAX_PAYLOAD = 16383


class QuicPmtud:
    __slots__ = ("_addr", "_now", "_overhead", "_pto_seen", "conn", "peer_max", "probe_packets", "search")

    def __init__(self, conn: MuxQuicConnection, search: Search, overhead: int) -> None:
        self.conn = conn
        self.search = search
        self._overhead = overhead
        #: the peer's max_udp_payload_size (65527 when it says nothing)
        self.peer_max = 65527
        #: packet numbers of our probes in flight: their loss is no congestion signal. An empty tuple while there are
        #: none, which is nearly always once the search is done (an empty set costs 216 bytes a connection)
        self.probe_packets: set[int] | tuple[()] = ()
        self._pto_seen = 0
        #: the latest time the connection was given (a delivery handler is called without one)
        self._now = 0.0
        #: the peer address the search is about: a migration to another starts it over from the base
        self._addr: Any = None

    # -- the connection's hooks ----------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        if not self.conn._handshake_confirmed:
            return None
        return self.search.next_timer()

    def poll(self, now: float) -> list[tuple[bytes, Any]]:
        """Called after every ``datagrams_to_send``: black-hole watch, then a probe if one is due."""
        self._now = now
        conn = self.conn
        search = self.search
        pto = conn._loss._pto_count
        if pto > self._pto_seen:
            for _ in range(pto - self._pto_seen):
                if search.packet_lost(now):
                    self._apply()
                    break
        elif pto == 0:
            search.progress()
        self._pto_seen = pto
        if not conn._handshake_confirmed:
            return []
        addr = conn._network_paths[0].addr
        if addr != self._addr:
            if self._addr is not None:  # the peer moved (RFC 9000 §9.4): nothing is known of the new path's MTU
                search.black_hole(now)
                self._apply()
            self._addr = addr
        size = search.probe_due(now, 2 * conn._loss.get_probe_timeout())
        if size is None:
            return []
        datagram = self._build_probe(size - self._overhead, now)
        if datagram is None:
            search.probe_lost(size, now)  # cannot be built (no 1-RTT keys yet): counts as a failed attempt
            return []
        return [datagram]

    def peer_parameters(self, max_udp_payload_size: int | None) -> None:
        if max_udp_payload_size is not None:
            self.peer_max = max_udp_payload_size
            self.search.set_maximum(min(self.search.maximum, max_udp_payload_size + self._overhead))
            self._apply()

    def split_lost(self, packets: list[Any]) -> tuple[list[Any], list[Any]]:
        """Packets recovery declares lost, as (ours: probes, which say nothing of congestion; the others)."""
        probes = self.probe_packets
        ours = [p for p in packets if p.packet_number in probes]
        return ours, [p for p in packets if p.packet_number not in probes]

    # -- probing ----------------------------------------------------------------------------------------------------

    def _build_probe(self, payload: int, now: float) -> tuple[bytes, Any] | None:
        conn = self.conn
        crypto = conn._cryptos[tls.Epoch.ONE_RTT]
        if not crypto.send.is_valid():
            return None
        builder = QuicPacketBuilder(
            host_cid=conn.host_cid,
            is_client=conn._is_client,
            max_datagram_size=payload,
            packet_number=conn._packet_number,
            peer_cid=conn._peer_cid.cid,
            peer_token=conn._peer_token,
            quic_logger=conn._quic_logger,
            spin_bit=conn._spin_bit,
            version=conn._version or 0,
        )
        builder.max_flight_bytes = payload  # a probe may go beyond cwnd (RFC 9000 §14.4, RFC 8899 §4.1)
        size = self.search.probe_size
        try:
            builder.start_packet(QuicPacketType.ONE_RTT, crypto)
            builder.start_frame(
                QuicFrameType.PING, capacity=1, handler=self._delivered, handler_args=(size, builder.packet_number)
            )
            room = builder.remaining_buffer_space
            if room > 0:
                buf = builder.start_frame(QuicFrameType.PADDING, capacity=room)
                buf.push_bytes(bytes(room - 1))
        except QuicPacketBuilderStop:
            return None
        datagrams, packets = builder.flush()
        if not datagrams:
            return None
        conn._packet_number = builder.packet_number
        space = conn._spaces[tls.Epoch.ONE_RTT]
        for packet in packets:
            packet.sent_time = now
            conn._loss.on_packet_sent(packet=packet, space=space)
            probes = self.probe_packets
            if not probes:
                probes = self.probe_packets = set()
            probes.add(packet.packet_number)
        return datagrams[0], conn._network_paths[0].addr

    def _delivered(self, delivery: QuicDeliveryState, size: int, packet_number: int) -> None:
        probes = self.probe_packets
        if probes:
            probes.discard(packet_number)
            if not probes:
                self.probe_packets = ()
        search = self.search
        if delivery == QuicDeliveryState.ACKED:
            if search.probe_acked(size, self._now):
                self._apply()
        else:
            search.probe_lost(size, self._now)

    def _apply(self) -> None:
        """Build every packet at the search's size from now on."""
        conn = self.conn
        payload = min(self.search.pmtu - self._overhead, self.peer_max, AIOQUIC_MAX_PAYLOAD)
        payload = max(payload, conn._configuration.max_datagram_size)
        if payload == conn._max_datagram_size:
            return
        conn._max_datagram_size = payload
        loss = conn._loss
        loss._pacer._max_datagram_size = payload
        cc = loss._cc
        if hasattr(cc, "_max_datagram_size"):
            cc._max_datagram_size = payload
        if hasattr(cc, "additive_increase_factor"):
            cc.additive_increase_factor = payload

    def info(self) -> dict[str, Any]:
        return {**self.search.info(), "udp_payload": self.conn._max_datagram_size}


def attach(conn: MuxQuicConnection, options: QuicOptions, peer: Any) -> None:
    """Give ``conn`` (to or from ``peer``) its PMTU search, as ``options`` say (off: ``maximum_mtu`` at or below the
    base)."""
    host = str(peer[0])
    overhead = ip_udp_overhead(host)
    base = conn._configuration.max_datagram_size + overhead
    if options.minimum_mtu is not None:
        base = max(base, options.minimum_mtu)
    maximum = min(options.maximum_mtu, AIOQUIC_MAX_PAYLOAD + overhead)
    iface = interface_mtu(peer)
    if iface is not None:
        maximum = min(maximum, iface)
    if maximum <= base:
        return
    search = Search(
        base,
        maximum,
        max_probes=options.mtu_discovery_missing_probe_count,
        raise_interval=options.mtu_discovery_search_complete_timeout_us / 1e6,
    )
    conn.pmtud = QuicPmtud(conn, search, overhead)
    conn.pmtud._apply()  # a minimum_mtu above max_datagram_size
