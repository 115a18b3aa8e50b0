"""The receive side's dispatcher: a packet's verification tag checked (§8.5), then each of its chunks handed to the
part of the association whose job it is. The bulk of all packets, one DATA chunk, takes a shortcut past the loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mux.sctp import events as ev
from mux.sctp import extensions as ext
from mux.sctp.chunks import (
    AbortChunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    ForwardTsnChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    IDataChunk,
    IForwardTsnChunk,
    InitAckChunk,
    InitChunk,
    ReconfigChunk,
    SackChunk,
    ShutdownAckChunk,
    ShutdownChunk,
    ShutdownCompleteChunk,
    UnknownChunk,
)
from mux.sctp.packet import Packet, chunk_action, serialize_packet
from mux.sctp.params import describe, protocol_violation_cause, unrecognized_chunk_cause
from mux.sctp.paths import INFO as _PATH_HB
from mux.sctp.pmtud import PAD_TYPE, PROBE_INFO
from mux.sctp.state import CLOSED, DATA_FLOWS, SHUTDOWN_ACK_SENT

if TYPE_CHECKING:
    from mux.sctp.association import Addr, Association

#: received HEARTBEAT infos longer than this are not echoed back (an amplification guard)
MAX_HB_INFO = 1024
PATH_HB_INFO = _PATH_HB.size


def receive_packet(a: Association, packet: Packet, addr: Addr, now: float) -> None:
    """One packet for this association: its tag checked, each chunk handed to the part whose job it is."""
    chunks = packet.chunks
    if not chunks or a.state == CLOSED:
        return
    first = chunks[0]
    if packet.vtag != a.local_vtag:
        kind = type(first)
        reflected = (kind is AbortChunk or kind is ShutdownCompleteChunk) and first.t_bit  # type: ignore[union-attr]
        if not (reflected and packet.vtag == a.peer_vtag and a.peer_vtag):
            a.stats["bad_vtag"] += 1
            return
    elif type(first) in (AbortChunk, ShutdownCompleteChunk) and first.t_bit and packet.vtag != a.peer_vtag:  # type: ignore[union-attr]
        # T bit set: the tag must be the peer's own (our copy reflected back)
        a.stats["bad_vtag"] += 1
        return
    a.stats["rx_packets"] += 1
    a._last_activity = now
    if len(chunks) == 1 and type(first) is a._data_kind and a.state in DATA_FLOWS:
        # the bulk of all packets, one DATA chunk: what the loop below does with it, without the loop
        receiver = a._receiver
        gaps_before = receiver.begin(addr)
        receiver.on_data(first, now)
        if a.state != CLOSED:
            receiver.after(now, gaps_before)
        return
    got_data = False
    gaps_before = False
    data_kind = a._data_kind
    receiver = a._receiver
    for chunk in chunks:
        kind = type(chunk)
        if kind is data_kind:  # DATA, or I-DATA once agreed (the receive path takes either)
            if a.state in DATA_FLOWS:
                if not got_data:
                    gaps_before = receiver.begin(addr)
                    got_data = True
                receiver.on_data(chunk, now)  # type: ignore[arg-type]
        elif kind is SackChunk:
            a._on_sack(chunk, now)  # type: ignore[arg-type]
        elif kind is HeartbeatChunk:
            info = chunk.info  # type: ignore[union-attr]
            if len(info) <= MAX_HB_INFO:
                ack = HeartbeatAckChunk(info).serialize()
                if addr[0] == a.peer_addr[0]:
                    a._ctrl.append(ack)
                else:  # §8.3: the ack goes back where the probe came from (another path of the peer's)
                    a._to_paths.append((serialize_packet(a.local_port, a.remote_port, a.peer_vtag, [ack]), addr))
        elif kind is HeartbeatAckChunk:
            if len(chunk.info) == PATH_HB_INFO:  # type: ignore[union-attr]
                a._paths.on_ack(chunk.info, now)  # type: ignore[union-attr]
            elif len(chunk.info) == PROBE_INFO.size:  # type: ignore[union-attr]
                if a._pmtud is not None:
                    a._pmtud.on_ack(chunk.info, now)  # type: ignore[union-attr]
            else:
                a._heartbeat.on_ack(chunk.info, now)  # type: ignore[union-attr]
        elif kind is InitAckChunk:
            a._handshake.on_init_ack(chunk, now)  # type: ignore[arg-type]
        elif kind is CookieAckChunk:
            a._handshake.on_cookie_ack(now)
            data_kind = a._data_kind  # DATA may follow in this packet, as the handshake agreed
        elif kind is ShutdownChunk:
            a._shutdown.on_shutdown(chunk.cum_tsn, now)  # type: ignore[union-attr]
        elif kind is ShutdownAckChunk:
            a._shutdown.on_shutdown_ack(packet.vtag, now)
        elif kind is ShutdownCompleteChunk:
            if a.state == SHUTDOWN_ACK_SENT:
                a._finish(None)
            return
        elif kind is AbortChunk:
            causes = chunk.causes  # type: ignore[union-attr]
            reason = "; ".join(describe(c) for c in causes) or "peer sent ABORT"
            a._finish(ev.AssociationAborted(reason, list(causes)))
            return
        elif kind is ErrorChunk:
            a._on_error(chunk.causes, now)  # type: ignore[union-attr]
        elif kind is CookieEchoChunk or kind is InitChunk:
            pass  # the endpoint handles these before the association sees the packet
        elif (kind is ForwardTsnChunk or kind is IForwardTsnChunk) and a._forward_agreed(kind):
            if a.state in DATA_FLOWS:
                if not got_data:
                    gaps_before = receiver.begin(addr)
                    got_data = True
                receiver.on_forward_tsn(chunk, now)  # type: ignore[arg-type]
        elif kind is ReconfigChunk and a.features & ext.RECONFIG:
            if a.state in DATA_FLOWS or a.state == SHUTDOWN_ACK_SENT:
                a._streams.on_reconfig(chunk, now)  # type: ignore[arg-type]
        elif (kind is DataChunk or kind is ForwardTsnChunk) and a.features & ext.IDATA:
            # RFC 8260 §2.1, §2.3.1: once I-DATA is agreed, DATA and FORWARD-TSN must not be used
            name = "DATA" if kind is DataChunk else "FORWARD-TSN"
            a._abort_with(protocol_violation_cause(name.encode()), f"peer sent {name} on an I-DATA association")
            return
        elif (
            kind is UnknownChunk
            or kind is ForwardTsnChunk
            or kind is ReconfigChunk
            or kind is IDataChunk
            or kind is IForwardTsnChunk
        ):
            # extensions we did not agree on are unrecognized to us
            raw = chunk.serialize()
            ctype = raw[0]
            if ctype == PAD_TYPE:
                continue  # RFC 4820: padding (a peer's PMTU probe), to be skipped
            skip_rest, report = chunk_action(ctype)
            a.stats["unrecognized_chunks"] += 1
            if report:
                a._ctrl.append(ErrorChunk([unrecognized_chunk_cause(raw[: 4 + 256])]).serialize())
            if skip_rest:
                break
        if a.state == CLOSED:
            return
    if got_data:
        receiver.after(now, gaps_before)
