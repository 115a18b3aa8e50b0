"""aioquic's QuicConnection with the events it does not emit and receive credit that follows the app.

aioquic handles CONNECTION_CLOSE, STREAMS_BLOCKED and MAX_STREAMS silently. We hook its frame
handlers (bound at construction, so overriding them works) to queue events of our own alongside
aioquic's, so the adapter can call ``shutdown`` as soon as the peer closes (not after the
draining period), ``peer_needs_streams`` and ``streams_available`` honestly.

Receive credit: aioquic doubles MAX_DATA and MAX_STREAM_DATA as data *arrives*, so a peer that
outruns a slow behaviour is never held back. Here credit moves only with ``consumed``: MAX_DATA is
what the behaviour has consumed plus ``conn_flow_control_window``, MAX_STREAM_DATA what it consumed
of the stream plus ``stream_recv_window_default``, so the data received and not yet consumed
(aioquic's reassembly buffers plus the mailbox) never exceeds the connection window. Bytes that will
never reach the behaviour (the rest of a stream the peer reset) are written off at once, so they do
not eat the connection's credit. aioquic's FLOW_CONTROL_ERROR checks compare against the same
limit values, so they keep working. Stream slots likewise: MAX_STREAMS rises as aioquic discards a
finished peer stream, but only once the behaviour has handled every event delivered so far.

This depends on aioquic internals, pinned in pyproject.toml and covered by tests.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from aioquic import tls
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic import connection as _aioquic_connection
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    END_STATES,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    Limit,
    QuicConnection,
    QuicConnectionAdapter,
    QuicConnectionId,
    QuicConnectionState,
)
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.events import ConnectionTerminated, QuicEvent
from aioquic.quic.packet import QuicErrorCode, QuicFrameType, pull_quic_transport_parameters
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.stream import QuicStream

from mux.logs import peer_log
from mux.quic.fast_send import fast_datagrams
from mux.quic.pmtud import QuicPmtud

log = logging.getLogger("mux.quic")

#: aioquic's initial MAX_STREAMS, which quicer's ``peer_*_stream_count`` options replace
DEFAULT_PEER_STREAMS = 128

# Every QuicConnection builds its frame-handler table from some 30 ``EPOCHS("IH01")`` frozensets, made afresh
# each time: half the cost of constructing one (15 us of 33), and 30 more objects per connection for the collector
# to walk. They are immutable and depend only on the string: one of each is enough, shared.
if not hasattr(_aioquic_connection.EPOCHS, "cache_info"):
    _aioquic_connection.EPOCHS = functools.cache(_aioquic_connection.EPOCHS)


class _PeerCausedLog(QuicConnectionAdapter):
    """aioquic's per-connection logger. What it says above debug (a protocol violation that closes
    the connection, a reset, a close) is the peer's doing, one line per crafted packet if left at
    warning: it goes to mux's rate-limited debug log instead. Debug lines stay aioquic's."""

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            text = str(msg) % args if args else str(msg)  # a bare exception may carry the peer's '%'
            peer_log(log, "quic.protocol", "connection %s: %s", (self.extra or {}).get("id"), text)

    warning = error = info


@dataclass
class PeerClosed(QuicEvent):
    error_code: int
    reason_phrase: str
    is_application: bool


@dataclass
class StreamsBlocked(QuicEvent):
    unidirectional: bool


@dataclass
class MaxStreamsRaised(QuicEvent):
    pass


#: what a connection's spent key pairs become (``MuxQuicConnection._discard_epoch``): never set up, so it holds no
#: keys and refuses every packet as a torn-down pair does; nothing sets it up again, so one serves every connection
_SPENT_KEYS = CryptoPair()


def _always() -> bool:
    return True


def _nothing() -> None:
    pass


def _no_key_update(*args: Any) -> None:
    pass


class _MuxState:
    """What mux keeps per connection beside aioquic's own, in one slotted object (``MuxQuicConnection._mux``).

    aioquic's connection holds 85 attributes in its instance dict once initialised, the most a dict of its size
    (1.6 kB) takes: one attribute more doubles it (3.3 kB). So ours stay out of that dict: in a slot of the connection
    (the object's own memory) holding this.
    """

    __slots__ = (
        "allow_early_data",
        "app_idle",
        "cid_factory",
        "conn_consumed",
        "packets_rescheduled",
        "pmtud",
        "prune_at",
        "request_client_certificate",
        "stream_consumed",
        "streams_held",
    )

    def __init__(self, cid_factory: Callable[[int], bytes] | None) -> None:
        #: makes our connection IDs (``mux.steering``: a worker's carry its index); None: aioquic's random ones
        self.cid_factory = cid_factory
        #: whether the behaviour has handled every event delivered so far (the adapter asks its sink)
        self.app_idle: Callable[[], bool] = _always
        #: some MAX_STREAMS rise waits for ``app_idle``: the adapter has us pumped when it turns true
        self.streams_held = False
        #: bytes the behaviour consumed, plus bytes written off (never to be delivered)
        self.conn_consumed = 0
        #: per stream still receiving: bytes the behaviour consumed (pruned as streams end); made on first use
        self.stream_consumed: dict[int, int] | None = None
        self.prune_at = 64
        #: packets in flight whose frames were scheduled again (declared lost, or resent early by a probe), for
        #: ``stats()``. Counted where recovery tells congestion control, which it does only when there are
        #: some (its ``_on_packets_lost`` runs on every ACK): losses, and what a probe timeout reschedules
        #: (``on_packets_expired`` also hears of packets dropped with their keys, which are not counted)
        self.packets_rescheduled = 0
        #: the path MTU search (``mux.quic.pmtud``), when the driver attached one
        self.pmtud: QuicPmtud | None = None
        #: server side: send a CertificateRequest (verify: optional/required)
        self.request_client_certificate = False
        #: server side: False keeps resumption but issues tickets that do not allow 0-RTT
        self.allow_early_data = True


T = TypeVar("T")


class _InState(Generic[T]):
    """A ``MuxQuicConnection`` attribute that lives in its ``_MuxState`` (same name), out of aioquic's dict."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, conn: MuxQuicConnection, owner: type | None = None) -> T:
        return cast(T, getattr(conn._mux, self.name))

    def __set__(self, conn: MuxQuicConnection, value: T) -> None:
        setattr(conn._mux, self.name, value)


class _PeerStreams(Limit):
    """MAX_STREAMS for one direction of peer streams.

    aioquic raises it as it discards a finished peer stream, which can be long before the behaviour
    has handled that stream's events: a peer opening streams of one empty FIN each (free of flow
    control) would queue an event per stream behind a busy behaviour, without end. So a rise waits
    while the behaviour has events to handle, and is released once it has none (``app_idle``).
    """

    def __init__(self, owner: MuxQuicConnection, frame_type: int, name: str, value: int) -> None:
        self._owner: MuxQuicConnection | None = owner
        self._value = value
        self.held = 0
        super().__init__(frame_type=frame_type, name=name, value=value)

    @property
    def value(self) -> int:
        return self._value

    @value.setter
    def value(self, value: int) -> None:
        owner = self._owner
        if owner is not None and value > self._value and not owner._mux.app_idle():
            self.held += value - self._value
            owner._mux.streams_held = True
        else:
            self._value = value

    def release(self) -> None:
        self._value += self.held
        self.held = 0


class MuxQuicConnection(QuicConnection):
    # a slot beside aioquic's instance dict: see ``_MuxState``
    __slots__ = ("_mux",)

    def __init__(
        self,
        *,
        peer_bidi_stream_count: int = DEFAULT_PEER_STREAMS,
        peer_unidi_stream_count: int = DEFAULT_PEER_STREAMS,
        cid_factory: Callable[[int], bytes] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # every attribute of ours lives in ``_mux``: see ``_MuxState``
        self._mux = state = _MuxState(cid_factory)
        if cid_factory is not None:
            first = self._host_cids[0]
            first.cid = cid_factory(self._configuration.connection_id_length)
            self.host_cid = self._local_initial_source_connection_id = first.cid
        self._logger = _PeerCausedLog(self._logger.logger, self._logger.extra)
        # how many streams of each kind the peer may have open at once (MAX_STREAMS rises only as
        # aioquic discards finished ones, and the behaviour has caught up); set before the transport
        # parameters are written
        bidi, uni = self._local_max_streams_bidi, self._local_max_streams_uni
        self._local_max_streams_bidi = _PeerStreams(self, bidi.frame_type, bidi.name, peer_bidi_stream_count)
        self._local_max_streams_uni = _PeerStreams(self, uni.frame_type, uni.name, peer_unidi_stream_count)
        # receive credit (``consumed``): MAX_DATA rises once consumption passes its value less half the connection
        # window (``config.max_data``), a MAX_STREAM_DATA once the stream's passes its value less half the stream
        # window (``config.max_stream_data``); both windows are read from the configuration, not kept here
        recovery = self._loss
        cc = recovery._cc
        lost, expired, reschedule = cc.on_packets_lost, cc.on_packets_expired, recovery.reschedule_data
        probing = False

        def on_packets_lost(*, now: float, packets: Any) -> None:
            pmtud = state.pmtud
            if pmtud is not None and pmtud.probe_packets:  # a lost PMTU probe is no congestion (RFC 9000 §14.4)
                probes, packets = pmtud.split_lost(list(packets))
                if probes:
                    expired(packets=probes)
                if not packets:
                    return
            state.packets_rescheduled += len(packets)
            lost(now=now, packets=packets)

        def on_packets_expired(*, packets: Any) -> None:
            if probing:  # a list then; a filter when keys are discarded
                state.packets_rescheduled += len(packets)
            expired(packets=packets)

        def reschedule_data(*, now: float, speed_up_handshake: bool = False) -> None:
            nonlocal probing
            probing = True
            try:
                reschedule(now=now, speed_up_handshake=speed_up_handshake)
            finally:
                probing = False

        cc.on_packets_lost = on_packets_lost  # type: ignore[method-assign]
        cc.on_packets_expired = on_packets_expired  # type: ignore[method-assign]
        recovery.reschedule_data = reschedule_data  # type: ignore[method-assign]

    # what others read and set of ``_mux`` (not on the per-packet path): see ``_MuxState`` for each
    pmtud: _InState[QuicPmtud | None] = _InState()
    app_idle: _InState[Callable[[], bool]] = _InState()
    request_client_certificate: _InState[bool] = _InState()
    allow_early_data: _InState[bool] = _InState()
    packets_rescheduled: _InState[int] = _InState()
    streams_held: _InState[bool] = _InState()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        out = fast_datagrams(self, now)
        if out is None:
            out = super().datagrams_to_send(now)
        pmtud = self._mux.pmtud
        if pmtud is not None and self._state not in END_STATES:
            out += pmtud.poll(now)
        return out

    def get_timer(self) -> float | None:
        at = super().get_timer()
        pmtud = self._mux.pmtud
        if pmtud is not None and self._state not in END_STATES:
            t = pmtud.next_timer()
            if t is not None and (at is None or t < at):
                at = t
        return at

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        pmtud = self._mux.pmtud
        if pmtud is not None and not from_session_ticket:
            params = pull_quic_transport_parameters(Buffer(data=data))
            pmtud.peer_parameters(params.max_udp_payload_size)

    def _replenish_connection_ids(self) -> None:
        make = self._mux.cid_factory
        if make is None:
            super()._replenish_connection_ids()
            return
        length = self._configuration.connection_id_length
        while len(self._host_cids) < min(8, self._remote_active_connection_id_limit):
            self._host_cids.append(
                QuicConnectionId(
                    cid=make(length), sequence_number=self._host_cid_seq, stateless_reset_token=os.urandom(16)
                )
            )
            self._host_cid_seq += 1

    def _handle_crypto_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        super()._handle_crypto_frame(context, frame_type, buf)
        if self._handshake_complete and self._crypto_buffers:
            # aioquic gives TLS a 16 KiB output buffer for each of the three epochs and keeps them for the
            # connection's life: 48 KiB of the ~90 an idle one holds. Once TLS is past its handshake it writes to
            # none of them (a server's session ticket went out with the handshake's last flight, just pushed to its
            # crypto stream; post-handshake, a server refuses every message and a client only reads tickets), so
            # an empty table (nothing to push) does from here on.
            self._crypto_buffers = {}

    def _discard_epoch(self, epoch: tls.Epoch) -> None:
        super()._discard_epoch(epoch)
        if epoch is not tls.Epoch.HANDSHAKE or not self._spaces[tls.Epoch.INITIAL].discarded:
            return
        # The handshake is confirmed: aioquic keeps the torn-down key pairs of the Initial (one per supported
        # version) and Handshake epochs, and the 0-RTT one when there was no 0-RTT, each with its two contexts and
        # logging callbacks (some 3 kB a connection). A packet of those epochs still meets a pair without keys.
        cryptos = self._cryptos
        for spent in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE, tls.Epoch.ZERO_RTT):
            pair = cryptos.get(spent)
            if pair is not None and not pair.recv.is_valid() and not pair.send.is_valid():
                cryptos[spent] = _SPENT_KEYS
        initial = self._cryptos_initial
        if not any(pair.recv.is_valid() for pair in initial.values()):
            for version in initial:
                initial[version] = _SPENT_KEYS

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if self.request_client_certificate:
            self.tls._request_client_certificate = True
        if not self.allow_early_data and not self._is_client:
            self.tls._max_early_data = None

    def release(self) -> None:
        """The connection has ended: drop what only a live one uses, for the collector's sake.

        aioquic's connection is a web of reference cycles through itself (its frame-handler table of bound
        methods, the TLS and packet-protection callbacks, the recovery's probe callback, our hooks above), so a
        finished one is freed only by a collection of the oldest generation, which walks all of it. Once
        terminated it neither reads nor writes packets (aioquic returns at once in END_STATES), so those parts
        go; what ``stats()`` reads stays.
        """
        if self._state is not QuicConnectionState.TERMINATED:
            return
        setattr(self, "_QuicConnection__frame_handlers", {})  # noqa: B010 - aioquic's name-mangled table
        tls = self.tls
        tls.alpn_cb = tls.get_session_ticket_cb = tls.new_session_ticket_cb = None
        tls.update_traffic_key_cb = _no_key_update
        self._cryptos = {}
        self._cryptos_initial = {}
        recovery = self._loss
        recovery._send_probe = _nothing
        cc = recovery._cc
        for hooked, name in ((cc, "on_packets_lost"), (cc, "on_packets_expired"), (recovery, "reschedule_data")):
            hooked.__dict__.pop(name, None)  # back to the class's own method
        cast(_PeerStreams, self._local_max_streams_bidi)._owner = None
        cast(_PeerStreams, self._local_max_streams_uni)._owner = None
        self._mux.app_idle = _always

    # -- receive credit -------------------------------------------------------------------------

    def consumed(self, stream_id: int, nbytes: int) -> bool:
        """The behaviour is done with ``nbytes`` of ``stream_id``; True when new credit is due.

        Called once per delivered event: O(1), and the limits only move (no frame is built here);
        the caller has the connection pumped when this returns True.
        """
        due = False
        state = self._mux
        consumed = state.conn_consumed + nbytes
        state.conn_consumed = consumed
        config = self._configuration
        if consumed > self._local_max_data.value - (config.max_data >> 1):
            self._raise_max_data()
            due = True
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.receiver.is_finished:
            by_stream = state.stream_consumed
            if by_stream is None:
                by_stream = state.stream_consumed = {}
            done = by_stream.get(stream_id)
            if done is None:
                done = 0
                if len(by_stream) >= state.prune_at:
                    self._prune()
            done += nbytes
            by_stream[stream_id] = done
            window = config.max_stream_data
            if done > stream.max_stream_data_local - (window >> 1):
                stream.max_stream_data_local = done + window
                due = True
        return due

    def caught_up(self) -> bool:
        """The behaviour has handled every event delivered so far: the held MAX_STREAMS rises go
        out with the next packet. True when there were some (the caller has us pumped)."""
        state = self._mux
        if not state.streams_held:
            return False
        state.streams_held = False
        cast(_PeerStreams, self._local_max_streams_bidi).release()
        cast(_PeerStreams, self._local_max_streams_uni).release()
        return True

    @property
    def unconsumed(self) -> int:
        """Stream bytes the peer has used credit for that are not consumed (nor written off) yet:
        what sits in the reassembly buffers and the mailbox, at most ``conn_flow_control_window``."""
        return self._local_max_data.used - self._mux.conn_consumed

    def _raise_max_data(self) -> None:
        """MAX_DATA to what was consumed plus the connection window: raised again once less than half of it is left
        (``consumed``, ``_write_off``)."""
        self._local_max_data.value = self._mux.conn_consumed + self._configuration.max_data

    def _write_off(self, nbytes: int) -> None:
        """Connection credit for bytes the peer sent that will never be consumed."""
        state = self._mux
        state.conn_consumed += nbytes
        if state.conn_consumed > self._local_max_data.value - (self._configuration.max_data >> 1):
            self._raise_max_data()

    def _prune(self) -> None:
        """Forget streams that stopped receiving: amortised O(1) per stream over its life."""
        state = self._mux
        streams, by_stream = self._streams, state.stream_consumed
        if by_stream is None:
            return
        for sid in [sid for sid in by_stream if sid not in streams or streams[sid].receiver.is_finished]:
            del by_stream[sid]  # in place: ``consumed`` holds the dict across this call
        state.prune_at = 2 * len(by_stream) + 64

    def _handle_reset_stream_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        start = buf.tell()
        stream_id = buf.pull_uint_var()
        buf.seek(start)
        stream = self._streams.get(stream_id)
        was_finished = stream is not None and stream.receiver.is_finished
        super()._handle_reset_stream_frame(context, frame_type, buf)
        stream = self._streams.get(stream_id)
        if stream is None or was_finished or not stream.receiver.is_finished:
            return
        # The reset ended the stream: what was not delivered never will be. Its final size counts
        # against the peer's credit, so write it off, and drop what waited behind a gap.
        receiver = stream.receiver
        self._write_off(receiver.highest_offset - receiver.starting_offset())
        receiver._buffer = bytearray()
        if self._mux.stream_consumed is not None:
            self._mux.stream_consumed.pop(stream_id, None)

    def limits_settled(self) -> bool:
        """No MAX_STREAMS for ``_write_connection_limits`` to write now (``mux.quic.fast_send`` asks)."""
        state = self._mux
        if state.streams_held and state.app_idle():
            return False
        for limit in (self._local_max_streams_bidi, self._local_max_streams_uni):
            sent, value = limit.sent, cast(_PeerStreams, limit)._value
            if sent != value and sent - limit.used < value - sent:
                return False
        return True

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: Any) -> None:
        """MAX_DATA as ``consumed`` set it (never raised on arrival), and MAX_STREAMS in batches once
        the behaviour has caught up."""
        limit = self._local_max_data
        if limit.sent != limit.value:
            self._write_limit(builder, limit)
        state = self._mux
        if state.streams_held and state.app_idle():
            self.caught_up()
        for limit in (self._local_max_streams_bidi, self._local_max_streams_uni):
            # announce more streams only once the peer has fewer left than the raise would give
            if limit.sent != limit.value and limit.sent - limit.used < limit.value - limit.sent:
                self._write_limit(builder, limit)

    def _write_limit(self, builder: QuicPacketBuilder, limit: Limit) -> None:
        buf = builder.start_frame(
            limit.frame_type,
            capacity=CONNECTION_LIMIT_FRAME_CAPACITY,
            handler=self._on_connection_limit_delivery,  # a lost frame resets ``sent``: resent
            handler_args=(limit,),
        )
        buf.push_uint_var(limit.value)
        limit.sent = limit.value
        frames = builder.quic_logger_frames
        if self._quic_logger is not None and frames is not None:
            frame = self._quic_logger.encode_connection_limit_frame(frame_type=limit.frame_type, maximum=limit.value)
            frames.append(frame)

    def _write_stream_limits(self, builder: QuicPacketBuilder, space: Any, stream: QuicStream) -> None:
        """MAX_STREAM_DATA as ``consumed`` set it; none once the stream has stopped receiving."""
        value = stream.max_stream_data_local
        if stream.max_stream_data_local_sent == value or stream.receiver.is_finished:
            return
        stream_id = stream.stream_id
        assert stream_id is not None
        buf = builder.start_frame(
            QuicFrameType.MAX_STREAM_DATA,
            capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
            handler=self._on_max_stream_data_delivery,
            handler_args=(stream,),
        )
        buf.push_uint_var(stream_id)
        buf.push_uint_var(value)
        stream.max_stream_data_local_sent = value
        frames = builder.quic_logger_frames
        if self._quic_logger is not None and frames is not None:
            frames.append(self._quic_logger.encode_max_stream_data_frame(maximum=value, stream_id=stream_id))

    # -- admission -------------------------------------------------------------------------------

    @property
    def address_validated(self) -> bool:
        """The peer has proven its address (a Handshake packet from it, RFC 9000 §8.1)."""
        return any(path.is_validated for path in self._network_paths)

    def abandon(self, reason: str) -> None:
        """End now without a word to the peer: one that never proved its address gets no reply."""
        if self._state in END_STATES:
            return
        if self._close_event is None:
            self._close_event = ConnectionTerminated(
                error_code=QuicErrorCode.NO_ERROR, frame_type=None, reason_phrase=reason
            )
        self._close_end()

    # -- events aioquic does not emit ----------------------------------------------------------

    def _handle_connection_close_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        first = self._close_event is None
        super()._handle_connection_close_frame(context, frame_type, buf)
        event = self._close_event
        if first and event is not None:
            self._events.append(
                PeerClosed(
                    error_code=event.error_code,
                    reason_phrase=event.reason_phrase,
                    is_application=frame_type == 0x1D,
                )
            )

    def _handle_streams_blocked_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        super()._handle_streams_blocked_frame(context, frame_type, buf)
        self._events.append(StreamsBlocked(unidirectional=frame_type == 0x17))

    def _handle_max_streams_bidi_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        super()._handle_max_streams_bidi_frame(context, frame_type, buf)
        self._events.append(MaxStreamsRaised())

    def _handle_max_streams_uni_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        super()._handle_max_streams_uni_frame(context, frame_type, buf)
        self._events.append(MaxStreamsRaised())

    def streams_available(self) -> tuple[int, int]:
        """How many more streams of each kind the peer's limits let us open now."""
        bidi = self._remote_max_streams_bidi - (self._local_next_stream_id_bidi >> 2)
        uni = self._remote_max_streams_uni - (self._local_next_stream_id_uni >> 2)
        return max(bidi, 0), max(uni, 0)

    def stream_send_buffered(self, stream_id: int) -> int:
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    def next_event(self) -> QuicEvent | None:
        # aioquic's raises and catches IndexError when empty, which is most calls on our hot path
        events = self._events
        return events.popleft() if events else None
