"""The common 1-RTT packet built directly: an optional ACK and the streams' new data, nothing else pending.

aioquic's ``datagrams_to_send`` is general: a fresh ``QuicPacketBuilder``, a loop that checks every kind of frame
for every packet, and one more pass that starts a packet only to find it empty. For an echo's reply that is ~31 us
of a ~55 us server turn; this does it in ~15 (``bench/quic_server_path.py``). Most packets of an established
connection carry only stream data and maybe an ACK: this writes those itself (the same bytes aioquic would, through
its own ``push_ack_frame``, ``QuicStream.sender.get_frame`` and ``CryptoPair.encrypt_packet``) and registers them
with aioquic's loss recovery as its builder does. Anything else (a handshake not confirmed, a close, a probe or
PING, a DATAGRAM, new connection IDs, credit to announce, a reset, a stream to discard, pacing, a full congestion
window, a second path, qlog) leaves the whole call to aioquic; so does the data left after the one packet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aioquic import tls
from aioquic.buffer import Buffer, size_uint_var  # type: ignore[attr-defined]
from aioquic.quic.connection import ACK_FRAME_CAPACITY, QuicConnection, QuicConnectionState
from aioquic.quic.packet import PACKET_FIXED_BIT, QuicFrameType, QuicPacketType, push_ack_frame
from aioquic.quic.packet_builder import QuicSentPacket

if TYPE_CHECKING:
    from mux.quic.core import MuxQuicConnection

_ONE_RTT = tls.Epoch.ONE_RTT
_CONNECTED = QuicConnectionState.CONNECTED
_PING = QuicFrameType.PING
_STREAM_LEN = QuicFrameType.STREAM_BASE | 2  # STREAM with a length field
#: the packet number is sent in 2 bytes (aioquic's PACKET_NUMBER_SEND_SIZE); header protection samples 4 bytes
#: from where a 4-byte one would end, so the payload needs at least 2 bytes
_MIN_PAYLOAD = 2
_AEAD_TAG = 16


def fast_datagrams(conn: MuxQuicConnection, now: float) -> list[tuple[bytes, Any]] | None:
    """One packet of ACK and stream data, registered, when that is all there is to send; else None (untouched)."""
    c: Any = conn  # aioquic's private attributes, read as its own ``_write_application`` does
    if (
        c._state is not _CONNECTED
        or not c._handshake_confirmed
        or c._close_pending
        or c._probe_pending
        or c._ping_pending
        or c._datagrams_pending
        or c._handshake_done_pending
        or c._streams_blocked_pending
        or c._retire_connection_ids
        or c._quic_logger is not None
        or len(c._network_paths) != 1
        or (c._is_client and c._remote_preferred_address is not None)  # aioquic probes it after its packets
    ):
        return None
    path = c._network_paths[0]
    if not path.is_validated or path.remote_challenges:
        return None
    for cid in c._host_cids:  # NEW_CONNECTION_ID to send (or to send again: one was lost)
        if not cid.was_sent:
            return None
    # connection-level credit to announce (MAX_DATA, MAX_STREAMS, as ``_write_connection_limits`` would)
    if c._local_max_data.sent != c._local_max_data.value or not conn.limits_settled():
        return None
    crypto = c._cryptos[_ONE_RTT]
    if not crypto.send.is_valid() or not c._crypto_streams[_ONE_RTT].sender.buffer_is_empty:
        return None
    streams = c._streams
    for stream in streams.values():  # MAX_STREAM_DATA due (``_write_stream_limits``)
        if stream.max_stream_data_local_sent != stream.max_stream_data_local and not stream.receiver.is_finished:
            return None
    queue = c._streams_queue
    ready = []
    for stream in queue:
        sender = stream.sender
        if stream.is_finished or stream.receiver.stop_pending or sender.reset_pending:
            return None  # discarding, STOP_SENDING, RESET_STREAM: aioquic's
        if not stream.is_blocked and not sender.buffer_is_empty:
            ready.append(stream)
    if not ready:
        return None
    space = c._spaces[_ONE_RTT]
    ack_at = space.ack_at
    ack_due = ack_at is not None and ack_at <= now
    loss = c._loss
    if (ack_at is None or ack_at >= now) and loss._pacer.next_send_time(now=now) is not None:
        return None  # paced: aioquic records until when (``_pacing_at``)
    size = c._max_datagram_size
    peer_cid = c._peer_cid.cid
    header_size = 3 + len(peer_cid)
    room = min(size, loss.congestion_window - loss.bytes_in_flight) - _AEAD_TAG
    if room - header_size < 64:
        return None  # the window is (nearly) full: aioquic's builder decides what fits
    c._pacing_at = None

    packet_number = c._packet_number
    packet = QuicSentPacket(
        epoch=_ONE_RTT,
        in_flight=True,
        is_ack_eliciting=True,
        is_crypto_packet=False,
        packet_number=packet_number,
        packet_type=QuicPacketType.ONE_RTT,
        sent_time=now,
    )
    handlers = packet.delivery_handlers
    buf = Buffer(capacity=size)
    buf.seek(header_size)
    if ack_due:
        if room - header_size < ACK_FRAME_CAPACITY + 64:
            return None
        delay = int((now - space.largest_received_time) * 1000000) >> c._local_ack_delay_exponent
        buf.push_uint_var(QuicFrameType.ACK)
        handlers.append((c._on_ack_delivery, (space, space.largest_received_packet)))
        ranges = push_ack_frame(buf, space.ack_queue, delay, size - _AEAD_TAG - buf.tell())
        space.ack_at = None
        if ranges > 1 and packet_number % 8 == 0:  # ACK-of-ACK trigger, as aioquic
            buf.push_uint_var(_PING)
            handlers.append((c._on_ping_delivery, ((),)))
    sent = []
    credit = c._remote_max_data - c._remote_max_data_used
    for stream in ready:
        sender = stream.sender
        next_offset = sender.next_offset
        overhead = 3 + size_uint_var(stream.stream_id) + (size_uint_var(next_offset) if next_offset else 0)
        before = sender.highest_offset
        frame = sender.get_frame(room - buf.tell() - overhead, min(before + credit, stream.max_stream_data_remote))
        if frame is None:
            continue
        data = frame.data
        offset = frame.offset
        frame_type = _STREAM_LEN
        if offset:
            frame_type |= 4
        if frame.fin:
            frame_type |= 1
        buf.push_uint_var(frame_type)
        handlers.append((sender.on_data_delivery, (offset, offset + len(data), frame.fin)))
        buf.push_uint_var(stream.stream_id)
        if offset:
            buf.push_uint_var(offset)
        buf.push_uint16(len(data) | 0x4000)
        buf.push_bytes(data)
        used = sender.highest_offset - before
        c._remote_max_data_used += used
        credit -= used
        sent.append(stream)
    if not sent:  # flow control let nothing go: the ACK is not sent after all, and aioquic decides
        space.ack_at = ack_at
        return None
    payload_end = buf.tell()
    if payload_end - header_size < _MIN_PAYLOAD:
        buf.push_bytes(bytes(_MIN_PAYLOAD - (payload_end - header_size)))
        payload_end = buf.tell()
    buf.seek(0)
    buf.push_uint8(PACKET_FIXED_BIT | (c._spin_bit << 5) | (crypto.key_phase << 2) | 1)
    buf.push_bytes(peer_cid)
    buf.push_uint16(packet_number & 0xFFFF)
    plain = buf.data_slice(0, payload_end)
    datagram = crypto.encrypt_packet(plain[:header_size], plain[header_size:payload_end], packet_number)
    packet.sent_bytes = len(datagram)

    # register, as ``_write_application`` and ``_flush_builder`` do
    c._packet_number = packet_number + 1
    loss._pacer.update_after_send(now=now)
    loss.on_packet_sent(packet=packet, space=space)
    if not c._ack_eliciting_sent_since_receipt:
        c._close_at = now + c._idle_timeout()
        c._ack_eliciting_sent_since_receipt = True
    path.bytes_sent += len(datagram)
    if len(queue) > 1:  # served streams go to the back, as aioquic's service order does
        served = set(sent)
        c._streams_queue = [s for s in queue if s not in served] + sent
    out = [(datagram, path.addr)]
    more = False
    for stream in sent:
        sender = stream.sender
        if len(sender._pending) or sender._pending_eof:  # (a RangeSet has no truth value)
            more = True
        else:
            sender.buffer_is_empty = True  # what aioquic's next ``get_frame`` would find (and say) for it
    if more:  # more than a packet's worth: aioquic's loop for the rest
        out += QuicConnection.datagrams_to_send(conn, now)
    return out
