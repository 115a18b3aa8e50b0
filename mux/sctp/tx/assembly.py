"""Packet assembly: what an association sends when the driver asks (``Association.datagrams_to_send``).

The hot path of sending. Order within a round: packets already built whole (INIT, T-bit replies, ABORT; then
HEARTBEATs and replies for other paths), control chunks, a FORWARD-TSN, a RE-CONFIG request and the SACK, then
retransmissions (at least one packet's worth whatever cwnd says, §6.1, §7.2.4), then new data within cwnd and the
peer's window, with Nagle unless ``nodelay`` and bursts bounded by the ack clock (``Congestion.burst``). The last
DATA chunk before the queue runs dry carries the I bit (RFC 7053).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mux.sctp.packet import serialize_packet
from mux.sctp.state import CLOSED, DATA_FLOWS, SHUTDOWN_SENT
from mux.sctp.tx.scheduler import encode_idata

if TYPE_CHECKING:
    from mux.sctp.association import Addr, Association
    from mux.sctp.tx.send_queue import OutChunk


def assemble(a: Association, now: float) -> list[tuple[bytes, Addr]]:
    """Every packet due now: the stateless and per-path ones, then control chunks, retransmissions (after a T3,
    to another of the peer's addresses, §6.4.1), and new data within cwnd, the peer's window and Max.Burst,
    bundled into packets of at most the path's budget."""
    addr = a.peer_addr
    out: list[tuple[bytes, Addr]] = []
    a._batch_sacks = 0
    if a._raw:
        out = [(p, addr) for p in a._raw]
        a._raw = []
    if a._to_paths:
        out.extend(a._to_paths)
        a._to_paths = []
    if a.state == CLOSED or a._on_hold:
        a.stats["tx_packets"] += len(out)
        return out
    budget = a._budget
    packets: list[list[bytes]] = []
    packet: list[bytes] = []
    size = 0
    ctrl = a._ctrl  # control chunks first, then a FORWARD-TSN, our RE-CONFIG request and a SACK
    if a._fwd_due:
        ctrl.append(a._retx.forward_tsn(now))
    if a._reconf_work and a.state in DATA_FLOWS:
        ctrl.append(a._streams.poll(now))
    if a._need_sack:
        to = a._sack_to
        if to[0] == addr[0]:
            ctrl.append(a._receiver.build_sack())
        else:  # §6.4: a SACK goes where the DATA it answers came from (another of the peer's addresses)
            sack = serialize_packet(a.local_port, a.remote_port, a.peer_vtag, [a._receiver.build_sack()])
            out.append((sack, to))
    if ctrl:
        a._ctrl = []
        for enc in ctrl:
            if not enc:
                continue
            if size + len(enc) > budget and packet:
                packets.append(packet)
                packet, size = [], 0
            packet.append(enc)
            size += len(enc)
    state = a.state
    last: tuple[list[bytes], int, OutChunk] | None = None
    inflight = a._out
    queue = a._queue
    if state in DATA_FLOWS and (inflight.rtx or queue):
        sent_any = False
        cc = a._cc
        cwnd = cc.cwnd
        stats = a.stats
        hdr = a._hdr  # DATA's 16 bytes or I-DATA's 20
        # retransmissions first (§6.1, §7.2.4); at least one packet's worth goes whatever cwnd says
        rtx = inflight.rtx
        rtx_packets = 0
        rtx_to = a._rtx_to
        if rtx_to is not None:  # after a T3, to another of the peer's addresses (§6.4.1): packets of their own
            a._rtx_to = None
            if packet:
                packets.append(packet)
                packet, size = [], 0
            primary_packets, packets = packets, []
        while rtx:
            c = rtx[0]
            if not c.marked or c.acked:
                rtx.popleft()
                continue
            if inflight.flight + c.size > cwnd and rtx_packets > 0:
                break
            n = hdr + ((c.size + 3) & ~3)
            if size + n > budget and packet:
                packets.append(packet)
                packet, size = [], 0
                rtx_packets += 1
                if inflight.flight >= cwnd:
                    break
            rtx.popleft()
            inflight.resend(c, now)
            packet.append(c.wire)
            size += n
            sent_any = True
            stats["retransmitted_chunks"] += 1
            last = (packet, len(packet) - 1, c)
        if not rtx:
            inflight.rtx = None  # all sent: the queue goes until the next loss
        if rtx_to is not None:
            if packet:
                packets.append(packet)
                packet, size = [], 0
            out.extend((serialize_packet(a.local_port, a.remote_port, a.peer_vtag, p), rtx_to) for p in packets)
            packets = primary_packets
            last = None
        # new data, within cwnd and the peer's window, bursts limited (§7.2.4 Max.Burst)
        if queue and state != SHUTDOWN_SENT:
            nagle = (
                not a.config.nodelay
                and inflight.flight > 0
                and queue.bytes < a.fragmentation_point
                and not (packet and size < budget)  # it can still ride in a packet we are sending anyway
                and not a._probing
            )
            if not nagle:
                burst = cc.burst(a.config.max_burst)
                full_packets = 0
                new_chunks = 0
                take = queue.take
                add = inflight.add_idata if hdr == 20 else inflight.add
                while (head := queue.head) is not None:
                    c = head.chunks[0]  # queue.peek(), inlined
                    if c.expires and now >= c.expires:  # PR-SCTP timed: its message lapsed before it left
                        a._retx.abandon_queued(c)
                        continue
                    flight = inflight.flight
                    avail = a._peer_arwnd - flight
                    if flight:
                        if flight >= cwnd or c.size > avail:
                            break
                    elif c.size > avail and inflight.bytes:
                        break  # zero-window probe only when nothing at all is outstanding (§6.1 rule A)
                    n = hdr + ((c.size + 3) & ~3)
                    if size + n > budget and packet:
                        packets.append(packet)
                        packet, size = [], 0
                        full_packets += 1
                        if full_packets >= burst:
                            break
                    take()
                    packet.append(add(c, now))
                    size += n
                    new_chunks += 1
                    last = (packet, len(packet) - 1, c)
                    if a._peer_arwnd - inflight.flight <= 0 and not flight:
                        break  # that was the zero-window probe
                if new_chunks:
                    sent_any = True
                    stats["tx_data_chunks"] += new_chunks
        if sent_any:
            a._last_data = now
            cc.on_sent(inflight.flight)
            if a._t3 is None:
                a._t3 = now + a._rtt.rto
            if a._t_hb is not None:
                a._t_hb = a._heartbeat.due(now, a._rtt.rto)
            a._retx.sent(now, not queue)  # the probe timer; an empty queue puts the I bit on the last chunk
    if packet:
        packets.append(packet)
    if a._reconf_work and state in DATA_FLOWS:
        # a reset whose stream's last data just left: its request goes now, in a packet of its own (control
        # chunks never follow DATA in a packet)
        enc = a._streams.poll(now)
        if enc:
            packets.append([enc])
    if last is not None and not queue:
        # RFC 7053: our queue just drained, ask for the SACK now instead of after the peer's delay
        pkt, index, c = last
        pkt[index] = encode_idata(c, True) if a._hdr == 20 else c.encode(immediate=True)
    if packets:
        lp, rp, tag = a.local_port, a.remote_port, a.peer_vtag
        out.extend((serialize_packet(lp, rp, tag, p), addr) for p in packets)
    a.stats["tx_packets"] += len(out)
    return out
