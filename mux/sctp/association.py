"""One SCTP association (RFC 9260), sans-IO: packets and ``now`` in, packets, timers and events out.

The pump methods carry aioquic's ``QuicConnection`` names so one UDP driver serves QUIC and SCTP.
The server side is built by the endpoint from a valid COOKIE-ECHO (``from_cookie``); the client side is
created by ``Endpoint.connect`` and starts with ``connect(now)``.

This module is the state machine (establishment, shutdown, abort) and the API; the parts do the work:

* ``rx.dispatch``: a received packet's chunks, each handed to the part whose job it is; ``timers``: the earliest
  deadline and what each timer does; ``status``: ``#sctp_status{}`` and the counters; ``tx.assembly``: the
  packets of one round, from what the parts have ready.

* ``handshake``: INIT, COOKIE-ECHO and T1, a stale cookie, collisions and the peer's restart.
* ``rx.tracker``: which TSNs came, and the SACK that says so; ``rx.reassembly`` (DATA) or ``rx.interleaved``
  (I-DATA, RFC 8260): the messages they make, delivered in order per stream, and what holding them costs (our
  advertised window is what is left).
* ``tx.scheduler``: what the application queued, per stream, and the stream scheduler that picks the next chunk
  (with I-DATA, streams interleave chunk by chunk); ``tx.outstanding``: what is in flight; ``tx.retransmission``:
  what SACKs and T3 do to it, and PR-SCTP's abandoning (RFC 3758; with I-DATA by message); ``tx.rack``: RACK-TLP
  (RFC 8985), losses found by time and tail loss probes, on the ``_t_loss`` timer; ``tx.congestion``: how much may
  be in flight; ``tx.rtt``: the retransmission timeout.
* ``heartbeat``: probes of an idle path; ``shutdown``: the graceful close.
* ``streams``: what each stream id is used for, and RE-CONFIG (RFC 6525) applied to them, with ``reconfig``
  keeping the protocol's bookkeeping: resetting and adding streams, both ways.

The parts that work on the association (handshake, streams, retransmission, shutdown) get it as their context,
as dcsctp's handlers get their socket's: the association owns the shared state, each part its own.
"""

from __future__ import annotations

import random
from typing import Any

from mux.sctp import cookie as ck
from mux.sctp import events as ev
from mux.sctp import extensions as ext
from mux.sctp import reconfig as rc
from mux.sctp.chunks import (
    AbortChunk,
    CookieAckChunk,
    DataChunk,
    IDataChunk,
    IForwardTsnChunk,
    SackChunk,
)
from mux.sctp.config import SctpConfig
from mux.sctp.entropy import ENTROPY
from mux.sctp.handshake import Handshake
from mux.sctp.heartbeat import Heartbeat
from mux.sctp.packet import parse_packet, serialize_packet
from mux.sctp.params import (
    ErrorCause,
    ParseError,
    protocol_violation_cause,
    user_abort_cause,
)
from mux.sctp.paths import Paths
from mux.sctp.pmtud import SctpPmtud
from mux.sctp.rx.dispatch import receive_packet
from mux.sctp.rx.interleaved import InterleavedReassembly
from mux.sctp.rx.reassembly import MESSAGE_COST, Reassembly
from mux.sctp.rx.receiver import Receiver
from mux.sctp.rx.tracker import DataTracker
from mux.sctp.shutdown import Shutdown
from mux.sctp.state import (
    CAN_SEND,
    CLOSED,
    COOKIE_ECHOED,
    COOKIE_WAIT,
    DATA_FLOWS,
    ESTABLISHED,
    SHUTDOWN_ACK_SENT,
    SHUTDOWN_PENDING,
    BufferFull,
    SctpError,
)
from mux.sctp.status import Counts, status
from mux.sctp.streams import OUT_OPEN, Streams
from mux.sctp.timers import handle_timer, next_timer
from mux.sctp.tx.assembly import assemble
from mux.sctp.tx.congestion import Congestion
from mux.sctp.tx.outstanding import Outstanding
from mux.sctp.tx.retransmission import Retransmission
from mux.sctp.tx.rtt import RttEstimator
from mux.sctp.tx.schedulers import make_scheduler
from mux.sctp.tx.send_queue import DATAGRAMS

Addr = tuple[Any, ...]

MASK = 0xFFFFFFFF

#: bytes charged per queued or unacknowledged chunk on top of its payload: the ``OutChunk`` record and its cached
#: encoding's header (measured with tracemalloc, tests/test_sctp_rx.py)
OUT_COST = 256


