"""One SCTP association (RFC 9260), sans-IO: packets and ``now`` in, packets, timers and events out.

The pump methods carry aioquic's ``QuicConnection`` names so one UDP driver serves QUIC and SCTP.
The server side is built by the endpoint from a valid COOKIE-ECHO (``from_cookie``); the client side is
created by ``Endpoint.connect`` and starts with ``connect(now)``.

This module is the state machine (handshake, shutdown, abort, timers) and the dispatcher: it hands each
chunk to the part whose job it is and assembles outgoing packets from what the parts have ready.

* ``rx.tracker``: which TSNs came, and the SACK that says so; ``rx.reassembly``: the messages they make,
  delivered in order per stream, and what holding them costs (our advertised window is what is left).
* ``tx.send_queue``: what the application queued, per stream, and the scheduler that picks the next chunk;
  ``tx.outstanding``: what is in flight and what SACKs say of it; ``tx.congestion``: how much may be in
  flight; ``tx.rtt``: the retransmission timeout.
* ``heartbeat``: probes of an idle path.
* ``reconfig``: stream reconfiguration (RFC 6525): resetting and adding streams, both ways.

**Streams** (RFC 6525). Each stream id has two directions. Ours is in use from ``open_stream`` or its first message
until the peer performed its reset (``close_stream``); the peer's, from ``open_stream`` (when we expect it to
answer on it) or ``claim_stream`` until the peer reset it. An id in use neither way is free: ``open_stream`` hands
it out again, and ``StreamClosed`` says when one becomes free. Resetting a stream never reorders it: what was queued
on it before leaves first, with its old SSNs; what is queued after waits, and starts at SSN 0 once the peer has
performed the reset.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from mux.sctp import cookie as ck
from mux.sctp import events as ev
from mux.sctp import extensions as ext
from mux.sctp import reconfig as rc
from mux.sctp.chunks import (
    FLAG_B,
    FLAG_E,
    AbortChunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    ForwardTsnChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    InitAckChunk,
    InitChunk,
    ReconfigChunk,
    SackChunk,
    ShutdownAckChunk,
    ShutdownChunk,
    ShutdownCompleteChunk,
    UnknownChunk,
)
from mux.sctp.config import SctpConfig
from mux.sctp.heartbeat import Heartbeat
from mux.sctp.packet import Packet, chunk_action, parse_packet, serialize_packet
from mux.sctp.params import (
    RESULT_ALREADY_IN_PROGRESS,
    RESULT_BAD_SEQUENCE,
    RESULT_DENIED,
    RESULT_IN_PROGRESS,
    RESULT_NOTHING_TO_DO,
    RESULT_PERFORMED,
    STALE_COOKIE,
    AddIncomingStreamsRequest,
    AddOutgoingStreamsRequest,
    CookiePreservativeParam,
    ErrorCause,
    IncomingSsnResetRequest,
    OutgoingSsnResetRequest,
    Param,
    ParseError,
    ReconfigResponse,
    SsnTsnResetRequest,
    StateCookieParam,
    UnknownParam,
    cookie_while_shutting_down_cause,
    describe,
    invalid_stream_cause,
    missing_param_cause,
    no_user_data_cause,
    out_of_resource_cause,
    param_action,
    parse_reconfig_params,
    protocol_violation_cause,
    unrecognized_chunk_cause,
    unrecognized_params_cause,
    user_abort_cause,
)
from mux.sctp.rx.reassembly import CHUNK_COST, MESSAGE_COST, BadFragments, Reassembly
from mux.sctp.rx.tracker import DUPLICATE, MAX_AHEAD, NEXT, NO_ROOM, TOO_FAR, DataTracker
from mux.sctp.tx.congestion import Congestion
from mux.sctp.tx.outstanding import BEYOND, Outstanding
from mux.sctp.tx.rtt import RttEstimator
from mux.sctp.tx.send_queue import CONTROL, DATAGRAMS, OutChunk, SendQueue

Addr = tuple[Any, ...]

MASK = 0xFFFFFFFF
HALF = 0x80000000

CLOSED = "closed"
COOKIE_WAIT = "cookie_wait"
COOKIE_ECHOED = "cookie_echoed"
ESTABLISHED = "established"
SHUTDOWN_PENDING = "shutdown_pending"
SHUTDOWN_SENT = "shutdown_sent"
SHUTDOWN_RECEIVED = "shutdown_received"
SHUTDOWN_ACK_SENT = "shutdown_ack_sent"

_CAN_SEND = (ESTABLISHED, COOKIE_WAIT, COOKIE_ECHOED)
_RELIABILITY = ("reliable", "rexmit", "timed")
_RELIABLE = (True, "reliable", 0)
_DATA_FLOWS = (ESTABLISHED, SHUTDOWN_PENDING, SHUTDOWN_RECEIVED, SHUTDOWN_SENT)
#: bytes charged per queued or unacknowledged chunk on top of its payload: the ``OutChunk`` record and its cached
#: encoding's header (measured with tracemalloc, tests/test_sctp_rx.py)
OUT_COST = 256
#: bookkeeping charged per held chunk on top of its payload, so tiny chunks cannot bloat memory for free
#: received HEARTBEAT infos longer than this are not echoed back (an amplification guard)
_MAX_HB_INFO = 1024
#: what a stream id is used for, per direction (``Association._sflags``): our direction is in use, its reset is
#: asked for, and the peer's direction is in use (it sent, or we opened the stream expecting it to answer)
OUT_OPEN = 1
OUT_RESETTING = 2
IN_OPEN = 4


class SctpError(Exception):
    """A user command cannot be carried out (bad stream, association closed)."""


class BufferFull(SctpError):
    """The send queue is over ``sndbuf``: wait for ``SendQueueDrained``."""


def tsn_lt(a: int, b: int) -> bool:
    """Serial-number ``a < b`` on 32 bits (RFC 1982)."""
    return a != b and ((b - a) & MASK) < HALF


class Association:
    def __init__(
        self,
        config: SctpConfig,
        *,
        local_port: int,
        remote_port: int,
        peer_addr: Addr,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.local_port = local_port
        self.remote_port = remote_port
        self.peer_addr: Addr = peer_addr
        self._rng = rng or random.SystemRandom()
        self.state = CLOSED
        self._closed = False  # AssociationClosed was emitted
        self._on_hold = False  # accepted but not yet released by the application (see from_cookie)
        self.local_vtag = self._rng.randrange(1, 1 << 32)
        self.peer_vtag = 0
        self.outbound_streams = config.num_ostreams
        self.inbound_streams = config.max_instreams
        #: the extensions we offer, and (once the handshake agreed) those both sides offered
        self._offered = ext.offered(config.prsctp_enable, config.reconf_enable, config.intl_enable)
        self.features = 0
        ip_overhead = 40 if ":" in str(peer_addr[0]) else 20
        #: room for chunks in one packet: path MTU minus IP, UDP (RFC 6951) and the SCTP common header
        self._budget = config.pmtu - ip_overhead - 8 - 12
        frag = self._budget - 16
        if config.maxseg:
            frag = min(frag, config.maxseg)
        self.fragmentation_point = max(frag & ~3, 4)
        self._mtu = self._budget + 12  # the SCTP packet size congestion control counts in
        self._events: deque[ev.Event] = deque()
        self._ctrl: list[bytes] = []  # control chunks for the next packet (peer's tag)
        self._raw: list[bytes] = []  # whole packets with their own tag (INIT, T-bit replies, ABORT)

        # send side: what waits (``_queue``), what is in flight (``_out``), how much may be (``_cc``)
        self._initial_tsn = self._rng.randrange(0, 1 << 32)
        self._queue = SendQueue(config.num_ostreams, self.fragmentation_point)
        self._out = Outstanding(self._initial_tsn)
        self._cc = Congestion(self._mtu)
        self._peer_arwnd = 0
        self._blocked = False
        #: PR-SCTP: a FORWARD-TSN is due, and when one last left (it is repeated at most once per RTO)
        self._fwd_due = False
        self._fwd_sent_at = 0.0
        #: per outbound stream: (ordered, reliability, param), ex_sctp's configure_stream
        self._stream_config: dict[int, tuple[bool, str, int]] = {}
        self._announce = False
        #: RFC 6525: per stream id in use, ``OUT_OPEN | OUT_RESETTING | IN_OPEN``; free ids are absent
        self._sflags: dict[int, int] = {}
        self._peer_initial_tsn = 0
        self._reconfig = rc.Reconfig(self._initial_tsn, 0)
        #: a request of ours waits to be built (checked on every packet assembly while set)
        self._reconf_work = False
        #: data held by a deferred reset of the peer's (RFC 6525 §5.2.2 E2): (unwrapped TSN, chunk)
        self._holding = False
        self._held: list[tuple[int, DataChunk]] = []
        #: ``_holding or announce_streams``: the one test the receive path makes for either
        self._rx_special = False
        #: per stream: the message to send last when the peer asks us to reset it (``final_message``)
        self._finals: dict[int, tuple[int, bytes]] = {}

        # timers and error counting
        self._rtt = RttEstimator(config.rto_initial / 1000.0, config.rto_min / 1000.0, config.rto_max / 1000.0)
        self._heartbeat = Heartbeat(config.hbinterval, self._rng)
        self._error_count = 0
        self._t1: float | None = None
        self._t1_rto = config.rto_initial / 1000.0
        self._init_attempts = 0  # INITs sent, stale-cookie restarts included (§5.2.6)
        self._echo_attempts = 0  # COOKIE-ECHOs sent
        self._t2: float | None = None
        self._t3: float | None = None
        self._t5: float | None = None
        self._t_sack: float | None = None
        self._t_hb: float | None = None
        self._t_autoclose: float | None = None
        self._t_reconf: float | None = None
        self._last_data = 0.0  # when user data last left or arrived (autoclose counts from here)
        self._last_activity = 0.0
        self._init_packet = b""
        self._cookie_echo = b""
        self._cookie_echo_sent_at: float | None = None
        self._cookie_preservative_ms = 0

        # receive side: which TSNs came (``_rx``) and the messages they make (``_reasm``, built below)
        self._rx = DataTracker(0)
        self._need_sack = False
        self._recbuf = config.recbuf
        self._rwnd_sent = config.recbuf  # the window our last SACK advertised
        #: below this advertised window the peer may be stalled: a window update (``consumed``) is worth a SACK
        self._stalled_below = min(2 * self._mtu, config.recbuf // 4)
        self._update_step = min(self._mtu, config.recbuf // 4)
        self._sack_now = True  # §5.1: the first DATA chunk is acknowledged at once
        self._data_packets = 0

        self.stats: dict[str, int] = {
            "tx_packets": 0,
            "rx_packets": 0,
            "tx_data_chunks": 0,
            "rx_data_chunks": 0,
            "retransmitted_chunks": 0,
            "fast_retransmits": 0,
            "t3_expiries": 0,
            "duplicate_tsns": 0,
            "rwnd_drops": 0,
            "bad_vtag": 0,
            "unrecognized_chunks": 0,
            "messages_sent": 0,
            "messages_received": 0,
        }
        self._reasm = Reassembly(config.max_instreams, self._events, self.stats)

    # -- construction ---------------------------------------------------------------------------------------

    @classmethod
    def from_cookie(
        cls,
        config: SctpConfig,
        cookie: ck.Cookie,
        *,
        peer_addr: Addr,
        now: float,
        rng: random.Random | None = None,
        hold: bool = False,
    ) -> Association:
        """The server's association, built from a verified COOKIE-ECHO.

        With ``hold`` the COOKIE-ACK and every event wait for ``proceed``: the application decides
        (quicer's ``new_conn``) before the peer learns the association is up.
        """
        assoc = cls(config, local_port=cookie.local_port, remote_port=cookie.peer_port, peer_addr=peer_addr, rng=rng)
        assoc._load_cookie(cookie)
        assoc._ctrl.append(CookieAckChunk().serialize())
        assoc._establish(now)
        if hold:
            assoc._on_hold = True
            assoc._t_hb = None
        return assoc

    @property
    def on_hold(self) -> bool:
        return self._on_hold

    def proceed(self, now: float) -> None:
        """Release a held association: send the COOKIE-ACK, deliver the events."""
        if self._on_hold:
            self._on_hold = False
            if self.config.hbinterval and self.state in _DATA_FLOWS:
                self._t_hb = self._heartbeat.due(now, self._rtt.rto)

    def _load_cookie(self, cookie: ck.Cookie) -> None:
        config = self.config
        self.local_vtag = cookie.local_tag
        self.peer_vtag = cookie.peer_tag
        self._initial_tsn = cookie.local_tsn
        self._out = Outstanding(cookie.local_tsn)
        self._rx = DataTracker(cookie.peer_tsn - 1)
        self._peer_initial_tsn = cookie.peer_tsn
        self._peer_arwnd = cookie.peer_rwnd
        self.outbound_streams = min(config.num_ostreams, cookie.peer_mis)
        self.inbound_streams = min(config.max_instreams, cookie.peer_os)
        self.features = cookie.features

    def connect(self, now: float) -> None:
        """Client side: send INIT and wait for INIT-ACK (T1-init retransmits it)."""
        if self.state != CLOSED:
            raise SctpError(f"connect in state {self.state}")
        self.state = COOKIE_WAIT
        self._init_attempts = 0
        self._t1_rto = self.config.rto_initial / 1000.0
        self._send_init(now)

    def _send_init(self, now: float) -> None:
        c = self.config
        params: list[Any] = ext.params(self._offered)
        if self._cookie_preservative_ms:
            params.append(CookiePreservativeParam(self._cookie_preservative_ms))
        init = InitChunk(self.local_vtag, c.recbuf, c.num_ostreams, c.max_instreams, self._initial_tsn, params)
        self._init_packet = serialize_packet(self.local_port, self.remote_port, 0, [init])
        self._raw.append(self._init_packet)
        self._init_attempts += 1
        self._t1 = now + self._t1_rto

    # -- user commands --------------------------------------------------------------------------------------

    def configure_stream(
        self, stream_id: int, *, ordered: bool = True, reliability: str = "reliable", param: int = 0
    ) -> None:
        """A stream's defaults for ``send``, as ex_sctp's configure_stream: ordered or not, and its PR-SCTP policy.

        ``reliability`` is ``reliable`` (retransmit until acknowledged), ``rexmit`` (at most ``param``
        retransmissions) or ``timed`` (give up ``param`` ms after it was queued). Without PR-SCTP agreed with the
        peer, every message is reliable.
        """
        if reliability not in _RELIABILITY:
            raise SctpError(f"reliability must be one of {', '.join(_RELIABILITY)}, not {reliability!r}")
        if param < 0:
            raise SctpError(f"the reliability parameter must be >= 0, not {param}")
        if ordered and reliability == "reliable":
            self._stream_config.pop(stream_id, None)
        else:
            self._stream_config[stream_id] = (ordered, reliability, param)

    def send(
        self,
        stream_id: int,
        data: bytes,
        *,
        ppid: int = 0,
        unordered: bool | None = None,
        reliability: str | None = None,
        param: int | None = None,
        now: float = 0.0,
    ) -> int:
        """Queue one user message; it leaves as one or more DATA chunks. Returns ``buffered_amount()``.

        ``unordered``, ``reliability`` and ``param`` default to the stream's (``configure_stream``); ``now``
        dates a ``timed`` message.
        """
        if self.state not in _CAN_SEND:
            raise SctpError(f"cannot send in state {self.state}")
        if not 0 <= stream_id < self.outbound_streams:
            raise SctpError(f"stream {stream_id} is not open: {self.outbound_streams} outbound streams")
        if not data:
            raise SctpError("SCTP cannot send an empty message")
        sndbuf = self.config.sndbuf
        queue, out = self._queue, self._out
        sent = out.bytes + OUT_COST * (len(out.sent) - out.head)
        if queue.bytes + OUT_COST * queue.chunks + sent > sndbuf:
            raise BufferFull(f"send queue holds {self.buffered_amount()} bytes (sndbuf {sndbuf})")
        if stream_id not in self._sflags:
            self._sflags[stream_id] = OUT_OPEN
        if unordered is None and reliability is None and not self._stream_config:
            queue.push(stream_id, data, ppid, False)  # the common case: ordered and reliable
        else:
            ordered, mode, limit = self._stream_config.get(stream_id, _RELIABLE)
            if unordered is None:
                unordered = not ordered
            if reliability is not None:
                if reliability not in _RELIABILITY:
                    raise SctpError(f"reliability must be one of {', '.join(_RELIABILITY)}, not {reliability!r}")
                mode, limit = reliability, param if param is not None else 0
            max_rexmit, expires = -1, 0.0
            if self.features & ext.PRSCTP:
                if mode == "rexmit":
                    max_rexmit = max(limit, 0)
                elif mode == "timed":
                    expires = now + max(limit, 0) / 1000.0 or 1e-9
            queue.push(stream_id, data, ppid, unordered, max_rexmit, expires)
        self.stats["messages_sent"] += 1
        buffered = queue.bytes + OUT_COST * queue.chunks + sent
        if buffered > sndbuf // 2:
            self._blocked = True
        return buffered

    def send_datagram(self, data: bytes, *, ppid: int, now: float = 0.0) -> None:
        """An unreliable message: unordered on stream 0, never retransmitted (PR-SCTP ``rexmit`` 0), queued in a
        lane of its own so it takes its turn with the streams instead of waiting behind stream 0's messages."""
        if self.state not in _CAN_SEND:
            raise SctpError(f"cannot send in state {self.state}")
        if not self.features & ext.PRSCTP:
            raise SctpError("datagrams need PR-SCTP, which the peer did not offer")
        if not data or len(data) > self.fragmentation_point:
            raise SctpError(f"a datagram holds 1 to {self.fragmentation_point} bytes, not {len(data)}")
        if self.buffered_amount() > self.config.sndbuf:
            raise BufferFull(f"send queue holds {self.buffered_amount()} bytes (sndbuf {self.config.sndbuf})")
        self._queue.push(0, data, ppid, True, 0, 0.0, DATAGRAMS)
        self.stats["datagrams_sent"] = self.stats.get("datagrams_sent", 0) + 1

    def queued_datagrams(self) -> int:
        return self._queue.waiting(DATAGRAMS)

    # -- streams (RFC 6525; ex_sctp's open_stream / close_stream) ---------------------------------------------------

    def open_stream(
        self, stream_id: int | None = None, *, expect_peer: bool = True, first: tuple[int, bytes] | None = None
    ) -> int:
        """Take a stream id for our use: ``stream_id``, or the lowest free one. With ``expect_peer`` the peer's
        direction counts as in use too, until the peer resets it: the id is not handed out again before both
        directions are over. ``first`` = (ppid, payload) is queued as its first message whatever ``sndbuf`` says
        (mux's one-way marker). Opening an id already in use is a no-op; one whose reset is under way is an
        error."""
        flags = self._sflags
        if stream_id is None:
            limit = self.outbound_streams
            stream_id = next((s for s in range(limit) if s not in flags and not self._queue.is_paused(s)), None)
            if stream_id is None:
                raise SctpError(f"all {limit} outbound streams are in use")
        elif not 0 <= stream_id < self.outbound_streams:
            raise SctpError(f"stream {stream_id} is not open: {self.outbound_streams} outbound streams")
        f = flags.get(stream_id, 0)
        if f & OUT_RESETTING:
            raise SctpError(f"stream {stream_id} is being reset")
        flags[stream_id] = f | OUT_OPEN | (IN_OPEN if expect_peer else 0)
        if first is not None:
            self._queue.push(stream_id, first[1], first[0], False)
        return stream_id

    def claim_stream(self, stream_id: int, *, ours: bool = True, theirs: bool = True) -> None:
        """The peer started using ``stream_id`` (its first message since its last reset): with ``theirs`` its
        direction is in use until it resets it, and with ``ours`` (a bidirectional stream) so is ours, until we
        reset it. A stream we opened expecting the peer's answer is ours already: nothing changes."""
        f = self._sflags.get(stream_id, 0)
        if f & IN_OPEN:
            return
        if ours and not f & (OUT_OPEN | OUT_RESETTING):
            f |= OUT_OPEN
        if theirs:
            f |= IN_OPEN
        if f:
            self._sflags[stream_id] = f

    def stream_in_use(self, stream_id: int) -> bool:
        return stream_id in self._sflags or self._queue.is_paused(stream_id)

    def close_stream(self, stream_id: int, *, abort: bool = False, final: tuple[int, bytes] | None = None) -> None:
        """Reset our outgoing ``stream_id`` (RFC 6525 Outgoing SSN Reset Request), as WebRTC closes a data channel:
        what was queued on it leaves first, then the reset. ``abort`` drops its unsent messages first (a message
        partly sent is finished); ``final`` = (ppid, payload) is one last message to send before the reset. Messages
        sent on it meanwhile wait, and start over at SSN 0 once the peer has performed the reset."""
        if not self.features & ext.RECONFIG:
            raise SctpError("stream reset needs RE-CONFIG (RFC 6525), which the peer did not offer")
        if self.state not in _DATA_FLOWS:
            raise SctpError(f"cannot reset a stream in state {self.state}")
        if not 0 <= stream_id < self.outbound_streams:
            raise SctpError(f"stream {stream_id} is not open: {self.outbound_streams} outbound streams")
        f = self._sflags.get(stream_id, 0)
        if f & OUT_RESETTING:
            return
        self._finals.pop(stream_id, None)
        self._reset_out(stream_id, abort, final)

    def _reset_out(
        self, stream_id: int, abort: bool, final: tuple[int, bytes] | None, response_seq: int | None = None
    ) -> None:
        queue = self._queue
        if abort:
            dropped = queue.drop_stream(stream_id)
            if dropped:
                self.stats["reset_dropped_bytes"] = self.stats.get("reset_dropped_bytes", 0) + dropped
        if final is not None:
            queue.push(stream_id, final[1], final[0], False)
        self._sflags[stream_id] = self._sflags.get(stream_id, 0) | OUT_RESETTING
        self._reconfig.want_out(stream_id, queue.tail(stream_id), response_seq)
        queue.pause(stream_id)
        self._reconf_work = True

    def request_reset(self, stream_id: int, *, notice: tuple[int, bytes] | None = None) -> None:
        """Ask the peer to reset its outgoing ``stream_id`` (RFC 6525 Incoming SSN Reset Request: QUIC's
        STOP_SENDING). ``notice`` = (ppid, payload) is an unordered message the peer must have received before the
        request leaves (it goes aside from the stream's queue, and the request waits for its acknowledgement)."""
        if not self.features & ext.RECONFIG:
            raise SctpError("stream reset needs RE-CONFIG (RFC 6525), which the peer did not offer")
        if self.state not in _DATA_FLOWS:
            raise SctpError(f"cannot reset a stream in state {self.state}")
        if not 0 <= stream_id < self.inbound_streams:
            raise SctpError(f"stream {stream_id} is not open: {self.inbound_streams} inbound streams")
        chunk: OutChunk | None = None
        if notice is not None and stream_id < self.outbound_streams:
            self._queue.push(stream_id, notice[1], notice[0], True, lane=CONTROL)
            chunk = self._queue.last_in(CONTROL)
        self._reconfig.want_in(stream_id, chunk)
        self._reconf_work = True

    def final_message(self, stream_id: int, ppid: int, payload: bytes) -> None:
        """The message to send last on ``stream_id`` should the peer ask us to reset it (mux's code marker)."""
        if len(self._finals) < self.outbound_streams:
            self._finals[stream_id] = (ppid, payload)

    def add_streams(self, *, outgoing: int = 0, incoming: int = 0) -> None:
        """RFC 6525 Add Streams: ask for ``outgoing`` more outbound streams (the peer decides, up to what it is
        configured to take) and offer ``incoming`` more inbound ones (we ask the peer to open them), within the
        ``max_instreams`` we offered in INIT, as usrsctp does. ``StreamsAdded`` tells what came of it."""
        if not self.features & ext.RECONFIG:
            raise SctpError("adding streams needs RE-CONFIG (RFC 6525), which the peer did not offer")
        if self.state not in _DATA_FLOWS:
            raise SctpError(f"cannot add streams in state {self.state}")
        if outgoing < 0 or incoming < 0 or not (outgoing or incoming):
            raise SctpError("add at least one stream")
        if outgoing > self.can_add_streams():
            raise SctpError(f"at most {0xFFFF} outbound streams")
        rcfg = self._reconfig
        pending_in = rcfg.add_in + self._pending_adds(rc.ADD_IN)
        if self.inbound_streams + pending_in + incoming > min(self.config.max_instreams, 0xFFFF):
            raise SctpError(f"at most {self.config.max_instreams} inbound streams (initmsg.max_instreams)")
        rcfg.add_out += outgoing
        rcfg.add_in += incoming
        self._reconf_work = True

    def _pending_adds(self, kind: int) -> int:
        req = self._reconfig.inflight
        return sum(p.count for p in req.parts if p.kind == kind and not p.done) if req is not None else 0

    def can_add_streams(self) -> int:
        """How many more outbound streams we may ask for (0 without RE-CONFIG)."""
        if not self.features & ext.RECONFIG or self.state != ESTABLISHED:
            return 0
        pending = self._reconfig.add_out + self._pending_adds(rc.ADD_OUT)
        return max(0, 0xFFFF - self.outbound_streams - pending)

    def shutdown(self, now: float) -> None:
        """Graceful close: outstanding data is delivered first, then SHUTDOWN."""
        state = self.state
        if state in (COOKIE_WAIT, CLOSED):
            self._finish(None)
        elif state == COOKIE_ECHOED:
            self.abort("shutdown before the association was up")
        elif state == ESTABLISHED:
            self.state = SHUTDOWN_PENDING
            self._check_shutdown(now)

    def abort(self, reason: str = "") -> None:
        """Send ABORT with a User-Initiated Abort cause and close at once."""
        if self.state == CLOSED:
            return
        if self.state != COOKIE_WAIT:
            abort = AbortChunk([user_abort_cause(reason.encode()[:256])])
            self._raw.append(serialize_packet(self.local_port, self.remote_port, self.peer_vtag, [abort]))
        self._finish(None)

    def buffered_amount(self) -> int:
        """What queued or unacknowledged user data costs: its bytes plus ``OUT_COST`` per chunk.

        ``sndbuf`` and the senders' high-water mark count this, so an application echoing a peer's one-byte
        messages is held back when their memory adds up, not after a million of them.
        """
        queue, out = self._queue, self._out
        return queue.bytes + out.bytes + OUT_COST * (queue.chunks + len(out.sent) - out.head)

    @property
    def peer_rwnd(self) -> int:
        return max(0, self._peer_arwnd - self._out.flight)

    @property
    def rwnd(self) -> int:
        return max(0, self._recbuf - self._reasm.held)

    def consumed(self, nbytes: int) -> bool:
        """The application is done with one delivered message of ``nbytes``: its window space comes back.

        Returns True when that reopened a window the peer may be waiting on, so a SACK (a window update)
        is now due; the caller then pumps the association.
        """
        reasm = self._reasm
        reasm.held -= nbytes + MESSAGE_COST  # Reassembly.consumed, inlined: this runs per message
        # RFC 9260 §6.2: tell the sender when the window opens by a packet or more while it may be stalled on it
        if self._rwnd_sent >= self._stalled_below or self._need_sack or self.state not in _DATA_FLOWS:
            return False
        if self._recbuf - reasm.held - self._rwnd_sent >= self._update_step:
            self._need_sack = True
            return True
        return False

    def status(self) -> dict[str, object]:
        """gen_sctp's #sctp_status{} plus counters."""
        return {
            "state": self.state,
            "rwnd": self.rwnd,
            "peer_rwnd": self.peer_rwnd,
            "unackdata": len(self._out),
            "penddata": self._queue.chunks,
            "instrms": self.inbound_streams,
            "outstrms": self.outbound_streams,
            "fragmentation_point": self.fragmentation_point,
            "held_bytes": self._reasm.held,
            "held_fragments": self._reasm.fragments,
            "gap_ranges": self._rx.ranges,
            "buffered": self.buffered_amount(),
            "streams_in_use": len(self._sflags),
            "reconfig": {
                "in_flight": self._reconfig.inflight is not None,
                "waiting": len(self._reconfig.out_wanted) + len(self._reconfig.in_wanted),
                "deferred": len(self._reconfig.deferred),
                "held_chunks": len(self._held),
            },
            "primary": {
                "cwnd": self._cc.cwnd,
                "ssthresh": self._cc.ssthresh,
                "flight": self._out.flight,
                "srtt": round(self._rtt.srtt * 1000, 3) if self._rtt.srtt is not None else None,
                "rto": round(self._rtt.rto * 1000, 3),
                "mtu": self._mtu,
            },
            **self.stats,
        }

    # -- pump -----------------------------------------------------------------------------------------------

    def next_event(self) -> ev.Event | None:
        events = self._events
        return events.popleft() if events and not self._on_hold else None

    def get_timer(self) -> float | None:
        at: float | None = None
        for t in (self._t3, self._t_sack, self._t1, self._t2, self._t_hb, self._t5, self._t_autoclose, self._t_reconf):
            if t is not None and (at is None or t < at):
                at = t
        return at

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Parse and process one packet addressed to this association (used without an endpoint)."""
        try:
            packet = parse_packet(data)
        except ParseError:
            return
        self.receive_packet(packet, addr, now)

    def receive_packet(self, packet: Packet, addr: Addr, now: float) -> None:
        chunks = packet.chunks
        if not chunks or self.state == CLOSED:
            return
        first = chunks[0]
        if packet.vtag != self.local_vtag:
            kind = type(first)
            reflected = (kind is AbortChunk or kind is ShutdownCompleteChunk) and first.t_bit  # type: ignore[union-attr]
            if not (reflected and packet.vtag == self.peer_vtag and self.peer_vtag):
                self.stats["bad_vtag"] += 1
                return
        elif type(first) in (AbortChunk, ShutdownCompleteChunk) and first.t_bit and packet.vtag != self.peer_vtag:  # type: ignore[union-attr]
            # T bit set: the tag must be the peer's own (our copy reflected back)
            self.stats["bad_vtag"] += 1
            return
        self.stats["rx_packets"] += 1
        self._last_activity = now
        got_data = False
        for chunk in chunks:
            kind = type(chunk)
            if kind is DataChunk:
                if self.state in _DATA_FLOWS:
                    self._on_data(chunk, now)  # type: ignore[arg-type]
                    got_data = True
            elif kind is SackChunk:
                self._on_sack(chunk, now)  # type: ignore[arg-type]
            elif kind is HeartbeatChunk:
                info = chunk.info  # type: ignore[union-attr]
                if len(info) <= _MAX_HB_INFO:
                    self._ctrl.append(HeartbeatAckChunk(info).serialize())
            elif kind is HeartbeatAckChunk:
                self._on_heartbeat_ack(chunk.info, now)  # type: ignore[union-attr]
            elif kind is InitAckChunk:
                self._on_init_ack(chunk, now)  # type: ignore[arg-type]
            elif kind is CookieAckChunk:
                self._on_cookie_ack(now)
            elif kind is ShutdownChunk:
                self._on_shutdown(chunk.cum_tsn, now)  # type: ignore[union-attr]
            elif kind is ShutdownAckChunk:
                self._on_shutdown_ack(packet.vtag, now)
            elif kind is ShutdownCompleteChunk:
                if self.state == SHUTDOWN_ACK_SENT:
                    self._finish(None)
                return
            elif kind is AbortChunk:
                causes = chunk.causes  # type: ignore[union-attr]
                reason = "; ".join(describe(c) for c in causes) or "peer sent ABORT"
                self._finish(ev.AssociationAborted(reason, list(causes)))
                return
            elif kind is ErrorChunk:
                self._on_error(chunk.causes, now)  # type: ignore[union-attr]
            elif kind is CookieEchoChunk or kind is InitChunk:
                pass  # the endpoint handles these before the association sees the packet
            elif kind is ForwardTsnChunk and self.features & ext.PRSCTP:
                if self.state in _DATA_FLOWS:
                    self._on_forward_tsn(chunk, now)  # type: ignore[arg-type]
                    got_data = True
            elif kind is ReconfigChunk and self.features & ext.RECONFIG:
                if self.state in _DATA_FLOWS or self.state == SHUTDOWN_ACK_SENT:
                    self._on_reconfig(chunk, now)  # type: ignore[arg-type]
            elif kind is UnknownChunk or kind is ForwardTsnChunk or kind is ReconfigChunk:
                # extensions we did not agree on are unrecognized to us
                raw = chunk.serialize()
                ctype = raw[0]
                skip_rest, report = chunk_action(ctype)
                self.stats["unrecognized_chunks"] += 1
                if report:
                    self._ctrl.append(ErrorChunk([unrecognized_chunk_cause(raw[: 4 + 256])]).serialize())
                if skip_rest:
                    break
            if self.state == CLOSED:
                return
        if got_data:
            self._after_data(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        addr = self.peer_addr
        out: list[tuple[bytes, Addr]] = []
        if self._raw:
            out = [(p, addr) for p in self._raw]
            self._raw = []
        if self.state == CLOSED or self._on_hold:
            self.stats["tx_packets"] += len(out)
            return out
        budget = self._budget
        packets: list[list[bytes]] = []
        packet: list[bytes] = []
        size = 0
        if self._ctrl:
            for enc in self._ctrl:
                if size + len(enc) > budget and packet:
                    packets.append(packet)
                    packet, size = [], 0
                packet.append(enc)
                size += len(enc)
            self._ctrl = []
        if self._fwd_due:
            enc = self._forward_tsn(now)
            if enc:
                if size + len(enc) > budget and packet:
                    packets.append(packet)
                    packet, size = [], 0
                packet.append(enc)
                size += len(enc)
        if self._reconf_work and self.state in _DATA_FLOWS:
            enc = self._reconf_poll(now)
            if enc:
                if size + len(enc) > budget and packet:
                    packets.append(packet)
                    packet, size = [], 0
                packet.append(enc)
                size += len(enc)
        if self._need_sack:
            enc = self._build_sack()
            if size + len(enc) > budget and packet:
                packets.append(packet)
                packet, size = [], 0
            packet.append(enc)
            size += len(enc)
        state = self.state
        last: tuple[list[bytes], int, OutChunk] | None = None
        inflight = self._out
        queue = self._queue
        if state in _DATA_FLOWS and (inflight.rtx or queue):
            sent_any = False
            cc = self._cc
            cwnd = cc.cwnd
            stats = self.stats
            # retransmissions first (§6.1, §7.2.4); at least one packet's worth goes whatever cwnd says
            rtx = inflight.rtx
            rtx_packets = 0
            while rtx:
                c = rtx[0]
                if not c.marked or c.acked:
                    rtx.popleft()
                    continue
                if inflight.flight + c.size > cwnd and rtx_packets > 0:
                    break
                n = 16 + ((c.size + 3) & ~3)
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
            # new data, within cwnd and the peer's window, bursts limited (§7.2.4 Max.Burst)
            if queue and state != SHUTDOWN_SENT:
                nagle = (
                    not self.config.nodelay
                    and inflight.flight > 0
                    and queue.bytes < self.fragmentation_point
                    and not (packet and size < budget)  # it can still ride in a packet we are sending anyway
                )
                if not nagle:
                    burst = cc.burst(self.config.max_burst)
                    full_packets = 0
                    new_chunks = 0
                    take, add, active = queue.take, inflight.add, queue.active
                    while active:
                        c = active[0].chunks[0]  # queue.peek(), inlined
                        if c.expires and now >= c.expires:  # PR-SCTP timed: its message lapsed before it left
                            self._abandon_queued(c)
                            continue
                        flight = inflight.flight
                        avail = self._peer_arwnd - flight
                        if flight:
                            if flight >= cwnd or c.size > avail:
                                break
                        elif c.size > avail and inflight.bytes:
                            break  # zero-window probe only when nothing at all is outstanding (§6.1 rule A)
                        n = 16 + ((c.size + 3) & ~3)
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
                        if self._peer_arwnd - inflight.flight <= 0 and not flight:
                            break  # that was the zero-window probe
                    if new_chunks:
                        sent_any = True
                        stats["tx_data_chunks"] += new_chunks
            if sent_any:
                self._last_data = now
                cc.acked_since_send = 0
                if self._t3 is None:
                    self._t3 = now + self._rtt.rto
                if self._t_hb is not None:
                    self._t_hb = self._heartbeat.due(now, self._rtt.rto)
        if packet:
            packets.append(packet)
        if self._reconf_work and state in _DATA_FLOWS:
            # a reset whose stream's last data just left: its request goes now, in a packet of its own (control
            # chunks never follow DATA in a packet)
            enc = self._reconf_poll(now)
            if enc:
                packets.append([enc])
        if last is not None and not queue:
            # RFC 7053: our queue just drained, ask for the SACK now instead of after the peer's delay
            pkt, index, c = last
            pkt[index] = c.encode(immediate=True)
        if packets:
            lp, rp, tag = self.local_port, self.remote_port, self.peer_vtag
            out.extend((serialize_packet(lp, rp, tag, p), addr) for p in packets)
        self.stats["tx_packets"] += len(out)
        return out

    def handle_timer(self, now: float) -> None:
        if self._t_sack is not None and now >= self._t_sack:
            self._t_sack = None
            self._need_sack = True
        if self._t3 is not None and now >= self._t3:
            self._t3 = None
            self._on_t3(now)
        if self._t1 is not None and now >= self._t1:
            self._t1 = None
            self._on_t1(now)
        if self._t2 is not None and now >= self._t2:
            self._t2 = None
            self._on_t2(now)
        if self._t5 is not None and now >= self._t5:
            self._finish(ev.AssociationAborted("shutdown guard timer expired"))
            self._raw.append(serialize_packet(self.local_port, self.remote_port, self.peer_vtag, [AbortChunk()]))
        if self._t_hb is not None and now >= self._t_hb:
            self._on_hb_timer(now)
        if self._t_autoclose is not None and now >= self._t_autoclose:
            self._on_autoclose_timer(now)
        if self._t_reconf is not None and now >= self._t_reconf:
            self._on_reconf_timer(now)

    def _on_autoclose_timer(self, now: float) -> None:
        """gen_sctp's autoclose: an association idle for ``autoclose`` seconds shuts down gracefully."""
        self._t_autoclose = None
        if self.state != ESTABLISHED:
            return
        due = self._last_data + self.config.autoclose
        if now >= due and not self._queue and not len(self._out):
            self.shutdown(now)
        else:
            self._t_autoclose = max(due, now + 0.001)

    # -- handshake ------------------------------------------------------------------------------------------

    def _on_init_ack(self, chunk: InitAckChunk, now: float) -> None:
        if self.state != COOKIE_WAIT:
            return  # §5.2.3: an INIT-ACK in any other state is discarded
        cookie: bytes | None = None
        unrecognized: list[bytes] = []
        for param in chunk.params:
            if type(param) is StateCookieParam:
                cookie = param.cookie
            elif type(param) is UnknownParam:
                stop, report = param_action(param.type)
                if report:
                    unrecognized.append(param.serialize())
                if stop:
                    break
        if chunk.initiate_tag == 0 or chunk.num_ostreams == 0 or chunk.max_instreams == 0:
            self._abort_with(protocol_violation_cause(b"invalid INIT-ACK"), "peer sent an invalid INIT-ACK")
            return
        if cookie is None:
            self._abort_with(missing_param_cause([StateCookieParam.TYPE]), "INIT-ACK without a state cookie")
            return
        config = self.config
        self.peer_vtag = chunk.initiate_tag
        self._rx = DataTracker(chunk.initial_tsn - 1)
        self._peer_initial_tsn = chunk.initial_tsn
        self._peer_arwnd = chunk.a_rwnd
        self.outbound_streams = min(config.num_ostreams, chunk.max_instreams)
        self.inbound_streams = min(config.max_instreams, chunk.num_ostreams)
        self.features = self._offered & ext.peer_offers(chunk.params)
        self._cookie_echo = CookieEchoChunk(cookie).serialize()
        self._ctrl.append(self._cookie_echo)
        if unrecognized:
            self._ctrl.append(ErrorChunk([unrecognized_params_cause(b"".join(unrecognized))]).serialize())
        self.state = COOKIE_ECHOED
        self._echo_attempts = 1
        self._t1_rto = self._rtt.rto
        self._t1 = now + self._t1_rto
        self._cookie_echo_sent_at = now

    def _on_cookie_ack(self, now: float) -> None:
        if self.state != COOKIE_ECHOED:
            return
        if self._cookie_echo_sent_at is not None and self._echo_attempts == 1:
            self._rtt.sample(now - self._cookie_echo_sent_at)
        self._t1 = None
        self._establish(now)

    def _establish(self, now: float) -> None:
        self.state = ESTABLISHED
        self._t1 = None
        self._error_count = 0
        self._last_activity = now
        if self.config.hbinterval:
            self._t_hb = self._heartbeat.due(now, self._rtt.rto)
        if self.config.autoclose:
            self._last_data = now
            self._t_autoclose = now + self.config.autoclose
        # messages queued in COOKIE-WAIT/ECHOED already hold SSNs: keep counting from there
        self._queue.set_streams(self.outbound_streams)
        self._reasm.set_streams(self.inbound_streams)
        self._reconfig = rc.Reconfig(self._initial_tsn, self._peer_initial_tsn)
        self._events.append(ev.AssociationUp(self.outbound_streams, self.inbound_streams, self._peer_arwnd))

    def _on_t1(self, now: float) -> None:
        if self.state not in (COOKIE_WAIT, COOKIE_ECHOED):
            return
        waiting = self.state == COOKIE_WAIT
        attempts = self._init_attempts if waiting else self._echo_attempts
        if attempts >= self.config.max_attempts:
            what = "INIT" if waiting else "COOKIE-ECHO"
            self._finish(ev.AssociationAborted(f"no answer to {what} after {attempts} attempts"))
            return
        self._t1_rto = min(self._t1_rto * 2, self.config.max_init_timeo / 1000.0)
        if waiting:
            self._raw.append(self._init_packet)
            self._init_attempts += 1
        else:
            self._ctrl.append(self._cookie_echo)
            self._echo_attempts += 1
        self._t1 = now + self._t1_rto

    def handle_cookie_echo(self, cookie: ck.Cookie, now: float) -> str:
        """A valid COOKIE-ECHO for this existing association: §5.2.4 table 2. Returns the action taken.

        "restart" (A) is left to the endpoint, which resets us with ``restart``; "discard" (C) means nothing.
        """
        local_match = cookie.local_tag == self.local_vtag
        peer_match = cookie.peer_tag == self.peer_vtag
        if not local_match and not peer_match:
            if cookie.tie_local == self.local_vtag and cookie.tie_peer == self.peer_vtag:
                if self.state == SHUTDOWN_ACK_SENT:
                    # the peer restarted while we were closing: finish the close first (§5.2.4 A)
                    self._ctrl.append(ShutdownAckChunk().serialize())
                    self._ctrl.append(ErrorChunk([cookie_while_shutting_down_cause()]).serialize())
                    return "shutting-down"
                return "restart"
            return "discard"
        if local_match and not peer_match:  # B: INIT collision
            self.peer_vtag = cookie.peer_tag
            self._rx = DataTracker(cookie.peer_tsn - 1)
            self._peer_initial_tsn = cookie.peer_tsn
            self._peer_arwnd = cookie.peer_rwnd
            self.outbound_streams = min(self.config.num_ostreams, cookie.peer_mis)
            self.inbound_streams = min(self.config.max_instreams, cookie.peer_os)
            self.features = cookie.features
            self._ctrl.append(CookieAckChunk().serialize())
            if self.state in (COOKIE_WAIT, COOKIE_ECHOED):
                self._establish(now)
            return "collision"
        if not local_match and peer_match:  # C: a late cookie from an earlier collision
            return "discard"
        # D: both tags match: a duplicate or retransmitted COOKIE-ECHO
        if not self._on_hold:  # a held association sends its COOKIE-ACK on proceed
            self._ctrl.append(CookieAckChunk().serialize())
        if self.state in (COOKIE_WAIT, COOKIE_ECHOED):
            self._t1 = None
            self._establish(now)
        return "duplicate"

    def restart(self, cookie: ck.Cookie, now: float) -> None:
        """The peer restarted (§5.2.4 A): rebuild the TCB under new tags, keep this association object."""
        lost = self.buffered_amount()
        self._reasm.reset(self.inbound_streams)  # held data (deferred resets) included: it is charged there
        self._cc = Congestion(self._mtu)
        self._t3 = self._t2 = self._t5 = self._t_sack = None
        self._load_cookie(cookie)  # a new Outstanding under the new initial TSN
        self._ctrl.append(CookieAckChunk().serialize())
        self.stats["restarts"] = self.stats.get("restarts", 0) + 1
        self.stats["restart_lost_bytes"] = self.stats.get("restart_lost_bytes", 0) + lost
        self.state = ESTABLISHED
        self._queue.clear(self.outbound_streams)
        self._reasm.set_streams(self.inbound_streams)
        # stream reconfiguration starts over with the new TSNs; what was held is gone with the rest
        self._reconfig = rc.Reconfig(self._initial_tsn, self._peer_initial_tsn)
        self._sflags.clear()
        self._finals.clear()
        self._held = []
        self._holding = False
        self._rx_special = self._announce
        self._reconf_work = False
        self._t_reconf = None
        self._events.append(ev.AssociationRestarted(self.outbound_streams, self.inbound_streams))
        if self.config.hbinterval:
            self._t_hb = self._heartbeat.due(now, self._rtt.rto)

    def _on_error(self, causes: list[ErrorCause], now: float) -> None:
        if self.state == COOKIE_ECHOED and any(c.code == STALE_COOKIE for c in causes):
            # §5.2.6: start over with a Cookie Preservative asking for the lifetime we were short of
            stale = next(c for c in causes if c.code == STALE_COOKIE)
            staleness_us = int.from_bytes(stale.info[:4], "big") if len(stale.info) >= 4 else 0
            if self._init_attempts >= self.config.max_attempts:
                self._finish(ev.AssociationAborted("stale cookie", list(causes)))
                return
            self._cookie_preservative_ms = min(2 * (staleness_us // 1000 + 1), 3_600_000)
            self.state = COOKIE_WAIT
            self.peer_vtag = 0
            self._t1_rto = self.config.rto_initial / 1000.0
            self._send_init(now)
            return
        self._events.append(ev.PeerError(list(causes)))

    # -- receiving data -------------------------------------------------------------------------------------

    def _on_data(self, c: DataChunk, now: float) -> None:
        stats = self.stats
        stats["rx_data_chunks"] += 1
        rx = self._rx
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
                self._sack_now = True
                return
            if verdict in (TOO_FAR, NO_ROOM):
                # no honest sender gets this far past our cumulative point, nor leaves this many holes
                stats["rwnd_drops"] += 1
                return
        data = c.data
        if not data:
            self._abort_with(no_user_data_cause(tsn), "peer sent DATA without user data")
            return
        reasm = self._reasm
        held = reasm.held + len(data) + CHUNK_COST
        recbuf = self._recbuf
        # Over our window only the chunk at the cumulative point may still come in, and only while data waits for
        # it here, so a full buffer of out-of-order data or fragments can always be completed; beyond twice the
        # window we drop even that. What the application has not read yet is no reason to take more.
        if held > recbuf and (verdict != NEXT or held > 2 * recbuf or not reasm.assembling):
            stats["rwnd_drops"] += 1
            self._sack_now = True
            if verdict == NEXT and reasm.held == reasm.assembling and not rx.has_gaps:
                # nothing is missing and the application holds nothing, yet the next chunk cannot come in: what
                # waits can never complete (fragments far smaller than what they cost to hold)
                self._abort_with(out_of_resource_cause(), "peer message larger than the receive window can hold")
            return
        if verdict == NEXT and not rx.starts:
            rx.cum = u
        else:
            rx.record(u)
        self._last_data = now
        if verdict != NEXT or c.immediate:
            self._sack_now = True  # out of order: report the gap at once (§6.7); or the sender asked (RFC 7053)
        sid = c.stream_id
        if sid >= self.inbound_streams:
            self._ctrl.append(ErrorChunk([invalid_stream_cause(sid)]).serialize())
            return  # acknowledged, not delivered (§6.5)
        if self._rx_special and self._special_chunk(u, c):
            return
        if c.beginning and c.ending:
            if c.unordered:
                reasm.deliver(sid, data, c.ppid, True)
            else:
                reasm.ordered(sid, c.ssn, data, c.ppid)
            return
        try:
            reasm.fragment(u, c)
        except BadFragments:
            self._abort_with(protocol_violation_cause(b"fragments of one message disagree"), "bad fragments")
            return
        if reasm.fragment_bytes > recbuf and not rx.has_gaps:
            # nothing is missing, yet what waits fills the window: a message bigger than the window never completes
            self._abort_with(out_of_resource_cause(), f"peer message larger than recbuf ({recbuf} bytes)")

    def _after_data(self, now: float) -> None:
        if self._holding and self._reconfig.deferred[0].last <= self._rx.cum:
            self._perform_deferred()
        self._data_packets += 1
        if (
            self._sack_now
            or self._rx.has_gaps
            or self._data_packets >= self.config.sack_freq
            or not self.config.sackdelay
            or self.state != ESTABLISHED
        ):
            self._need_sack = True
            self._t_sack = None
            if self.state == SHUTDOWN_SENT:
                self._ctrl.append(ShutdownChunk(self._rx.cum_tsn).serialize())
                self._t2 = now + self._rtt.rto
        elif self._t_sack is None:
            self._t_sack = now + self.config.sackdelay / 1000.0
        self._sack_now = False

    def _build_sack(self) -> bytes:
        self._need_sack = False
        self._t_sack = None
        self._data_packets = 0
        rx = self._rx
        dups = rx.take_dups()
        gaps = rx.gap_blocks((self._budget - 16) // 4 - len(dups)) if rx.has_gaps else []
        rwnd = self.rwnd
        self._rwnd_sent = rwnd
        return SackChunk(rx.cum_tsn, rwnd, gaps, dups).serialize()

    # -- acknowledgements -----------------------------------------------------------------------------------

    def _on_sack(self, s: SackChunk, now: float) -> None:
        if self.state not in _DATA_FLOWS and self.state != SHUTDOWN_ACK_SENT:
            return
        self._process_ack(s.cum_tsn, s.a_rwnd, s.gaps, now)

    def _process_ack(self, cum: int, a_rwnd: int | None, gaps: list[tuple[int, int]], now: float) -> None:
        out = self._out
        flight_before = out.flight
        d, acked_bytes, newly = out.ack(cum, gaps, now, self._rtt)
        if d == BEYOND:
            self._abort_with(
                protocol_violation_cause(b"cumulative TSN ack beyond the highest TSN sent"), "peer acked unsent data"
            )
            return
        if a_rwnd is not None:
            self._peer_arwnd = a_rwnd
        cc = self._cc
        if acked_bytes:
            self._error_count = 0
        if d:
            cc.on_cum_ack(cum)
        if newly and newly[-1] > out.head:
            marked = out.mark_misses(newly, now)
            if out.lapsed:
                self._abandon_lapsed()
            if marked:
                self.stats["fast_retransmits"] += marked
                if cc.recovery_exit is None:
                    cc.on_fast_retransmit((out.next_tsn - 1) & MASK)
                    self._t3 = now + self._rtt.rto
        if d and acked_bytes and cc.recovery_exit is None:
            cc.on_acked(acked_bytes, flight_before)
        if out.flight <= 0:
            out.flight = 0
            cc.pba = 0
        # T3 (§6.3.2): restart when the earliest outstanding TSN is acked, stop when nothing is outstanding
        if len(out.sent) == out.head:
            self._t3 = None
        elif d:
            self._t3 = now + self._rtt.rto
        if self.features & ext.PRSCTP and out.head < len(out.sent) and out.sent[out.head].abandoned:
            # §3.5 C1-C3: abandoned chunks right above the cumulative ack point: tell the peer to move past them
            # (again, if it has not within an RTO of the last FORWARD-TSN)
            adv = out.advanced()
            if adv is not None and (adv[0] != out.forwarded or now - self._fwd_sent_at >= self._rtt.rto):
                self._fwd_due = True
        cc.acked_since_send += acked_bytes
        if self._blocked and self.buffered_amount() <= self.config.sndbuf // 2:
            self._blocked = False
            self._events.append(ev.SendQueueDrained())
        if self.state != ESTABLISHED:
            self._check_shutdown(now)

    def _on_t3(self, now: float) -> None:
        if self.state not in _DATA_FLOWS and self.state != SHUTDOWN_ACK_SENT:
            return
        if not len(self._out):
            return
        self.stats["t3_expiries"] += 1
        self._error_count += 1
        if self._error_count > self.config.asocmaxrxt:
            self._lost()
            return
        self._cc.on_t3()
        self._rtt.backoff()
        out = self._out
        out.mark_all(now)
        if out.lapsed:
            self._abandon_lapsed()
        if self.features & ext.PRSCTP and out.advanced() is not None:
            self._fwd_due = True  # §3.5 C4: the FORWARD-TSN goes again
        self._t3 = now + self._rtt.rto

    # -- PR-SCTP (RFC 3758) -----------------------------------------------------------------------------------

    def _abandon_lapsed(self) -> None:
        """Abandon the messages of the chunks whose policy lapsed as they came due for retransmission."""
        out = self._out
        lapsed, out.lapsed = out.lapsed, []
        for c in lapsed:
            if c.abandoned:
                continue
            if not out.abandon(c):
                self._queue.drop_message()  # the message's later fragments never left: they never will
                out.skip_rest(c)
            self.stats["abandoned_messages"] = self.stats.get("abandoned_messages", 0) + 1
        if out.advanced() is not None:
            self._fwd_due = True

    def _abandon_queued(self, c: OutChunk) -> None:
        """The message at the head of the send queue lapsed (``timed``) before all of it left."""
        self._queue.drop_message()
        self.stats["abandoned_messages"] = self.stats.get("abandoned_messages", 0) + 1
        if not c.flags & FLAG_B:  # its first fragments are out: abandon those too
            out = self._out
            last = out.sent[-1] if out.sent else None
            if last is not None and last.stream_id == c.stream_id and not last.flags & FLAG_E:
                out.abandon(last)
                out.skip_rest(last)
            if out.advanced() is not None:
                self._fwd_due = True

    def _forward_tsn(self, now: float) -> bytes:
        """The FORWARD-TSN chunk that moves the peer past what we abandoned (§3.5 C2), or nothing."""
        self._fwd_due = False
        out = self._out
        adv = out.advanced()
        if adv is None:
            return b""
        new_cum, streams = adv
        out.forwarded = new_cum
        self._fwd_sent_at = now
        self.stats["forward_tsns_sent"] = self.stats.get("forward_tsns_sent", 0) + 1
        if self._t3 is None:
            self._t3 = now + self._rtt.rto
        return ForwardTsnChunk(new_cum, sorted(streams.items())).serialize()

    def _on_forward_tsn(self, chunk: ForwardTsnChunk, now: float) -> None:
        """§3.6: skip what the peer abandoned, drop partial messages below it, release what waited on it."""
        self.stats["forward_tsns_received"] = self.stats.get("forward_tsns_received", 0) + 1
        self._sack_now = True  # always answered by a SACK at once
        rx = self._rx
        u = rx.unwrap(chunk.new_cum_tsn)
        if u <= rx.cum:
            return
        if u - rx.cum > MAX_AHEAD:
            self.stats["rwnd_drops"] += 1  # as for DATA: further than any honest sender can be
            return
        rx.forward(u)
        inbound = self.inbound_streams
        skips: dict[int, int] = {}
        for sid, ssn in chunk.streams:
            if sid < inbound:
                skips[sid] = ssn
        # only what the peer abandoned is dropped: up to its New Cumulative TSN, not to where ranges above it
        # carried our cumulative point (those fragments arrived and may still complete)
        self._reasm.forward(u, skips)

    # -- stream reconfiguration (RFC 6525) -------------------------------------------------------------------

    def _on_reconfig(self, chunk: ReconfigChunk, now: float) -> None:
        stats = self.stats
        try:
            params = parse_reconfig_params(chunk.params)
        except ParseError:
            stats["reconfig_malformed"] = stats.get("reconfig_malformed", 0) + 1
            return
        if not rc.valid_combination(params):
            stats["reconfig_malformed"] = stats.get("reconfig_malformed", 0) + 1
            return
        stats["reconfig_received"] = stats.get("reconfig_received", 0) + 1
        responses: list[Param] = []
        for p in params:
            kind = type(p)
            if kind is ReconfigResponse:
                self._on_reconfig_response(p, now)  # type: ignore[arg-type]
            elif kind is OutgoingSsnResetRequest:
                self._on_peer_out_reset(p, responses)  # type: ignore[arg-type]
            elif kind is IncomingSsnResetRequest:
                self._on_peer_in_reset(p, responses)  # type: ignore[arg-type]
            elif kind is AddOutgoingStreamsRequest:
                self._on_peer_add_out(p, responses)  # type: ignore[arg-type]
            elif kind is AddIncomingStreamsRequest:
                self._on_peer_add_in(p, responses)  # type: ignore[arg-type]
            elif kind is SsnTsnResetRequest:
                seq = p.request_seq  # type: ignore[union-attr]
                self._answer_simple(seq, rc.SSN_TSN, RESULT_DENIED, responses)  # not supported
            if self.state == CLOSED:
                return
        for i in range(0, len(responses), 2):
            self._ctrl.append(ReconfigChunk(responses[i : i + 2]).serialize())

    def _answer_simple(self, seq: int, kind: int, result: int, responses: list[Param]) -> None:
        verdict, cached = self._reconfig.classify(seq)
        if verdict == rc.NEW:
            self._reconfig.remember(seq, kind, result)
        elif verdict == rc.RETRANSMIT:
            result = cached
        else:
            result = RESULT_BAD_SEQUENCE
        responses.append(ReconfigResponse(seq, result))

    def _on_peer_out_reset(self, p: OutgoingSsnResetRequest, responses: list[Param]) -> None:
        """§5.2.2: the peer resets its outgoing streams (our inbound ones) after its Last Assigned TSN."""
        rcfg = self._reconfig
        seq = p.request_seq
        verdict, cached = rcfg.classify(seq)
        if verdict == rc.BAD:
            responses.append(ReconfigResponse(seq, RESULT_BAD_SEQUENCE))
            return
        if verdict == rc.RETRANSMIT:
            responses.append(ReconfigResponse(seq, cached))  # "In progress" while still deferred
            return
        done = rcfg.answer_in(p.response_seq)  # it answers our Incoming SSN Reset Request, if that is in flight
        if done is not None:
            self._after_answer(done, RESULT_PERFORMED)
        rx = self._rx
        streams = p.streams
        inbound = self.inbound_streams
        if any(sid >= inbound for sid in streams):
            result = RESULT_DENIED
        else:
            u = rx.unwrap(p.last_tsn)
            if u <= rx.cum:
                self._reset_inbound(streams)
                result = RESULT_PERFORMED
            elif u - rx.cum > MAX_AHEAD or len(rcfg.deferred) >= rc.MAX_DEFERRED:
                result = RESULT_DENIED  # further than an honest sender can be
            else:
                rcfg.deferred.append(rc.Deferred(u, frozenset(streams) if streams else None, seq))
                self._holding = self._rx_special = True
                result = RESULT_IN_PROGRESS
        rcfg.remember(seq, rc.OUT, result)
        responses.append(ReconfigResponse(seq, result))

    def _on_peer_in_reset(self, p: IncomingSsnResetRequest, responses: list[Param]) -> None:
        """§5.2.3: the peer asks us to reset our outgoing streams: their unsent messages are dropped (the peer wants
        no more of them) and our Outgoing SSN Reset Request follows, the implicit answer; "Success - Performed"
        answers at once as well, so a requester need not retransmit while the streams' last data leaves."""
        rcfg = self._reconfig
        seq = p.request_seq
        verdict, cached = rcfg.classify(seq)
        if verdict != rc.NEW:
            responses.append(ReconfigResponse(seq, cached if verdict == rc.RETRANSMIT else RESULT_BAD_SEQUENCE))
            return
        flags = self._sflags
        streams = p.streams or sorted(s for s, f in flags.items() if f & OUT_OPEN and s < self.outbound_streams)
        if any(sid >= self.outbound_streams for sid in streams):
            result = RESULT_DENIED
        else:
            todo = [sid for sid in streams if not flags.get(sid, 0) & OUT_RESETTING]
            result = RESULT_PERFORMED if todo else RESULT_NOTHING_TO_DO
            for sid in todo:
                self._reset_out(sid, True, self._finals.pop(sid, None), seq)
            if todo:  # a stream whose reset is under way already changes nothing, and is not reported
                self._events.append(ev.StreamResetRequested(todo))
        rcfg.remember(seq, rc.IN, result)
        responses.append(ReconfigResponse(seq, result))

    def _on_peer_add_out(self, p: AddOutgoingStreamsRequest, responses: list[Param]) -> None:
        """§5.2.5: the peer adds outgoing streams, our inbound ones, within what we offered (``max_instreams``)."""
        rcfg = self._reconfig
        seq = p.request_seq
        verdict, cached = rcfg.classify(seq)
        if verdict != rc.NEW:
            responses.append(ReconfigResponse(seq, cached if verdict == rc.RETRANSMIT else RESULT_BAD_SEQUENCE))
            return
        done = rcfg.answer_add_in()
        if done is not None:
            self._after_answer(done, RESULT_PERFORMED)
        total = self.inbound_streams + p.count
        if p.count == 0 or total > min(self.config.max_instreams, 0xFFFF):
            result = RESULT_DENIED
        else:
            self.inbound_streams = total
            self._reasm.grow(total)
            self._events.append(ev.StreamsAdded(0, p.count, self.outbound_streams, total))
            result = RESULT_PERFORMED
        rcfg.remember(seq, rc.ADD_OUT, result)
        responses.append(ReconfigResponse(seq, result))

    def _on_peer_add_in(self, p: AddIncomingStreamsRequest, responses: list[Param]) -> None:
        """§5.2.6: the peer would take more streams from us: we ask for them (our Add Outgoing Streams Request is
        the answer)."""
        rcfg = self._reconfig
        seq = p.request_seq
        verdict, cached = rcfg.classify(seq)
        if verdict != rc.NEW:
            if verdict == rc.BAD or cached != RESULT_PERFORMED:
                responses.append(ReconfigResponse(seq, cached if verdict == rc.RETRANSMIT else RESULT_BAD_SEQUENCE))
            return
        if p.count == 0 or self.can_add_streams() < p.count:
            rcfg.remember(seq, rc.ADD_IN, RESULT_DENIED)
            responses.append(ReconfigResponse(seq, RESULT_DENIED))
            return
        rcfg.add_out += p.count
        self._reconf_work = True
        rcfg.remember(seq, rc.ADD_IN, RESULT_PERFORMED)

    def _on_reconfig_response(self, p: ReconfigResponse, now: float) -> None:
        rcfg = self._reconfig
        if rcfg.inflight is not None and any(part.seq == p.response_seq for part in rcfg.inflight.parts):
            self._error_count = 0  # the peer answered what we sent: the path works, as a HEARTBEAT-ACK says
        part = rcfg.answer(p.response_seq, p.result)
        if part is None:
            if p.result == RESULT_IN_PROGRESS and rcfg.inflight is not None and rcfg.inflight.in_progress:
                self._t_reconf = now + self._rtt.rto  # ask again an RTO from now, no loss counted
            return
        if p.result == RESULT_ALREADY_IN_PROGRESS and rcfg.retry_later(part, now, self._rtt.rto):
            self._reconf_work = True
        else:
            self._after_answer(part, p.result)
        if rcfg.inflight is None:
            # nothing in flight: no timer, unless a refused request is to be asked again later
            self._t_reconf = rcfg.retry_at if rcfg.wanted and rcfg.retry_at > now else None
            self._reconf_work = self._reconf_work or rcfg.wanted
            if self.state != ESTABLISHED:
                self._check_shutdown(now)

    def _after_answer(self, part: rc.Part, result: int) -> None:
        """One of our requests is answered for good."""
        ok = result in (RESULT_PERFORMED, RESULT_NOTHING_TO_DO)
        stats = self.stats
        kind = part.kind
        if kind == rc.OUT:
            queue, flags = self._queue, self._sflags
            for sid in part.streams:
                f = flags.get(sid, 0) & ~OUT_RESETTING
                if ok:
                    f &= ~OUT_OPEN
                    if queue.paused_on(sid):
                        f |= OUT_OPEN  # messages sent meanwhile: a new use of the stream starts at once
                queue.resume(sid, ok)
                self._set_flags(sid, f)
            if ok:
                self._events.append(ev.OutgoingStreamsReset(list(part.streams)))
            else:
                self._events.append(ev.StreamResetFailed(list(part.streams), rc.describe_result(result)))
        elif kind == rc.IN:
            if not ok:
                self._events.append(ev.StreamResetFailed(list(part.streams), rc.describe_result(result), True))
        elif kind == rc.ADD_OUT:
            if ok:
                self.outbound_streams += part.count
                self._queue.set_streams(self.outbound_streams)
                self._events.append(ev.StreamsAdded(part.count, 0, self.outbound_streams, self.inbound_streams))
            else:
                stats["add_streams_refused"] = stats.get("add_streams_refused", 0) + 1
        elif kind == rc.ADD_IN and not ok:
            stats["add_streams_refused"] = stats.get("add_streams_refused", 0) + 1
        if not ok:
            stats["reconfig_refused"] = stats.get("reconfig_refused", 0) + 1

    def _set_flags(self, sid: int, f: int) -> None:
        """Store a stream's new flags; when no direction is in use any more, its id is free again."""
        flags = self._sflags
        if f:
            flags[sid] = f
        elif flags.pop(sid, None) is not None and not self._queue.is_paused(sid):
            self._events.append(ev.StreamClosed(sid))

    def _reset_inbound(self, streams: list[int]) -> None:
        """The peer's reset of ``streams`` (all when empty) is carried out: everything it sent before is
        delivered, so they start over at SSN 0."""
        flags = self._sflags
        if not streams:
            reasm = self._reasm
            streams = [
                s for s in range(self.inbound_streams) if flags.get(s, 0) & IN_OPEN or reasm.opened[s] or reasm.used(s)
            ]
        self._reasm.reset_streams(streams)
        self._events.append(ev.StreamReset(list(streams)))
        for sid in streams:
            f = flags.get(sid)
            if f is not None and f & IN_OPEN:
                self._set_flags(sid, f & ~IN_OPEN)
        self.stats["streams_reset_by_peer"] = self.stats.get("streams_reset_by_peer", 0) + len(streams)

    @property
    def announce_streams(self) -> bool:
        """Emit ``StreamOpened`` on the peer's first chunk on a stream since its last reset (ex_sctp's
        ``stream_opened``). Off by default: most users learn of a stream from its first ``DataReceived``."""
        return self._announce

    @announce_streams.setter
    def announce_streams(self, on: bool) -> None:
        self._announce = on
        self._rx_special = self._holding or on

    def _special_chunk(self, u: int, c: DataChunk) -> bool:
        """A new chunk while a deferred reset waits or streams are announced: True when it is held."""
        sid = c.stream_id
        if self._holding and self._reconfig.holds(u, sid):
            self._hold(u, c)  # after a reset the peer asked for and we cannot perform yet (RFC 6525 §5.2.2 E2)
            return True
        if self._announce:
            opened = self._reasm.opened
            if not opened[sid]:
                opened[sid] = 1
                self._events.append(ev.StreamOpened(sid))
        return False

    def _hold(self, u: int, c: DataChunk) -> None:
        reasm = self._reasm
        cost = len(c.data) + CHUNK_COST
        reasm.held += cost
        reasm.assembling += cost
        self._held.append((u, c))
        self.stats["held_for_reset"] = self.stats.get("held_for_reset", 0) + 1

    def _perform_deferred(self) -> None:
        """The cumulative TSN reached deferred resets' Last Assigned TSNs: carry them out, say so to the peer at
        once, and deliver what waited (in TSN order, each held again if another reset still covers it)."""
        rcfg, rx = self._reconfig, self._rx
        while rcfg.deferred and rcfg.deferred[0].last <= rx.cum:
            d = rcfg.deferred.pop(0)
            self._reset_inbound(sorted(d.streams) if d.streams is not None else [])
            rcfg.update(d.seq, RESULT_PERFORMED)
            self._ctrl.append(ReconfigChunk([ReconfigResponse(d.seq, RESULT_PERFORMED)]).serialize())
        self._holding = bool(rcfg.deferred)
        self._rx_special = self._holding or self._announce
        held, self._held = self._held, []
        reasm = self._reasm
        for u, c in sorted(held, key=lambda item: item[0]):
            cost = len(c.data) + CHUNK_COST
            reasm.held -= cost
            reasm.assembling -= cost
            self._redeliver(u, c)
            if self.state == CLOSED:
                return

    def _redeliver(self, u: int, c: DataChunk) -> None:
        """A held chunk's turn: what ``_on_data`` does once a chunk is in, minus the TSN bookkeeping done then."""
        if self._rx_special and self._special_chunk(u, c):
            return
        reasm = self._reasm
        if c.beginning and c.ending:
            reasm.message(c)
            return
        try:
            reasm.fragment(u, c)
        except BadFragments:
            self._abort_with(protocol_violation_cause(b"fragments of one message disagree"), "bad fragments")

    def _reconf_poll(self, now: float) -> bytes:
        """Our next RE-CONFIG request, when one is ready and none is in flight (b"" otherwise)."""
        rcfg = self._reconfig
        if rcfg.inflight is not None:
            return b""
        if not rcfg.wanted:
            self._reconf_work = False
            return b""
        out = self._out
        wire = rcfg.build(now, (out.next_tsn - 1) & MASK, out.cum_acked)
        if wire is None:
            return b""
        self.stats["reconfig_sent"] = self.stats.get("reconfig_sent", 0) + 1
        self._t_reconf = now + self._rtt.rto
        self._reconf_work = rcfg.wanted
        return wire

    def _on_reconf_timer(self, now: float) -> None:
        """Our request went unanswered for an RTO (a loss, counted as T3's are), or the peer said "In progress"
        an RTO ago (a retry): send it again, unchanged."""
        self._t_reconf = None
        req = self._reconfig.inflight
        if req is None or self.state not in _DATA_FLOWS:
            self._reconf_work = self._reconfig.wanted  # a retry after "request already in progress" is due
            return
        if req.in_progress:
            req.in_progress = False
        else:
            self._error_count += 1
            if self._error_count > self.config.asocmaxrxt:
                self._lost()
                return
            self._rtt.backoff()
            self.stats["reconfig_retransmits"] = self.stats.get("reconfig_retransmits", 0) + 1
        self._ctrl.append(req.wire)
        self._t_reconf = now + self._rtt.rto

    # -- heartbeats -----------------------------------------------------------------------------------------

    def _on_hb_timer(self, now: float) -> None:
        if self.state not in _DATA_FLOWS:
            self._t_hb = None
            return
        heartbeat, rtt = self._heartbeat, self._rtt
        if heartbeat.nonce is not None:  # the last probe went unanswered (§8.3)
            self._error_count += 1
            rtt.backoff()
            if self._error_count > self.config.asocmaxrxt:
                self._lost()
                return
        self._ctrl.append(heartbeat.probe(now))
        self._t_hb = now + rtt.rto

    def _on_heartbeat_ack(self, info: bytes, now: float) -> None:
        sample = self._heartbeat.acked(info, now)
        if sample is None:
            return
        self._error_count = 0
        self._rtt.sample(sample)
        if self.config.hbinterval and self.state in _DATA_FLOWS:
            self._t_hb = self._heartbeat.due(now, self._rtt.rto)

    # -- closing --------------------------------------------------------------------------------------------

    def _check_shutdown(self, now: float) -> None:
        state = self.state
        if self._queue or len(self._out) or self._queue.paused or self._reconfig.busy:
            return
        if state == SHUTDOWN_PENDING:
            self.state = SHUTDOWN_SENT
            self._ctrl.append(ShutdownChunk(self._rx.cum_tsn).serialize())
            self._t2 = now + self._rtt.rto
            self._t5 = now + 5 * self.config.rto_max / 1000.0
            self._t3 = None
        elif state == SHUTDOWN_RECEIVED:
            self.state = SHUTDOWN_ACK_SENT
            self._ctrl.append(ShutdownAckChunk().serialize())
            self._t2 = now + self._rtt.rto
            self._t3 = None

    def _on_shutdown(self, cum: int, now: float) -> None:
        state = self.state
        if state not in _DATA_FLOWS:
            return
        self._process_ack(cum, None, [], now)
        if self.state == CLOSED:
            return
        if state in (ESTABLISHED, SHUTDOWN_PENDING):
            self.state = SHUTDOWN_RECEIVED
            self._events.append(ev.ShutdownReceived())
            self._check_shutdown(now)
        elif state == SHUTDOWN_SENT:
            self.state = SHUTDOWN_ACK_SENT
            self._ctrl.append(ShutdownAckChunk().serialize())
            self._t2 = now + self._rtt.rto

    def _on_shutdown_ack(self, vtag: int, now: float) -> None:
        if self.state in (SHUTDOWN_SENT, SHUTDOWN_ACK_SENT):
            self._raw.append(
                serialize_packet(self.local_port, self.remote_port, self.peer_vtag, [ShutdownCompleteChunk()])
            )
            self._finish(None)
        elif self.state in (COOKIE_WAIT, COOKIE_ECHOED):
            # §8.5.1 E: treat as out of the blue
            self._raw.append(
                serialize_packet(self.local_port, self.remote_port, vtag, [ShutdownCompleteChunk(t_bit=True)])
            )

    def _on_t2(self, now: float) -> None:
        if self.state not in (SHUTDOWN_SENT, SHUTDOWN_ACK_SENT):
            return
        self._error_count += 1
        if self._error_count > self.config.asocmaxrxt:
            self._lost()
            return
        self._rtt.backoff()
        if self.state == SHUTDOWN_SENT:
            self._ctrl.append(ShutdownChunk(self._rx.cum_tsn).serialize())
        else:
            self._ctrl.append(ShutdownAckChunk().serialize())
        self._t2 = now + self._rtt.rto

    def _lost(self) -> None:
        self._abort_with(protocol_violation_cause(b"communication lost"), "communication lost", send_cause=False)

    def _abort_with(self, cause: ErrorCause, reason: str, *, send_cause: bool = True) -> None:
        """We end the association because of a protocol problem: ABORT the peer and report why."""
        if self.state == CLOSED:
            return
        causes = [cause] if send_cause else []
        self._raw.append(serialize_packet(self.local_port, self.remote_port, self.peer_vtag, [AbortChunk(causes)]))
        self._finish(ev.AssociationAborted(reason, [cause]))

    def _finish(self, event: ev.Event | None) -> None:
        if self._closed:
            return
        self._closed = True
        if self._on_hold:  # refused before the application took it: nothing was delivered
            self._on_hold = False
            self._events.clear()
        self.state = CLOSED
        self._t1 = self._t2 = self._t3 = self._t5 = self._t_sack = self._t_hb = self._t_autoclose = None
        self._t_reconf = None
        self._reconf_work = False
        self._ctrl = []
        self._need_sack = False
        if event is not None:
            self._events.append(event)
        self._events.append(ev.AssociationClosed())

    def __repr__(self) -> str:
        return f"<Association {self.peer_addr} {self.local_port}->{self.remote_port} {self.state}>"
