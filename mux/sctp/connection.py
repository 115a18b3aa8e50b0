"""One SCTP association as mux sees it: core events in, neutral events out, commands down.

Mapping (see README): ESTABLISHED -> connected; each complete user message -> stream data with its
``ppid`` and ``unordered`` flag in props; peer SHUTDOWN -> shutdown(0); a peer ABORT carrying mux's
application close -> shutdown(code); any other ABORT, retransmission failure or autoclose ->
transport_shutdown; CLOSED -> closed.

Streams (RFC 6525 RE-CONFIG, when both ends offer it). A stream id is a pair of directions, each ended by
its sender's stream reset. ``send(fin=True)`` sends the message, then resets our outgoing stream, as WebRTC
closes a data channel; the peer sees ``fin`` once everything before it was delivered. ``reset_stream`` drops
the stream's unsent messages and resets it; ``stop_sending`` asks the peer to reset its direction (an
Incoming SSN Reset Request), which the peer's core does at once, dropping what it had not sent yet: the
peer's behaviour gets ``peer_receive_aborted``. ``open_stream`` hands out the lowest id free both ways, so
ids come back once both directions were reset, and a peer's first message on an id starts a new stream.

SCTP's reset carries no code and looks the same whether it ends a stream or aborts it. Between two mux
peers (each sends an Adaptation Layer Indication, ``mux.sctp.extensions.MUX``), small marker messages with
reserved PPIDs carry what the wire cannot, and are never delivered as data: ``RESET_PPID`` (ordered, last
on the stream) turns the reset that follows into ``peer_send_aborted(code)``; ``STOP_PPID`` (unordered, on a
lane of its own, acknowledged before the Incoming SSN Reset Request leaves) gives ``peer_receive_aborted``
its code, and the peer's reset carries it back as QUIC's does; ``UNI_PPID`` (the first message of a stream)
makes it unidirectional. Other stacks never get a marker: a reset is the end of the stream for them, and
codes read 0. With a peer that is not mux, a unidirectional stream is opened with an Incoming SSN Reset
Request right away, so the peer resets (closes) its own direction; data it sends there anyway is dropped.

Closing with a code. SCTP's graceful SHUTDOWN carries nothing, so ``close(0, ...)`` (``Stop()``) is a
SHUTDOWN and any other code an ABORT whose User-Initiated Abort cause (RFC 9260 §3.3.10.12) reads
``application close <code>: <reason>``: a mux peer turns it back into ``shutdown(code)`` and ``closed``
props with that code and reason, as QUIC's application CONNECTION_CLOSE gives, and any other stack shows
it as the abort's text. Like QUIC's CONNECTION_CLOSE it is immediate: data still queued is dropped. A
refusal reads ``refused: <reason>`` and an abort its bare reason.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
from collections.abc import Callable, Mapping
from typing import Any

from mux import transport as t
from mux.logs import peer_log
from mux.sctp import events as se
from mux.sctp import extensions as ext
from mux.sctp.association import Association
from mux.sctp.params import CAUSE_NAMES, USER_INITIATED_ABORT, ErrorCause, describe
from mux.sctp.state import CLOSED, COOKIE_ECHOED, COOKIE_WAIT, SHUTDOWN_ACK_SENT, SHUTDOWN_RECEIVED, SctpError
from mux.sctp.unwritten import Unwritten
from mux.udp import Address, Driver, Pumped

log = logging.getLogger("mux.sctp")

_PEER_CLOSING = (SHUTDOWN_RECEIVED, SHUTDOWN_ACK_SENT)
#: the PPID that marks a datagram (``conn.send_datagram``): an unordered message on stream 0, never
#: retransmitted. 0x6D757864 is "muxd"; a peer's own unordered message with this PPID reads as a datagram too.
DGRAM_PPID = 0x6D757864
#: datagrams queued for sending at most, as over QUIC: beyond it new ones are dropped and counted
MAX_PENDING_DATAGRAMS = 256
#: marker messages between mux peers (see the module docstring): "muxr", "muxs", "muxu"
RESET_PPID = 0x6D757872
STOP_PPID = 0x6D757873
UNI_PPID = 0x6D757875
#: every PPID mux reserves shares these three bytes ("mux"): one shift tells the hot path whether to look closer
_MUX_PPIDS = 0x6D7578
_CODE = struct.Struct("!Q")

#: the Upper Layer Abort Reason mux writes for an application close with a code (see the module docstring)
APP_CLOSE = "application close {code}: {reason}"
_APP_CLOSE = re.compile(r"application close (\d{1,19}): (.*)", re.DOTALL)
#: ... and for a refusal by ``new_conn``
REFUSED = "refused: "
#: the largest application code: QUIC's (a varint, RFC 9000 §16), so a code means the same on both
MAX_APP_CODE = (1 << 62) - 1
#: association states in ``stats()``'s transport-neutral vocabulary
_STATES = {
    "closed": "closed",
    "cookie_wait": "handshaking",
    "cookie_echoed": "handshaking",
    "established": "connected",
    "shutdown_pending": "closing",
    "shutdown_sent": "closing",
    "shutdown_received": "closing",
    "shutdown_ack_sent": "closing",
}
#: association abort reasons that mean the peer stopped answering
_LOST = ("no answer to ", "communication lost", "shutdown guard timer expired")


#: what ``_local_uni`` is until a one-way stream is opened: shared, and never added to
_NO_STREAMS: set[int] = set()
#: what the marker codes and ``_local_end`` are until there is one: shared, read and popped but never written
_NO_CODES: dict[int, int] = Unwritten()


class SctpTransportConnection(Pumped):
    """Implements ``mux.transport.TransportConnection`` for our SCTP association."""

    transport_name = "sctp"
    alpn = None

    # slotted (``Pumped``'s fields too): a server may hold tens of thousands of idle associations
    __slots__ = (
        "_closing_by_us",
        "_counters",
        "_dgram_dropped",
        "_dirty",
        "_end",
        "_in_epoch",
        "_local_end",
        "_local_uni",
        "_on_finished",
        "_peer_shutdown",
        "_reset_codes",
        "_shutdown_asked",
        "_slot",
        "_stop_codes",
        "_timer",
        "_timer_at",
        "assoc",
        "core",
        "driver",
        "ended_by_our_shutdown",
        "finished",
        "high_water",
        "sink",
    )

    def __init__(
        self,
        assoc: Association,
        driver: Driver,
        *,
        high_water: int,
        on_finished: Callable[[SctpTransportConnection], None] | None = None,
        counters: dict[str, int] | None = None,
    ) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._slot: int | None = None
        self._dirty = False
        self.core = assoc
        self.assoc = assoc
        self.driver = driver
        self.high_water = high_water
        self.sink: t.ConnectionSink | None = None
        self._on_finished = on_finished
        #: the listener's (endpoint's) counters, where what peers cause is counted instead of logged
        self._counters = counters if counters is not None else {}
        self._dgram_dropped = 0
        #: the peer's current use of a stream id we know of: unidirectional or not (its first message starts it,
        #: its reset ends it; a stream we open expects the peer's answer on it)
        self._in_epoch: dict[int, bool] = {}
        #: our unidirectional streams: the peer's direction of these ids is not ours to deliver
        self._local_uni: set[int] = _NO_STREAMS  # a set of its own from the first (``open_stream``)
        #: codes the peer's markers carried: of its coming reset (``RESET_PPID``) and of its stop (``STOP_PPID``)
        self._reset_codes: dict[int, int] = _NO_CODES  # each its own dict from its first code (``_marker``)
        self._stop_codes: dict[int, int] = _NO_CODES
        self._closing_by_us = False
        self._peer_shutdown = False
        #: ``close(0)`` asked the association, which was up, for a SHUTDOWN
        self._shutdown_asked = False
        #: set with ``finished``: the association ended by a SHUTDOWN of ours (``close(0)`` or autoclose), not an
        #: ABORT, so our SHUTDOWN-COMPLETE was most likely the last packet, and a peer that lost it sends its
        #: SHUTDOWN-ACK again (``mux.sctp.client`` keeps a client's socket open a while to answer it)
        self.ended_by_our_shutdown = False
        #: how we closed: the application's code and reason, and ``error`` for an abort or a refusal
        self._local_end: dict[str, Any] = _NO_CODES  # type: ignore[assignment]  # replaced whole, never written
        #: how the association ended when an ABORT or a failure said so (``closed``'s props)
        self._end: dict[str, Any] | None = None
        self.finished = False

    # -- TransportConnection --------------------------------------------------------------------

    @property
    def local_address(self) -> Address:
        return self.driver.local_address

    @property
    def peer_address(self) -> Address:
        return tuple(self.assoc.peer_addr)

    def stream_is_unidirectional(self, stream_id: int) -> bool:
        return self._in_epoch.get(stream_id, False) or stream_id in self._local_uni

    @property
    def _mux_peer(self) -> bool:
        return bool(self.assoc.features & ext.MUX)

    @property
    def _reconfig(self) -> bool:
        return bool(self.assoc.features & ext.RECONFIG)

    def open_stream(self, unidirectional: bool = False) -> int:
        assoc = self.assoc
        if unidirectional and not self._reconfig:
            raise t.TransportError("one-way SCTP streams need RE-CONFIG (RFC 6525), which the peer did not offer")
        first = (UNI_PPID, b"\x00") if unidirectional and self._mux_peer else None
        try:
            stream_id = assoc.open_stream(expect_peer=not unidirectional, first=first)
        except SctpError as exc:
            if assoc.state == CLOSED:
                raise t.ConnectionGone(f"sctp association with {self.peer_address} is closed") from None
            more = min(assoc.can_add_streams(), max(assoc.outbound_streams, 1))
            if more and not assoc.stats.get("add_streams_refused"):  # once refused, the peer's mind is made up
                assoc.add_streams(outgoing=more)  # RFC 6525: streams_available fires when the peer adds them
                self.driver.touch(self)
                raise t.TransportError(f"{exc}; asked the peer for {more} more (streams_available follows)") from None
            raise t.TransportError(str(exc)) from None
        if unidirectional:
            if self._local_uni is _NO_STREAMS:
                self._local_uni = set()
            self._local_uni.add(stream_id)
            if first is None and stream_id < assoc.inbound_streams:
                assoc.request_reset(stream_id)  # not a mux peer: it must not send here, so it ends its direction
        else:
            self._in_epoch[stream_id] = False
        self.driver.touch(self)
        return stream_id

    def send(self, stream_id: int, data: bytes, fin: bool, props: Mapping[str, Any] | None) -> int:
        if not data:
            if fin:
                self._end_stream(stream_id)
            return self.assoc.buffered_amount()
        try:
            if props:
                # SCTP's per-message options: ppid, unordered, and the PR-SCTP policy (reliability, param)
                unordered = props.get("unordered")
                reliability = props.get("reliability")
                param = props.get("param")
                buffered = self.assoc.send(
                    stream_id,
                    data,
                    ppid=int(props.get("ppid", 0)),
                    unordered=None if unordered is None else bool(unordered),
                    reliability=None if reliability is None else str(reliability),
                    param=None if param is None else int(param),
                    now=self.driver.loop.time(),
                )
            else:
                buffered = self.assoc.send(stream_id, data, now=self.driver.loop.time())
        except SctpError as exc:  # the core's own errors: invalid stream, closed, buffer full
            state = self.assoc.state
            if state == CLOSED:
                raise t.ConnectionGone(f"sctp association with {self.peer_address} is closed") from None
            if state in _PEER_CLOSING:
                # RFC 9260 §9.2: after the peer's SHUTDOWN we accept no new data from our user
                raise t.ConnectionGone(f"sctp association with {self.peer_address} is shutting down") from None
            raise t.TransportError(f"sctp send on stream {stream_id}: {exc}") from None
        if fin:
            self._end_stream(stream_id)
        self.driver.touch(self)
        return buffered

    def _end_stream(self, stream_id: int) -> None:
        """``fin``: reset our outgoing stream once what was sent on it has left (WebRTC's data channel close).
        Without RE-CONFIG the peer cannot be told: our side ends locally only."""
        if not self._reconfig:
            return
        try:
            self.assoc.close_stream(stream_id)
        except SctpError as exc:
            self._command_failed("fin", stream_id, exc)
        self.driver.touch(self)

    def _command_failed(self, what: str, stream_id: int, exc: SctpError) -> None:
        state = self.assoc.state
        if state == CLOSED:
            raise t.ConnectionGone(f"sctp association with {self.peer_address} is closed") from None
        if state in _PEER_CLOSING:
            raise t.ConnectionGone(f"sctp association with {self.peer_address} is shutting down") from None
        raise t.TransportError(f"sctp {what} on stream {stream_id}: {exc}") from None

    def send_buffered(self, stream_id: int) -> int:
        return self.assoc.buffered_amount()

    def consumed(self, stream_id: int, nbytes: int) -> None:
        if self.assoc.consumed(nbytes):
            self.driver.touch(self)  # the window reopened: the update leaves now

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Drop the stream's unsent messages and reset it; a mux peer gets ``error_code`` in a marker first."""
        if not self._reconfig:
            raise t.TransportError("SCTP stream reset needs RE-CONFIG (RFC 6525), which the peer did not offer")
        final = (RESET_PPID, _code_bytes(error_code)) if self._mux_peer else None
        try:
            self.assoc.close_stream(stream_id, abort=True, final=final)
        except SctpError as exc:
            self._command_failed("reset", stream_id, exc)
        self.driver.touch(self)

    def stop_sending(self, stream_id: int, error_code: int) -> None:
        """An Incoming SSN Reset Request: the peer resets its direction; a mux peer gets ``error_code`` first."""
        if not self._reconfig:
            raise t.TransportError("SCTP stop-sending needs RE-CONFIG (RFC 6525), which the peer did not offer")
        notice = (STOP_PPID, _code_bytes(error_code)) if self._mux_peer else None
        try:
            self.assoc.request_reset(stream_id, notice=notice)
        except SctpError as exc:
            self._command_failed("stop_sending", stream_id, exc)
        self.driver.touch(self)

    def set_priority(self, stream_id: int, priority: int) -> None:
        """quicer's stream ``priority`` (``SctpOptions.scheduler`` says what it does: ``prio`` and ``wfq`` use it)."""
        try:
            self.assoc.set_priority(stream_id, priority)
        except SctpError as exc:
            raise t.TransportError(f"sctp priority on stream {stream_id}: {exc}") from None

    def send_datagram(self, data: bytes) -> None:
        """An unordered message on stream 0 with PPID ``DGRAM_PPID``, never retransmitted (PR-SCTP ``rexmit`` 0)."""
        assoc = self.assoc
        if not assoc.features & ext.PRSCTP:
            raise t.TransportError("the peer does not accept datagrams (PR-SCTP, RFC 3758, not negotiated)")
        room = assoc.fragmentation_point
        if len(data) > room:
            raise t.TransportError(f"datagram of {len(data)} bytes does not fit in a packet (at most {room})")
        if not data:
            raise t.TransportError("SCTP cannot send an empty datagram")
        if assoc.queued_datagrams() >= MAX_PENDING_DATAGRAMS:
            # unreliable by definition: while the path cannot carry them, new ones are dropped, not queued
            self._dgram_dropped += 1
            self._counters["dgram_send_dropped"] = self._counters.get("dgram_send_dropped", 0) + 1
            return
        try:
            assoc.send_datagram(data, ppid=DGRAM_PPID, now=self.driver.loop.time())
        except SctpError as exc:
            if assoc.state in _PEER_CLOSING or assoc.state == CLOSED:
                raise t.ConnectionGone(f"sctp association with {self.peer_address} is closing") from None
            self._dgram_dropped += 1  # the send queue is full: a datagram is dropped, not waited for
            peer_log(log, "sctp.dgram", "datagram dropped: %s", exc)
            return
        self.driver.touch(self)

    def proceed(self) -> None:
        """The application accepted the peer (new_conn returned): answer its COOKIE-ECHO."""
        self.assoc.proceed(self.driver.loop.time())
        self.driver.touch(self)

    def close(self, error_code: int, reason: str) -> None:
        """Code 0: a graceful SHUTDOWN, outstanding data delivered first (the peer sees code 0, no reason).
        Any other code: an ABORT carrying it (see the module docstring)."""
        self._local_end = {"error_code": error_code, "reason": reason}
        self._closing_by_us = self._closing_by_us or not self._peer_shutdown
        if error_code or self.assoc.on_hold:  # on hold: never up for the peer, nothing to shut down gracefully
            self.assoc.abort(APP_CLOSE.format(code=error_code, reason=reason))
        else:
            self._shutdown_asked = self._shutdown_asked or self.assoc.state not in (CLOSED, COOKIE_WAIT, COOKIE_ECHOED)
            self.assoc.shutdown(self.driver.loop.time())
        self.driver.touch(self)

    def abort(self, reason: str) -> None:
        self._abort("aborted", reason, reason)

    def refuse(self, reason: str = "refused") -> None:
        self._abort("refused", reason, REFUSED + reason)

    def _abort(self, error: str, reason: str, text: str) -> None:
        self._local_end = {"error_code": USER_INITIATED_ABORT, "reason": reason, "error": error}
        self._closing_by_us = self._closing_by_us or not self._peer_shutdown
        self.assoc.abort(text)
        self.driver.touch(self)

    def flush(self) -> None:
        self.driver.flush_one(self)

    def stats(self) -> dict[str, Any]:
        """``mux.transport.COMMON_STATS``, from the association's status (gen_sctp's #sctp_status{} and its
        counters, all under ``sctp``). SCTP retransmits chunks, not packets: ``packets_retransmitted``
        counts DATA chunks sent again. ``recv_unconsumed`` is what the receive window is charged for data
        not yet consumed (a small cost per message included)."""
        status: dict[str, Any] = dict(self.assoc.status())
        primary: dict[str, Any] = status.get("primary") or {}
        state = str(status.get("state"))
        srtt = primary.get("srtt")
        dgram_queued, dgram_dropped = self.datagram_counts()
        return {
            "transport": "sctp",
            "state": "handshaking" if self.assoc.on_hold and state != "closed" else _STATES.get(state, state),
            "peer": self.peer_address,
            "srtt_ms": srtt,
            "rto_ms": primary.get("rto"),
            "cwnd": primary.get("cwnd"),
            "bytes_in_flight": primary.get("flight"),
            "mtu": primary.get("mtu"),
            "peer_rwnd": status.get("peer_rwnd"),
            "packets_sent": status.get("tx_packets", 0),
            "packets_received": status.get("rx_packets", 0),
            "packets_retransmitted": status.get("retransmitted_chunks", 0),
            "recv_unconsumed": status.get("held_bytes", 0),
            "dgram_send_queued": dgram_queued,
            "dgram_send_dropped": dgram_dropped,
            "paths": status.get("paths", []),
            "pmtud": status.get("pmtud"),
            "sctp": status,
        }

    # -- datagrams: the hooks RFC 3758 datagrams fill in ------------------------------------------

    def datagram_state(self) -> dict[str, Any]:
        """quicer's ``dgram_state_changed`` props, given before ``connected``: datagrams need PR-SCTP agreed, and
        one must fit in one DATA chunk."""
        if self.assoc.features & ext.PRSCTP:
            return {"dgram_send_enabled": True, "dgram_max_len": self.assoc.fragmentation_point}
        return {"dgram_send_enabled": False, "dgram_max_len": 0}

    def datagram_counts(self) -> tuple[int, int]:
        """Datagrams queued for sending, and dropped because the queue was full (``stats()``)."""
        return self.assoc.queued_datagrams(), self._dgram_dropped

    # -- driver side -----------------------------------------------------------------------------

    def handle_event(self, event: Any) -> None:
        sink = self.sink
        assert sink is not None
        kind = type(event)
        if kind is se.DataReceived:
            ppid = event.ppid
            if ppid >> 8 == _MUX_PPIDS:
                if ppid == DGRAM_PPID and event.unordered:
                    # a datagram: the mailbox bounds datagrams itself, so its window space comes back at once
                    self.assoc.consumed(len(event.data))
                    sink.deliver(t.DatagramReceived(event.data))
                    return
                if ppid != DGRAM_PPID and self._mux_peer:
                    self._marker(sink, event)
                    return
            sid = event.stream_id
            if sid not in self._in_epoch:
                if self._local_uni and sid in self._local_uni:
                    self.assoc.consumed(len(event.data))  # the peer sends on our one-way stream: not for us
                    self._counters["uni_data_dropped"] = self._counters.get("uni_data_dropped", 0) + 1
                    return
                self._in_epoch[sid] = False
                self.assoc.claim_stream(sid)
            sink.deliver(t.StreamData(sid, event.data, False, {"ppid": ppid, "unordered": event.unordered}))
        elif kind is se.StreamReset:
            self._peer_reset(sink, event.stream_ids)
        elif kind is se.StreamResetRequested:
            for sid in event.stream_ids:
                if sid not in self._in_epoch and sid not in self._local_uni:
                    self._new_stream(sink, sid)
                sink.deliver(t.StopSending(sid, self._stop_codes.pop(sid, 0)))
        elif kind is se.StreamClosed:
            sid = event.stream_id
            self._local_uni.discard(sid)
            self._in_epoch.pop(sid, None)
            self._reset_codes.pop(sid, None)
        elif kind is se.StreamsAdded:
            if event.outbound:
                sink.deliver(t.StreamsAvailable(self._free_streams(), 0))
        elif kind is se.StreamResetFailed:
            self._counters["stream_resets_refused"] = self._counters.get("stream_resets_refused", 0) + 1
            peer_log(
                log,
                "sctp.reset_refused",
                "association %s: peer refused to reset streams %s: %s",
                self.peer_address,
                event.stream_ids[:16],
                event.result,
            )
        elif kind is se.SendQueueDrained:
            if sink.blocked:
                sink.writable()
        elif kind is se.AssociationUp:
            sink.deliver(t.DatagramStateChanged(self.datagram_state()))
            sink.deliver(
                t.Connected(
                    {
                        "transport": "sctp",
                        "peer": self.peer_address,
                        "outbound_streams": event.outbound_streams,
                        "inbound_streams": event.inbound_streams,
                        "peer_rwnd": event.peer_rwnd,
                    }
                )
            )
            sink.deliver(t.StreamsAvailable(self._free_streams(), 0))
        elif kind is se.ShutdownReceived:
            self._peer_shutdown = True
            if not self._closing_by_us:
                sink.deliver(t.PeerShutdown(0))
        elif kind is se.AssociationAborted:
            self._aborted(sink, event)
        elif kind is se.AssociationClosed:
            self.finished = True
            props = self._end
            if props is None:
                if self._closing_by_us:
                    props = {"by": "local", "error_code": 0, "reason": "", **self._local_end}
                    self.ended_by_our_shutdown = self._shutdown_asked and not (props["error_code"] or "error" in props)
                elif self._peer_shutdown:
                    props = {"by": "peer", "error_code": 0, "reason": ""}
                else:
                    # nobody asked and nothing failed: the association shut itself down, which is autoclose
                    # (gen_sctp's idle close), as QUIC's idle timeout ends a connection
                    self.ended_by_our_shutdown = True
                    props = {"by": "transport", "error_code": 0, "reason": "autoclose", "error": "idle_timeout"}
                    sink.deliver(t.TransportShutdown(dict(props)))
            sink.deliver(t.Closed(props))
        elif kind is se.PeerError:
            # peer-caused: counted, and logged at debug only, briefly and at a bounded rate
            self._counters["peer_errors"] = self._counters.get("peer_errors", 0) + 1
            peer_log(log, "sctp.peer_error", "association %s: peer reported %s", self.peer_address, event.causes)
        elif kind is se.PathChanged or kind is se.PrimaryChanged:
            sink = self.sink
            if sink is not None and not self.finished:
                address = tuple(event.address[:2])
                if kind is se.PrimaryChanged:
                    sink.deliver(t.AddressChanged(address))
                else:
                    info = next((p for p in self.assoc._paths.info() if p["address"] == address), {})
                    sink.deliver(t.PathChanged(address, event.state, info))
        elif kind is se.AssociationRestarted:
            peer_log(log, "sctp.restart", "association %s: peer restarted", self.peer_address)

    def _free_streams(self) -> int:
        assoc = self.assoc
        return sum(1 for sid in range(assoc.outbound_streams) if not assoc.stream_in_use(sid))

    def _new_stream(self, sink: t.ConnectionSink, sid: int, *, theirs: bool = True) -> None:
        """The peer starts a new use of ``sid`` with a reset or a stop-sending rather than a message: announce it
        with an empty ``StreamData`` (``new_stream``), so the mailbox sees where the previous use ended."""
        self._in_epoch[sid] = False
        self.assoc.claim_stream(sid, theirs=theirs)
        sink.deliver(t.StreamData(sid, b"", False, {}))

    def _marker(self, sink: t.ConnectionSink, event: se.DataReceived) -> None:
        """A mux peer's marker message (see the module docstring): what it says is kept, never delivered."""
        self.assoc.consumed(len(event.data))
        sid, ppid, data = event.stream_id, event.ppid, event.data
        code = min(_CODE.unpack_from(data)[0], MAX_APP_CODE) if len(data) >= 8 else 0
        if ppid == RESET_PPID:
            if sid not in self._in_epoch:  # opened and reset at once: a stream all the same
                self._new_stream(sink, sid)
            if self._reset_codes is _NO_CODES:
                self._reset_codes = {}
            self._reset_codes[sid] = code
        elif ppid == STOP_PPID:
            if sid < self.assoc.outbound_streams:
                if self._stop_codes is _NO_CODES:
                    self._stop_codes = {}
                self._stop_codes[sid] = code
                self.assoc.final_message(sid, RESET_PPID, _code_bytes(code))  # our reset carries it back
        elif ppid == UNI_PPID and sid not in self._in_epoch:
            self._in_epoch[sid] = True
            self.assoc.claim_stream(sid, ours=False)
            sink.deliver(t.StreamData(sid, b"", False, {"unidirectional": True}))  # new_stream, one-way
        else:
            self._counters["unknown_markers"] = self._counters.get("unknown_markers", 0) + 1

    def _peer_reset(self, sink: t.ConnectionSink, stream_ids: list[int]) -> None:
        """The peer ended its direction of these streams, everything before delivered: ``fin``, or
        ``peer_send_aborted`` with the code its marker gave."""
        for sid in stream_ids:
            if sid in self._local_uni:
                continue  # our one-way stream: the peer closed the direction it was asked never to use
            if sid not in self._in_epoch:
                if self.assoc.stream_in_use(sid):
                    continue  # the peer's direction of this stream ended already: resetting it again says nothing
                # a direction the peer ends without having used it: still a stream to the behaviour, whose own
                # direction is open until it ends it
                self._new_stream(sink, sid, theirs=False)
            del self._in_epoch[sid]
            code = self._reset_codes.pop(sid, None)
            if code is None:
                sink.deliver(t.StreamData(sid, b"", True, {}))
            else:
                sink.deliver(t.StreamReset(sid, code))

    def _aborted(self, sink: t.ConnectionSink, event: se.AssociationAborted) -> None:
        """The association ended by an ABORT, the peer's or ours, or by giving up on the peer."""
        causes = event.causes
        by_peer = _sent_by_peer(event)
        app = _application_close(causes) if by_peer else None
        by = "local" if self._closing_by_us else "peer" if by_peer else "transport"
        if app is not None:
            if not self._closing_by_us:  # else both closed at once: ours came first, and ``closed`` says so
                code, reason = app
                self._end = {"by": by, "error_code": code, "reason": reason}
                sink.deliver(t.PeerShutdown(code, reason))
            return
        end: dict[str, Any] = {"by": by, "error_code": causes[0].code if causes else 0}
        if by_peer:
            end["error"], end["reason"] = _peer_abort(causes)
        else:
            lost = not causes or event.reason.startswith(_LOST)
            end["error"] = "communication_lost" if lost else _cause_name(causes[0])
            end["reason"] = event.reason
        if causes:
            end["sctp"] = {"causes": [describe(c) for c in causes]}
        self._end = end
        sink.deliver(t.TransportShutdown(dict(end)))

    def on_finished(self) -> None:
        if self._on_finished is not None:
            self._on_finished(self)


def _code_bytes(code: int) -> bytes:
    if not 0 <= code <= MAX_APP_CODE:
        raise t.TransportError(f"an application error code is 0 to 2**62 - 1, not {code}")
    return _CODE.pack(code)


def _sent_by_peer(event: se.AssociationAborted) -> bool:
    """Whether the peer sent the ABORT, rather than our association giving up or aborting it. The event does
    not say; the association names a peer's ABORT by its causes, and its own ends otherwise."""
    return event.reason == ("; ".join(describe(c) for c in event.causes) or "peer sent ABORT")


def _user_text(causes: list[ErrorCause]) -> str | None:
    for cause in causes:
        if cause.code == USER_INITIATED_ABORT:
            return cause.info.decode("utf-8", "replace")
    return None


def _application_close(causes: list[ErrorCause]) -> tuple[int, str] | None:
    """The code and reason of a peer's application close, when its ABORT carries one."""
    text = _user_text(causes)
    match = _APP_CLOSE.fullmatch(text) if text is not None else None
    if match is None:
        return None
    code = int(match.group(1))
    return (code, match.group(2)) if code <= MAX_APP_CODE else None


def _peer_abort(causes: list[ErrorCause]) -> tuple[str, str]:
    """``error`` and ``reason`` of a peer's ABORT: a user abort is ``aborted`` (or ``refused``) with the
    peer's text as reason, as QUIC gives a peer's abort; any other cause is named after itself."""
    text = _user_text(causes)
    if text is not None:
        if text.startswith(REFUSED):
            return "refused", text[len(REFUSED) :]
        return "aborted", text
    if not causes:
        return "aborted", ""
    return _cause_name(causes[0]), "; ".join(describe(c) for c in causes)


def _cause_name(cause: ErrorCause) -> str:
    return CAUSE_NAMES.get(cause.code, f"cause_{cause.code}")