class Association:
    #: slotted: an idle association's attributes cost a fixed array instead of a dict (about 1 KB less each)
    __slots__ = (
        "_batch_sacks",
        "_blocked",
        "_budget",
        "_cc",
        "_closed",
        "_ctrl",
        "_data_kind",
        "_data_packets",
        "_error_count",
        "_ev_head",
        "_events",
        "_fwd_due",
        "_handshake",
        "_hdr",
        "_heartbeat",
        "_initial_tsn",
        "_last_activity",
        "_last_data",
        "_mtu",
        "_need_sack",
        "_offered",
        "_on_hold",
        "_out",
        "_paths",
        "_peer_arwnd",
        "_peer_initial_tsn",
        "_pmtud",
        "_pmtud_max",
        "_probing",
        "_queue",
        "_raw",
        "_reasm",
        "_recbuf",
        "_receiver",
        "_reconf_work",
        "_reconfig",
        "_retx",
        "_rng",
        "_rtt",
        "_rtx_to",
        "_rwnd_sent",
        "_rx",
        "_rx_special",
        "_sack_now",
        "_sack_to",
        "_sack_urgent",
        "_sflags",
        "_shutdown",
        "_stalled_below",
        "_stream_config",
        "_streams",
        "_t1",
        "_t2",
        "_t3",
        "_t5",
        "_t_autoclose",
        "_t_hb",
        "_t_loss",
        "_t_reconf",
        "_t_sack",
        "_to_paths",
        "_update_step",
        "config",
        "features",
        "fragmentation_point",
        "inbound_streams",
        "local_port",
        "local_vtag",
        "outbound_streams",
        "peer_addr",
        "peer_vtag",
        "remote_port",
        "state",
        "stats",
    )

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
        self._rng = rng or ENTROPY
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
        #: room for chunks in one packet: path MTU minus IP, UDP (RFC 6951; none on IP) and the SCTP common header
        self._budget = config.pmtu - ip_overhead - (8 if config.encapsulation == "udp" else 0) - 12
        # cut at I-DATA's size whenever we offer it: messages queued before the handshake ends must fit either way
        frag = self._budget - (20 if self._offered & ext.IDATA else 16)
        if config.maxseg:
            frag = min(frag, config.maxseg)
        self.fragmentation_point = max(frag & ~3, 4)
        self._mtu = self._budget + 12  # the SCTP packet size congestion control counts in
        #: what the application has yet to take, from ``_ev_head`` on: a list (56 bytes empty, where a deque costs
        #: 760 even empty), emptied once taken
        self._events: list[ev.Event] = []
        self._ev_head = 0
        self._ctrl: list[bytes] = []  # control chunks for the next packet (peer's tag)
        self._raw: list[bytes] = []  # whole packets with their own tag (INIT, T-bit replies, ABORT)

        # send side: what waits (``_queue``), what is in flight (``_out``), how much may be (``_cc``)
        self._initial_tsn = self._rng.randrange(0, 1 << 32)
        self._queue = make_scheduler(config.scheduler, config.num_ostreams, self.fragmentation_point)
        self._out = Outstanding(self._initial_tsn)
        self._cc = Congestion(self._mtu)
        self._peer_arwnd = 0
        self._blocked = False
        #: PR-SCTP: a FORWARD-TSN is due (``Retransmission`` builds it)
        self._fwd_due = False
        self._retx = Retransmission(self)
        self._peer_initial_tsn = 0
        self._reconfig = rc.Reconfig(self._initial_tsn, 0)
        #: a request of ours waits to be built (checked on every packet assembly while set)
        self._reconf_work = False
        #: a deferred reset holds data, or streams are announced: the one test the receive path makes for either
        self._rx_special = False
        self._streams = Streams(self)
        #: per outbound stream: (ordered, reliability, param), ex_sctp's configure_stream (``Streams.config``, which
        #: ``send`` looks at without a call)
        self._stream_config = self._streams.config
        #: RFC 6525: per stream id in use, ``OUT_OPEN | OUT_RESETTING | IN_OPEN`` (``Streams.flags``, which
        #: ``send`` updates without a call)
        self._sflags = self._streams.flags

        # timers and error counting
        self._rtt = RttEstimator(config.rto_initial / 1000.0, config.rto_min / 1000.0, config.rto_max / 1000.0)
        self._heartbeat = Heartbeat(self, self._rng)
        self._receiver = Receiver(self)
        #: the peer's addresses (``paths``): ``_rtt`` and ``_cc`` above are its primary path's
        self._paths = Paths(self, peer_addr)
        #: packets for paths other than the primary (their HEARTBEATs and HEARTBEAT-ACKs), with their address
        self._to_paths: list[tuple[bytes, Addr]] = []
        #: path MTU discovery (``pmtud``), once begun (``_start_pmtud``); until then ``_pmtud_max`` is its ceiling
        #: (0: off)
        self._pmtud: SctpPmtud | None = None
        self._pmtud_max = config.maximum_mtu if config.pmtud and config.maximum_mtu > config.pmtu else 0
        #: where the latest DATA came from: its SACK goes back there (§6.4)
        self._sack_to: Addr = peer_addr
        #: after a T3, the next retransmissions go to this other address of the peer's (§6.4.1), once
        self._rtx_to: Addr | None = None
        self._error_count = 0
        self._t1: float | None = None
        self._t2: float | None = None
        self._t3: float | None = None
        self._t5: float | None = None
        self._t_sack: float | None = None
        self._t_hb: float | None = None
        self._t_autoclose: float | None = None
        self._t_reconf: float | None = None
        #: RACK's reordering timer or the tail loss probe, whichever is due first (``tx.rack``)
        self._t_loss: float | None = None
        #: a tail loss probe sends queued data: Nagle stands aside for one round
        self._probing = False
        self._last_data = 0.0  # when user data last left or arrived (autoclose counts from here)
        self._last_activity = 0.0
        self._handshake = Handshake(self)
        self._shutdown = Shutdown(self)

        # receive side: which TSNs came (``_rx``) and the messages they make (``_reasm``, built below)
        self._rx = DataTracker(0)
        self._need_sack = False
        self._recbuf = config.recbuf
        self._rwnd_sent = config.recbuf  # the window our last SACK advertised
        #: below this advertised window the peer may be stalled: a window update (``consumed``) is worth a SACK
        self._stalled_below = min(2 * self._mtu, config.recbuf // 4)
        self._update_step = min(self._mtu, config.recbuf // 4)
        self._sack_now = True  # §5.1: the first DATA chunk is acknowledged at once
        #: the SACK due is owed at once (§6.7: out of order, a gap filled, a duplicate, the I bit): if another packet
        #: with data arrives before it is built, it leaves first, as it stood, so each such packet gets its own
        self._sack_urgent = False
        self._data_packets = 0
        #: §6.2's every-second-packet SACKs sent early since the driver last asked for packets (one read batch)
        self._batch_sacks = 0

        #: counters, each there from its first count (``info`` shows ``STATS`` at 0 until then)
        self.stats: dict[str, int] = Counts()
        self._reasm: Reassembly | InterleavedReassembly = Reassembly(config.max_instreams, self._events, self.stats)
        #: what the handshake agreed (``_adopt_features``): the data chunk type and its header size
        self._data_kind: type[DataChunk | IDataChunk] = DataChunk
        self._hdr = 16

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
        # the cookie was made as our INIT-ACK left: a first RTT sample, unless it is long enough to include the
        # peer's wait to retransmit a COOKIE-ECHO (at least RTO.Min), which would make it ambiguous (Karn)
        rtt = now - cookie.created
        if 0.0 <= rtt < config.rto_min / 1000.0:
            assoc._rtt.sample(rtt)
        assoc._ctrl.append(CookieAckChunk().serialize())
        assoc._establish(now)
        if hold:
            assoc._on_hold = True
            assoc._t_hb = None
        return assoc

    @property
    def rtt(self) -> RttEstimator:
        """The path's RTT estimate (SRTT, RTTVAR, RTO), read-only to callers."""
        return self._rtt

    @property
    def on_hold(self) -> bool:
        return self._on_hold

    def proceed(self, now: float) -> None:
        """Release a held association: send the COOKIE-ACK, deliver the events."""
        if self._on_hold:
            self._on_hold = False
            if self.config.hbinterval and self.state in DATA_FLOWS:
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

    def connect(self, now: float, *, rtt_hint: tuple[float, float] | None = None) -> None:
        """Client side: send INIT and wait for INIT-ACK (T1-init retransmits it). ``rtt_hint``, (SRTT, RTTVAR) in
        seconds from a recent association to the same peer, times the first T1-init instead of RTO.Initial."""
        self._handshake.connect(now, rtt_hint)

    # -- user commands --------------------------------------------------------------------------------------

    def configure_stream(
        self, stream_id: int, *, ordered: bool = True, reliability: str = "reliable", param: int = 0
    ) -> None:
        """A stream's defaults for ``send``, as ex_sctp's configure_stream: see ``Streams.configure``."""
        self._streams.configure(stream_id, ordered, reliability, param)

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
        """Queue one user message; it leaves as one or more DATA (or I-DATA) chunks. Returns ``buffered_amount()``.

        ``unordered``, ``reliability`` and ``param`` default to the stream's (``configure_stream``); ``now``
        dates a ``timed`` message.
        """
        if self.state not in CAN_SEND:
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
            self._streams.push(stream_id, data, ppid, unordered, reliability, param, now)
        self.stats["messages_sent"] += 1
        if self._pmtud_max and queue.bytes > self.fragmentation_point:
            self._start_pmtud()
        buffered = queue.bytes + OUT_COST * queue.chunks + sent
        if buffered > sndbuf // 2:
            self._blocked = True
        return buffered

    def set_interface_mtu(self, mtu: int | None) -> None:
        """The MTU of the interface toward the peer (the driver asks the kernel): the search's ceiling."""
        if mtu is None:
            return
        if self._pmtud is not None:
            self._pmtud.set_interface_mtu(mtu)
        elif self._pmtud_max:
            self._pmtud_max = min(self._pmtud_max, mtu) if mtu > self.config.pmtu else 0

    def _start_pmtud(self) -> None:
        """More waits than one packet carries, so a larger packet would pay: the search begins. An idle association,
        or one of small messages, never probes nor holds the search's state (RFC 8899 leaves when to probe to
        the packetization layer)."""
        pm = self._pmtud = SctpPmtud(self)
        pm.set_interface_mtu(self._pmtud_max)
        self._pmtud_max = 0

    def send_datagram(self, data: bytes, *, ppid: int, now: float = 0.0) -> None:
        """An unreliable message: unordered on stream 0, never retransmitted (PR-SCTP ``rexmit`` 0), queued in a
        lane of its own so it takes its turn with the streams instead of waiting behind stream 0's messages."""
        if self.state not in CAN_SEND:
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

    def set_priority(self, stream_id: int, priority: int) -> None:
        """quicer's stream ``priority``: 0..65535, higher first, 0x7FFF by default. The ``prio`` scheduler sends
        strictly by it, ``wfq`` shares the bytes in proportion to priority + 1; ``rr`` and ``fcfs`` ignore it."""
        if not 0 <= stream_id < self.outbound_streams:
            raise SctpError(f"stream {stream_id} is not open: {self.outbound_streams} outbound streams")
        try:
            self._queue.set_priority(stream_id, priority)
        except ValueError as exc:
            raise SctpError(str(exc)) from None

    def priority(self, stream_id: int) -> int:
        return self._queue.priority(stream_id)

    # -- streams (RFC 6525; ex_sctp's open_stream / close_stream): see ``Streams`` --------------------------------

    def open_stream(
        self, stream_id: int | None = None, *, expect_peer: bool = True, first: tuple[int, bytes] | None = None
    ) -> int:
        return self._streams.open_stream(stream_id, expect_peer, first)

    def claim_stream(self, stream_id: int, *, ours: bool = True, theirs: bool = True) -> None:
        self._streams.claim_stream(stream_id, ours, theirs)

    def stream_in_use(self, stream_id: int) -> bool:
        return self._streams.in_use(stream_id)

    def close_stream(self, stream_id: int, *, abort: bool = False, final: tuple[int, bytes] | None = None) -> None:
        self._streams.close_stream(stream_id, abort, final)

    def request_reset(self, stream_id: int, *, notice: tuple[int, bytes] | None = None) -> None:
        self._streams.request_reset(stream_id, notice)

    def final_message(self, stream_id: int, ppid: int, payload: bytes) -> None:
        self._streams.final_message(stream_id, ppid, payload)

    def add_streams(self, *, outgoing: int = 0, incoming: int = 0) -> None:
        self._streams.add_streams(outgoing, incoming)

    def can_add_streams(self) -> int:
        return self._streams.can_add_streams()

    @property
    def announce_streams(self) -> bool:
        """Emit ``StreamOpened`` on the peer's first chunk on a stream since its last reset (ex_sctp's
        ``stream_opened``). Off by default: most users learn of a stream from its first ``DataReceived``."""
        return self._streams.announce

    @announce_streams.setter
    def announce_streams(self, on: bool) -> None:
        self._streams.set_announce(on)

    def shutdown(self, now: float) -> None:
        """Graceful close: outstanding data is delivered first, then SHUTDOWN."""
        state = self.state
        if state in (COOKIE_WAIT, CLOSED):
            self._finish(None)
        elif state == COOKIE_ECHOED:
            self.abort("shutdown before the association was up")
        elif state == ESTABLISHED:
            self.state = SHUTDOWN_PENDING
            self._shutdown.check(now)

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
        if self._rwnd_sent >= self._stalled_below or self._need_sack or self.state not in DATA_FLOWS:
            return False
        if self._recbuf - reasm.held - self._rwnd_sent >= self._update_step:
            self._need_sack = True
            return True
        return False

    # -- pump -----------------------------------------------------------------------------------------------

    def set_primary(self, addr: Addr, now: float) -> bool:
        """gen_sctp's ``primary_addr``: send to the peer's address ``addr`` from now on, and come back to it after a
        failover. False when the peer has no such address. (Asking the peer to change its own primary, gen_sctp's
        ``set_peer_primary``, needs ASCONF, RFC 5061, which mux does not speak.)"""
        return self._paths.set_primary(addr, now)

    def next_event(self) -> ev.Event | None:
        events = self._events
        if not events or self._on_hold:
            return None
        i = self._ev_head
        event = events[i]
        i += 1
        if i == len(events):
            events.clear()  # frees its array: an idle association holds an empty list
            i = 0
        self._ev_head = i
        return event

    #: the receive side's dispatcher, the timers and the status report are modules of their own
    #: (``rx.dispatch``, ``timers``, ``status``), bound here as methods
    receive_packet = receive_packet
    get_timer = next_timer
    handle_timer = handle_timer
    status = status

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Parse and process one packet addressed to this association (used without an endpoint)."""
        try:
            packet = parse_packet(data)
        except ParseError:
            return
        self.receive_packet(packet, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return assemble(self, now)

    # -- handshake: see ``Handshake`` -----------------------------------------------------------------------

    def handle_cookie_echo(self, cookie: ck.Cookie, now: float) -> str:
        """A valid COOKIE-ECHO for this existing association: §5.2.4 table 2. Returns the action taken.

        "restart" (A) is left to the endpoint, which resets us with ``restart``; "discard" (C) means nothing.
        """
        return self._handshake.on_cookie_echo(cookie, now)

    def restart(self, cookie: ck.Cookie, now: float) -> None:
        """The peer restarted (§5.2.4 A): rebuild the TCB under new tags, keep this association object."""
        self._handshake.restart(cookie, now)

    def _adopt_features(self) -> None:
        """Put the data path on what the handshake agreed: I-DATA or DATA (RFC 8260), I-FORWARD-TSN or FORWARD-TSN.
        With I-DATA the streams interleave, within a budget of half the peer's initial window for the messages in
        progress (``Scheduler.set_budget``), and the receiver refuses one message larger than its window."""
        features = self.features
        idata = bool(features & ext.IDATA)
        self._data_kind = IDataChunk if idata else DataChunk
        self._hdr = 20 if idata else 16
        self._queue.set_idata(idata)
        self._queue.set_budget(self._peer_arwnd // 2 if idata else 0)
        reasm = self._reasm
        if idata != (type(reasm) is InterleavedReassembly):
            events, stats, n = self._events, self.stats, self.inbound_streams
            fresh = InterleavedReassembly(n, events, stats, self._recbuf) if idata else Reassembly(n, events, stats)
            fresh.held = reasm.held - reasm.assembling  # what the application holds stays charged
            self._reasm = fresh

    def _forward_agreed(self, kind: type) -> bool:
        """PR-SCTP is agreed, and ``kind`` is its forward chunk: I-FORWARD-TSN with I-DATA, FORWARD-TSN without."""
        features = self.features
        return bool(features & ext.PRSCTP) and (kind is IForwardTsnChunk) == bool(features & ext.IDATA)

    def _establish(self, now: float) -> None:
        self.state = ESTABLISHED
        self._adopt_features()
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

    def _on_error(self, causes: list[ErrorCause], now: float) -> None:
        if not self._handshake.on_stale_cookie(causes, now):
            self._events.append(ev.PeerError(list(causes)))

    # -- acknowledgements -----------------------------------------------------------------------------------

    def _on_sack(self, s: SackChunk, now: float) -> None:
        if self.state not in DATA_FLOWS and self.state != SHUTDOWN_ACK_SENT:
            return
        self._retx.on_ack(s.cum_tsn, s.a_rwnd, s.gaps, now, s.duplicates)

    # -- closing --------------------------------------------------------------------------------------------

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
            self._ev_head = 0
        self.state = CLOSED
        self._t1 = self._t2 = self._t3 = self._t5 = self._t_sack = self._t_hb = self._t_autoclose = None
        self._t_reconf = self._t_loss = None
        self._reconf_work = False
        self._ctrl = []
        self._need_sack = False
        if event is not None:
            self._events.append(event)
        self._events.append(ev.AssociationClosed())

    def __repr__(self) -> str:
        return f"<Association {self.peer_addr} {self.local_port}->{self.remote_port} {self.state}>"
