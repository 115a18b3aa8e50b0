"""The receiving side of an association: DATA and I-DATA chunks in, FORWARD-TSN, and when and what to SACK.

RFC 9260 §6.2 and §6.7 say when: a SACK at once for a packet that arrives while TSNs are missing, for the one that
fills the last gap, for duplicates, and when the sender asked (RFC 7053's I bit); otherwise at least every second
packet or after ``sackdelay``. The driver hands the association a whole read batch before asking for packets, so
each owed SACK is built as it stood when the next packet with data begins (``begin``) rather than once per batch.

The state stays on the association (``_rx``, the TSN tracker; ``_reasm``, the reassembly; the SACK flags and
timer), where the handshake, RE-CONFIG and shutdown code reach it too; this part is what works on it, as
``Heartbeat`` and ``Shutdown`` are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mux.sctp.chunks import (
    SACK_HEADER,
    DataChunk,
    ErrorChunk,
    ForwardTsnChunk,
    IDataChunk,
    IForwardTsnChunk,
    SackChunk,
    ShutdownChunk,
)
from mux.sctp.packet import serialize_packet
from mux.sctp.params import invalid_stream_cause, no_user_data_cause, out_of_resource_cause, protocol_violation_cause
from mux.sctp.rx.interleaved import TooLarge
from mux.sctp.rx.reassembly import CHUNK_COST, BadFragments
from mux.sctp.rx.tracker import DUPLICATE, MAX_AHEAD, NEXT, NO_ROOM, TOO_FAR
from mux.sctp.state import ESTABLISHED, SHUTDOWN_SENT

if TYPE_CHECKING:
    from mux.sctp.association import Addr, Association

MASK = 0xFFFFFFFF
#: §6.2's every-second-packet SACKs at most sent inside one read batch; those §6.7 owes are never held back. 2, not
#: 4: a SACK's build and sendto were a quarter of the receive CPU at 65000-byte messages, and tsctp into mux (A/B,
#: alternating) went 1104 -> 1237 Mbit/s at 1200 B, 1231 -> 1300 at 65000 B, with no loss in bench/sctp_tsctp_loss.py
MAX_BATCH_SACKS = 2
_sack_head = SACK_HEADER.pack


class Receiver:
    __slots__ = ("a",)

    def __init__(self, assoc: Association) -> None:
        self.a = assoc

    def on_data(self, c: DataChunk | IDataChunk, now: float) -> None:
        """One DATA or I-DATA chunk (``IDataChunk.ssn`` is its MID; the reassembly is the matching one)."""
        a = self.a
        stats = a.stats
        stats["rx_data_chunks"] += 1
        rx = a._rx
        tsn = c.tsn
        cum = rx.cum
        if (tsn - cum) & MASK == 1 and not rx.starts:
            u = cum + 1  # the common case: the next in sequence, with nothing missing
            verdict = NEXT
        else:
            u = rx.unwrap(tsn)
            verdict = rx.classify(u)
            if verdict == DUPLICATE:
                stats["duplicate_tsns"] += 1
                rx.duplicate(tsn)
                a._sack_now = True
                return
            if verdict in (TOO_FAR, NO_ROOM):
                # no honest sender gets this far past our cumulative point, nor leaves this many holes
                stats["rwnd_drops"] += 1
                return
        data = c.data
        if not data:
            a._abort_with(no_user_data_cause(tsn), "peer sent DATA without user data")
            return
        reasm = a._reasm
        held = reasm.held + len(data) + CHUNK_COST
        recbuf = a._recbuf
        # Over our window only the chunk at the cumulative point may still come in, and only while data waits for
        # it here, so a full buffer of out-of-order data or fragments can always be completed; beyond twice the
        # window we drop even that. What the application has not read yet is no reason to take more.
        if held > recbuf and (verdict != NEXT or held > 2 * recbuf or not reasm.assembling):
            stats["rwnd_drops"] += 1
            a._sack_now = True
            if verdict == NEXT and reasm.held == reasm.assembling and not rx.has_gaps:
                # nothing is missing and the application holds nothing, yet the next chunk cannot come in: what
                # waits can never complete (fragments far smaller than what they cost to hold)
                a._abort_with(out_of_resource_cause(), "peer message larger than the receive window can hold")
            return
        if verdict == NEXT and not rx.starts:
            rx.cum = u
        else:
            rx.record(u)
        a._last_data = now
        if verdict != NEXT or c.immediate:
            a._sack_now = True  # out of order: report the gap at once (§6.7); or the sender asked (RFC 7053)
        sid = c.stream_id
        if sid >= a.inbound_streams:
            a._ctrl.append(ErrorChunk([invalid_stream_cause(sid)]).serialize())
            return  # acknowledged, not delivered (§6.5)
        if a._rx_special and a._streams.special_chunk(u, c):
            return
        if c.beginning and c.ending:
            if c.unordered:
                reasm.deliver(sid, data, c.ppid, True)
            else:
                reasm.ordered(sid, c.ssn, data, c.ppid)
            return
        try:
            reasm.fragment(u, c)  # type: ignore[arg-type]
        except TooLarge:  # I-DATA: this message alone holds more than the window
            a._abort_with(out_of_resource_cause(), f"peer message larger than recbuf ({recbuf} bytes)")
            return
        except BadFragments:
            a._abort_with(protocol_violation_cause(b"fragments of one message disagree"), "bad fragments")
            return
        if reasm.fragment_bytes > recbuf and not rx.has_gaps and reasm.one_message:
            # nothing is missing, yet what waits fills the window: a message bigger than the window never completes
            a._abort_with(out_of_resource_cause(), f"peer message larger than recbuf ({recbuf} bytes)")

    def begin(self, addr: Addr) -> bool:
        """A packet with data (or a FORWARD-TSN) begins, from ``addr``: the SACK an earlier packet is owed at once
        leaves now, as it stood, before this packet changes what it would say (the driver reads packets in batches
        and builds one round of packets per batch), to where that packet came from; this one's goes back to
        ``addr`` (§6.4). Returns whether TSNs were missing before this packet."""
        a = self.a
        if a._sack_urgent:
            a._batch_sacks += 1
            packet = serialize_packet(a.local_port, a.remote_port, a.peer_vtag, [self.build_sack()])
            to = a._sack_to
            if to[0] == a.peer_addr[0]:
                a._raw.append(packet)
            else:
                a._to_paths.append((packet, to))
        a._sack_to = addr
        return bool(a._rx.starts)

    def after(self, now: float, gaps_before: bool) -> None:
        a = self.a
        if a._rx_special:
            a._streams.after_data()
        a._data_packets += 1
        # §6.7: a SACK at once for a packet that arrives while TSNs are missing and (as BSD and usrsctp do) for
        # the one that fills the last gap, for duplicates, and when the sender asked (RFC 7053 I bit): each such
        # packet gets its own, even inside one read batch, and so does every second packet (§6.2): usrsctp grows
        # its cwnd by an MTU or two per SACK, so one SACK per batch held its slow start back; up to a point:
        owed = a._sack_now or gaps_before or bool(a._rx.starts) or not a.config.sackdelay
        if owed or a._data_packets >= a.config.sack_freq or a.state != ESTABLISHED:
            a._need_sack = True
            # a read batch longer than 2 x MAX_BATCH_SACKS packets says we are the bottleneck, not the sender's
            # window: the rest of it is acknowledged by one SACK at its end
            a._sack_urgent = owed or a._batch_sacks < MAX_BATCH_SACKS
            a._t_sack = None
            if a.state == SHUTDOWN_SENT:
                a._ctrl.append(ShutdownChunk(a._rx.cum_tsn).serialize())
                a._t2 = now + a._rtt.rto
        elif a._t_sack is None:
            a._t_sack = now + a.config.sackdelay / 1000.0
        a._sack_now = False

    def build_sack(self) -> bytes:
        a = self.a
        a._need_sack = False
        a._sack_urgent = False
        a._t_sack = None
        a._data_packets = 0
        rx = a._rx
        rwnd = a._recbuf - a._reasm.held
        if rwnd < 0:
            rwnd = 0
        a._rwnd_sent = rwnd
        if not rx.starts and not rx.dups:  # the common case: nothing missing, nothing twice
            return _sack_head(3, 0, 16, rx.cum & MASK, rwnd, 0, 0)
        dups = rx.take_dups()
        gaps = rx.gap_blocks((a._budget - 16) // 4 - len(dups)) if rx.starts else []
        return SackChunk(rx.cum_tsn, rwnd, gaps, dups).serialize()

    # -- PR-SCTP (RFC 3758): the sender's side is ``Retransmission``'s ------------------------------------------

    def on_forward_tsn(self, chunk: ForwardTsnChunk | IForwardTsnChunk, now: float) -> None:
        """§3.6: skip what the peer abandoned, drop partial messages below it, release what waited on it (with
        I-FORWARD-TSN, by the (stream, U, MID) it names: RFC 8260 §2.3.1)."""
        a = self.a
        a.stats["forward_tsns_received"] = a.stats.get("forward_tsns_received", 0) + 1
        a._sack_now = True  # always answered by a SACK at once
        rx = a._rx
        u = rx.unwrap(chunk.new_cum_tsn)
        if u <= rx.cum:
            return
        if u - rx.cum > MAX_AHEAD:
            a.stats["rwnd_drops"] += 1  # as for DATA: further than any honest sender can be
            return
        rx.forward(u)
        if isinstance(chunk, IForwardTsnChunk):
            a._reasm.forward(u, chunk.streams)  # type: ignore[arg-type]  # streams we lack are ignored there
            return
        inbound = a.inbound_streams
        skips: dict[int, int] = {}
        for sid, ssn in chunk.streams:
            if sid < inbound:
                skips[sid] = ssn
        # only what the peer abandoned is dropped: up to its New Cumulative TSN, not to where ranges above it
        # carried our cumulative point (those fragments arrived and may still complete)
        a._reasm.forward(u, skips)  # type: ignore[arg-type]
