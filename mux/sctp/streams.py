"""An association's streams (RFC 6525; ex_sctp's open_stream / close_stream), and the RE-CONFIG requests applied to
them: what each stream id is used for, resetting and adding streams both ways, and data held for a deferred reset.

``reconfig.Reconfig`` keeps the protocol's bookkeeping (request sequence numbers, what is in flight, the answers
given); this part decides what a request means for the streams and carries it out on the association's other parts
(pausing a stream's send queue, starting an inbound stream over, the events). It works on the association it belongs
to, as dcsctp's stream reset handler works on its socket's context: the association owns the shared parts (send
queue, tracker, reassembly, ``_reconfig``, events, timers) and this one the stream-level state.

**Streams.** Each stream id has two directions. Ours is in use from ``open_stream`` or its first message until the
peer performed its reset (``close_stream``); the peer's, from ``open_stream`` (when we expect it to answer on it) or
``claim_stream`` until the peer reset it. An id in use neither way is free: ``open_stream`` hands it out again, and
``StreamClosed`` says when one becomes free. Resetting a stream never reorders it: what was queued on it before
leaves first, with its old SSNs (MIDs with I-DATA); what is queued after waits, and starts at 0 once the peer has
performed the reset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mux.sctp import events as ev
from mux.sctp import extensions as ext
from mux.sctp import reconfig as rc
from mux.sctp.chunks import DataChunk, IDataChunk, ReconfigChunk
from mux.sctp.params import (
    RESULT_ALREADY_IN_PROGRESS,
    RESULT_BAD_SEQUENCE,
    RESULT_DENIED,
    RESULT_IN_PROGRESS,
    RESULT_NOTHING_TO_DO,
    RESULT_PERFORMED,
    AddIncomingStreamsRequest,
    AddOutgoingStreamsRequest,
    IncomingSsnResetRequest,
    OutgoingSsnResetRequest,
    Param,
    ParseError,
    ReconfigResponse,
    SsnTsnResetRequest,
    parse_reconfig_params,
    protocol_violation_cause,
)
from mux.sctp.rx.reassembly import CHUNK_COST, BadFragments
from mux.sctp.rx.tracker import MAX_AHEAD
from mux.sctp.state import CLOSED, DATA_FLOWS, ESTABLISHED, SctpError
from mux.sctp.tx.scheduler import DEFAULT_PRIORITY
from mux.sctp.tx.send_queue import CONTROL, OutChunk
from mux.sctp.unwritten import Unwritten

if TYPE_CHECKING:
    from mux.sctp.association import Association

MASK = 0xFFFFFFFF

#: what a stream id is used for, per direction (``Streams.flags``): our direction is in use, its reset is asked
#: for, and the peer's direction is in use (it sent, or we opened the stream expecting it to answer)
OUT_OPEN = 1
OUT_RESETTING = 2
IN_OPEN = 4

Chunk = DataChunk | IDataChunk
#: PR-SCTP policies (RFC 3758), as ex_sctp's configure_stream names them
RELIABILITY = ("reliable", "rexmit", "timed")
_RELIABLE = (True, "reliable", 0)


#: ``Streams.finals`` until the first: shared, read and popped but never written
_NO_FINALS: dict[int, tuple[int, bytes]] = Unwritten()


class Streams:
    __slots__ = ("a", "announce", "config", "finals", "flags", "held", "holding")

    def __init__(self, assoc: Association) -> None:
        self.a = assoc
        #: per stream id in use, ``OUT_OPEN | OUT_RESETTING | IN_OPEN``; free ids are absent (the association's
        #: ``_sflags`` is this dict: ``send`` marks a stream in use without a call)
        self.flags: dict[int, int] = {}
        #: per stream: the message to send last when the peer asks us to reset it (``final_message``)
        self.finals: dict[int, tuple[int, bytes]] = _NO_FINALS  # its own dict from the first (``final_message``)
        #: data held by a deferred reset of the peer's (RFC 6525 §5.2.2 E2): (unwrapped TSN, chunk)
        self.held: list[tuple[int, Chunk]] = []
        self.holding = False
        #: emit ``StreamOpened`` on the peer's first chunk on a stream since its last reset
        self.announce = False
        #: per outbound stream: (ordered, reliability, param), ex_sctp's configure_stream (the association's
        #: ``_stream_config``: ``send`` calls ``push`` only when it holds something or the message says otherwise)
        self.config: dict[int, tuple[bool, str, int]] = {}

    def clear(self) -> None:
        """The peer restarted: every stream is free, nothing is held."""
        self.flags.clear()
        self.finals = _NO_FINALS
        self.held = []
        self.holding = False
        a = self.a
        a._rx_special = self.announce
        a._reconf_work = False
        a._t_reconf = None

    # -- commands ---------------------------------------------------------------------------------------------------

    def configure(self, stream_id: int, ordered: bool, reliability: str, param: int) -> None:
        """A stream's defaults for ``send``, as ex_sctp's configure_stream: ordered or not, and its PR-SCTP policy.

        ``reliability`` is ``reliable`` (retransmit until acknowledged), ``rexmit`` (at most ``param``
        retransmissions) or ``timed`` (give up ``param`` ms after it was queued). Without PR-SCTP agreed with the
        peer, every message is reliable.
        """
        if reliability not in RELIABILITY:
            raise SctpError(f"reliability must be one of {', '.join(RELIABILITY)}, not {reliability!r}")
        if param < 0:
            raise SctpError(f"the reliability parameter must be >= 0, not {param}")
        if ordered and reliability == "reliable":
            self.config.pop(stream_id, None)
        else:
            self.config[stream_id] = (ordered, reliability, param)

    def push(
        self,
        stream_id: int,
        data: bytes,
        ppid: int,
        unordered: bool | None,
        reliability: str | None,
        param: int | None,
        now: float,
    ) -> None:
        """``send``'s message with a policy of its own or its stream's: queued with it."""
        ordered, mode, limit = self.config.get(stream_id, _RELIABLE)
        if unordered is None:
            unordered = not ordered
        if reliability is not None:
            if reliability not in RELIABILITY:
                raise SctpError(f"reliability must be one of {', '.join(RELIABILITY)}, not {reliability!r}")
            mode, limit = reliability, param if param is not None else 0
        max_rexmit, expires = -1, 0.0
        if self.a.features & ext.PRSCTP:
            if mode == "rexmit":
                max_rexmit = max(limit, 0)
            elif mode == "timed":
                expires = now + max(limit, 0) / 1000.0 or 1e-9
        self.a._queue.push(stream_id, data, ppid, unordered, max_rexmit, expires)

    def open_stream(self, stream_id: int | None, expect_peer: bool, first: tuple[int, bytes] | None) -> int:
        """Take a stream id for our use: ``stream_id``, or the lowest free one. With ``expect_peer`` the peer's
        direction counts as in use too, until the peer resets it: the id is not handed out again before both
        directions are over. ``first`` = (ppid, payload) is queued as its first message whatever ``sndbuf`` says
        (mux's one-way marker). Opening an id already in use is a no-op; one whose reset is under way is an
        error."""
        a = self.a
        flags = self.flags
        if stream_id is None:
            limit = a.outbound_streams
            stream_id = next((s for s in range(limit) if s not in flags and not a._queue.is_paused(s)), None)
            if stream_id is None:
                raise SctpError(f"all {limit} outbound streams are in use")
        elif not 0 <= stream_id < a.outbound_streams:
            raise SctpError(f"stream {stream_id} is not open: {a.outbound_streams} outbound streams")
        f = flags.get(stream_id, 0)
        if f & OUT_RESETTING:
            raise SctpError(f"stream {stream_id} is being reset")
        flags[stream_id] = f | OUT_OPEN | (IN_OPEN if expect_peer else 0)
        if first is not None:
            a._queue.push(stream_id, first[1], first[0], False)
        return stream_id

    def claim_stream(self, stream_id: int, ours: bool, theirs: bool) -> None:
        """The peer started using ``stream_id`` (its first message since its last reset): with ``theirs`` its
        direction is in use until it resets it, and with ``ours`` (a bidirectional stream) so is ours, until we
        reset it. A stream we opened expecting the peer's answer is ours already: nothing changes."""
        f = self.flags.get(stream_id, 0)
        if f & IN_OPEN:
            return
        if ours and not f & (OUT_OPEN | OUT_RESETTING):
            f |= OUT_OPEN
        if theirs:
            f |= IN_OPEN
        if f:
            self.flags[stream_id] = f

    def in_use(self, stream_id: int) -> bool:
        return stream_id in self.flags or self.a._queue.is_paused(stream_id)

    def close_stream(self, stream_id: int, abort: bool, final: tuple[int, bytes] | None) -> None:
        """Reset our outgoing ``stream_id`` (RFC 6525 Outgoing SSN Reset Request), as WebRTC closes a data channel:
        what was queued on it leaves first, then the reset. ``abort`` drops its unsent messages first (a message
        partly sent is finished); ``final`` = (ppid, payload) is one last message to send before the reset. Messages
        sent on it meanwhile wait, and start over at SSN 0 once the peer has performed the reset."""
        a = self.a
        if not a.features & ext.RECONFIG:
            raise SctpError("stream reset needs RE-CONFIG (RFC 6525), which the peer did not offer")
        if a.state not in DATA_FLOWS:
            raise SctpError(f"cannot reset a stream in state {a.state}")
        if not 0 <= stream_id < a.outbound_streams:
            raise SctpError(f"stream {stream_id} is not open: {a.outbound_streams} outbound streams")
        if self.flags.get(stream_id, 0) & OUT_RESETTING:
            return
        self.finals.pop(stream_id, None)
        self._reset_out(stream_id, abort, final)

    def _reset_out(
        self, stream_id: int, abort: bool, final: tuple[int, bytes] | None, response_seq: int | None = None
    ) -> None:
        a = self.a
        queue = a._queue
        if abort:
            dropped = queue.drop_stream(stream_id)
            if dropped:
                a.stats["reset_dropped_bytes"] = a.stats.get("reset_dropped_bytes", 0) + dropped
        if final is not None:
            queue.push(stream_id, final[1], final[0], False)
        self.flags[stream_id] = self.flags.get(stream_id, 0) | OUT_RESETTING
        a._reconfig.want_out(stream_id, queue.tail(stream_id), response_seq)
        queue.pause(stream_id)
        a._reconf_work = True

    def request_reset(self, stream_id: int, notice: tuple[int, bytes] | None) -> None:
        """Ask the peer to reset its outgoing ``stream_id`` (RFC 6525 Incoming SSN Reset Request: QUIC's
        STOP_SENDING). ``notice`` = (ppid, payload) is an unordered message the peer must have received before the
        request leaves (it goes aside from the stream's queue, and the request waits for its acknowledgement)."""
        a = self.a
        if not a.features & ext.RECONFIG:
            raise SctpError("stream reset needs RE-CONFIG (RFC 6525), which the peer did not offer")
        if a.state not in DATA_FLOWS:
            raise SctpError(f"cannot reset a stream in state {a.state}")
        if not 0 <= stream_id < a.inbound_streams:
            raise SctpError(f"stream {stream_id} is not open: {a.inbound_streams} inbound streams")
        chunk: OutChunk | None = None
        if notice is not None and stream_id < a.outbound_streams:
            a._queue.push(stream_id, notice[1], notice[0], True, lane=CONTROL)
            chunk = a._queue.last_in(CONTROL)
        a._reconfig.want_in(stream_id, chunk)
        a._reconf_work = True

    def final_message(self, stream_id: int, ppid: int, payload: bytes) -> None:
        """The message to send last on ``stream_id`` should the peer ask us to reset it (mux's code marker)."""
        if len(self.finals) < self.a.outbound_streams:
            if self.finals is _NO_FINALS:
                self.finals = {}
            self.finals[stream_id] = (ppid, payload)

    def add_streams(self, outgoing: int, incoming: int) -> None:
        """RFC 6525 Add Streams: ask for ``outgoing`` more outbound streams (the peer decides, up to what it is
        configured to take) and offer ``incoming`` more inbound ones (we ask the peer to open them), within the
        ``max_instreams`` we offered in INIT, as usrsctp does. ``StreamsAdded`` tells what came of it."""
        a = self.a
        if not a.features & ext.RECONFIG:
            raise SctpError("adding streams needs RE-CONFIG (RFC 6525), which the peer did not offer")
        if a.state not in DATA_FLOWS:
            raise SctpError(f"cannot add streams in state {a.state}")
        if outgoing < 0 or incoming < 0 or not (outgoing or incoming):
            raise SctpError("add at least one stream")
        if outgoing > self.can_add_streams():
            raise SctpError(f"at most {0xFFFF} outbound streams")
        rcfg = a._reconfig
        pending_in = rcfg.add_in + self._pending_adds(rc.ADD_IN)
        if a.inbound_streams + pending_in + incoming > min(a.config.max_instreams, 0xFFFF):
            raise SctpError(f"at most {a.config.max_instreams} inbound streams (initmsg.max_instreams)")
        rcfg.add_out += outgoing
        rcfg.add_in += incoming
        a._reconf_work = True

    def _pending_adds(self, kind: int) -> int:
        req = self.a._reconfig.inflight
        return sum(p.count for p in req.parts if p.kind == kind and not p.done) if req is not None else 0

    def can_add_streams(self) -> int:
        """How many more outbound streams we may ask for (0 without RE-CONFIG)."""
        a = self.a
        if not a.features & ext.RECONFIG or a.state != ESTABLISHED:
            return 0
        pending = a._reconfig.add_out + self._pending_adds(rc.ADD_OUT)
        return max(0, 0xFFFF - a.outbound_streams - pending)

    # -- the peer's RE-CONFIG -----------------------------------------------------------------------------------

    def on_reconfig(self, chunk: ReconfigChunk, now: float) -> None:
        a = self.a
        stats = a.stats
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
                self._on_response(p, now)  # type: ignore[arg-type]
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
            if a.state == CLOSED:
                return
        for i in range(0, len(responses), 2):
            a._ctrl.append(ReconfigChunk(responses[i : i + 2]).serialize())

    def _answer_simple(self, seq: int, kind: int, result: int, responses: list[Param]) -> None:
        rcfg = self.a._reconfig
        verdict, cached = rcfg.classify(seq)
        if verdict == rc.NEW:
            rcfg.remember(seq, kind, result)
        elif verdict == rc.RETRANSMIT:
            result = cached
        else:
            result = RESULT_BAD_SEQUENCE
        responses.append(ReconfigResponse(seq, result))

    def _on_peer_out_reset(self, p: OutgoingSsnResetRequest, responses: list[Param]) -> None:
        """§5.2.2: the peer resets its outgoing streams (our inbound ones) after its Last Assigned TSN."""
        a = self.a
        rcfg = a._reconfig
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
        rx = a._rx
        streams = p.streams
        if any(sid >= a.inbound_streams for sid in streams):
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
                self.holding = a._rx_special = True
                result = RESULT_IN_PROGRESS
        rcfg.remember(seq, rc.OUT, result)
        responses.append(ReconfigResponse(seq, result))

    def _on_peer_in_reset(self, p: IncomingSsnResetRequest, responses: list[Param]) -> None:
        """§5.2.3: the peer asks us to reset our outgoing streams: their unsent messages are dropped (the peer wants
        no more of them) and our Outgoing SSN Reset Request follows, the implicit answer; "Success - Performed"
        answers at once as well, so a requester need not retransmit while the streams' last data leaves."""
        a = self.a
        rcfg = a._reconfig
        seq = p.request_seq
        verdict, cached = rcfg.classify(seq)
        if verdict != rc.NEW:
            responses.append(ReconfigResponse(seq, cached if verdict == rc.RETRANSMIT else RESULT_BAD_SEQUENCE))
            return
        flags = self.flags
        streams = p.streams or sorted(s for s, f in flags.items() if f & OUT_OPEN and s < a.outbound_streams)
        if any(sid >= a.outbound_streams for sid in streams):
            result = RESULT_DENIED
        else:
            todo = [sid for sid in streams if not flags.get(sid, 0) & OUT_RESETTING]
            result = RESULT_PERFORMED if todo else RESULT_NOTHING_TO_DO
            for sid in todo:
                self._reset_out(sid, True, self.finals.pop(sid, None), seq)
            if todo:  # a stream whose reset is under way already changes nothing, and is not reported
                a._events.append(ev.StreamResetRequested(todo))
        rcfg.remember(seq, rc.IN, result)
        responses.append(ReconfigResponse(seq, result))

    def _on_peer_add_out(self, p: AddOutgoingStreamsRequest, responses: list[Param]) -> None:
        """§5.2.5: the peer adds outgoing streams, our inbound ones, within what we offered (``max_instreams``)."""
        a = self.a
        rcfg = a._reconfig
        seq = p.request_seq
        verdict, cached = rcfg.classify(seq)
        if verdict != rc.NEW:
            responses.append(ReconfigResponse(seq, cached if verdict == rc.RETRANSMIT else RESULT_BAD_SEQUENCE))
            return
        done = rcfg.answer_add_in()
        if done is not None:
            self._after_answer(done, RESULT_PERFORMED)
        total = a.inbound_streams + p.count
        if p.count == 0 or total > min(a.config.max_instreams, 0xFFFF):
            result = RESULT_DENIED
        else:
            a.inbound_streams = total
            a._reasm.grow(total)
            a._events.append(ev.StreamsAdded(0, p.count, a.outbound_streams, total))
            result = RESULT_PERFORMED
        rcfg.remember(seq, rc.ADD_OUT, result)
        responses.append(ReconfigResponse(seq, result))

    def _on_peer_add_in(self, p: AddIncomingStreamsRequest, responses: list[Param]) -> None:
        """§5.2.6: the peer would take more streams from us: we ask for them (our Add Outgoing Streams Request is
        the answer)."""
        a = self.a
        rcfg = a._reconfig
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
        a._reconf_work = True
        rcfg.remember(seq, rc.ADD_IN, RESULT_PERFORMED)

    def _on_response(self, p: ReconfigResponse, now: float) -> None:
        a = self.a
        rcfg = a._reconfig
        if rcfg.inflight is not None and any(part.seq == p.response_seq for part in rcfg.inflight.parts):
            a._error_count = 0  # the peer answered what we sent: the path works, as a HEARTBEAT-ACK says
        part = rcfg.answer(p.response_seq, p.result)
        if part is None:
            if p.result == RESULT_IN_PROGRESS and rcfg.inflight is not None and rcfg.inflight.in_progress:
                a._t_reconf = now + a._rtt.rto  # ask again an RTO from now, no loss counted
            return
        if p.result == RESULT_ALREADY_IN_PROGRESS and rcfg.retry_later(part, now, a._rtt.rto):
            a._reconf_work = True
        else:
            self._after_answer(part, p.result)
        if rcfg.inflight is None:
            # nothing in flight: no timer, unless a refused request is to be asked again later
            a._t_reconf = rcfg.retry_at if rcfg.wanted and rcfg.retry_at > now else None
            a._reconf_work = a._reconf_work or rcfg.wanted
            if a.state != ESTABLISHED:
                a._shutdown.check(now)

    def _after_answer(self, part: rc.Part, result: int) -> None:
        """One of our requests is answered for good."""
        a = self.a
        ok = result in (RESULT_PERFORMED, RESULT_NOTHING_TO_DO)
        stats = a.stats
        kind = part.kind
        if kind == rc.OUT:
            queue, flags = a._queue, self.flags
            for sid in part.streams:
                f = flags.get(sid, 0) & ~OUT_RESETTING
                if ok:
                    f &= ~OUT_OPEN
                    if queue.paused_on(sid):
                        f |= OUT_OPEN  # messages sent meanwhile: a new use of the stream starts at once
                queue.resume(sid, ok)
                self._set_flags(sid, f)
            if ok:
                a._events.append(ev.OutgoingStreamsReset(list(part.streams)))
            else:
                a._events.append(ev.StreamResetFailed(list(part.streams), rc.describe_result(result)))
        elif kind == rc.IN:
            if not ok:
                a._events.append(ev.StreamResetFailed(list(part.streams), rc.describe_result(result), True))
        elif kind == rc.ADD_OUT:
            if ok:
                a.outbound_streams += part.count
                a._queue.set_streams(a.outbound_streams)
                a._events.append(ev.StreamsAdded(part.count, 0, a.outbound_streams, a.inbound_streams))
            else:
                stats["add_streams_refused"] = stats.get("add_streams_refused", 0) + 1
        elif kind == rc.ADD_IN and not ok:
            stats["add_streams_refused"] = stats.get("add_streams_refused", 0) + 1
        if not ok:
            stats["reconfig_refused"] = stats.get("reconfig_refused", 0) + 1

    def _set_flags(self, sid: int, f: int) -> None:
        """Store a stream's new flags; when no direction is in use any more, its id is free again."""
        flags = self.flags
        if f:
            flags[sid] = f
        elif flags.pop(sid, None) is not None and not self.a._queue.is_paused(sid):
            queue = self.a._queue
            if queue.priority(sid) != DEFAULT_PRIORITY:
                queue.set_priority(sid, DEFAULT_PRIORITY)  # a new use of the id starts at the default
            self.a._events.append(ev.StreamClosed(sid))

    def _reset_inbound(self, streams: list[int]) -> None:
        """The peer's reset of ``streams`` (all when empty) is carried out: everything it sent before is
        delivered, so they start over at SSN 0."""
        a = self.a
        flags = self.flags
        reasm = a._reasm
        if not streams:
            streams = [
                s for s in range(a.inbound_streams) if flags.get(s, 0) & IN_OPEN or reasm.opened[s] or reasm.used(s)
            ]
        reasm.reset_streams(streams)
        a._events.append(ev.StreamReset(list(streams)))
        for sid in streams:
            f = flags.get(sid)
            if f is not None and f & IN_OPEN:
                self._set_flags(sid, f & ~IN_OPEN)
        a.stats["streams_reset_by_peer"] = a.stats.get("streams_reset_by_peer", 0) + len(streams)

    # -- the receive path, while a deferred reset waits or streams are announced ----------------------------------

    def set_announce(self, on: bool) -> None:
        self.announce = on
        self.a._rx_special = self.holding or on

    def special_chunk(self, u: int, c: Chunk) -> bool:
        """A new chunk while a deferred reset waits or streams are announced: True when it is held."""
        a = self.a
        sid = c.stream_id
        if self.holding and a._reconfig.holds(u, sid):
            self._hold(u, c)  # after a reset the peer asked for and we cannot perform yet (RFC 6525 §5.2.2 E2)
            return True
        if self.announce:
            opened = a._reasm.opened
            if not opened[sid]:
                opened[sid] = 1
                a._events.append(ev.StreamOpened(sid))
        return False

    def _hold(self, u: int, c: Chunk) -> None:
        a = self.a
        reasm = a._reasm
        cost = len(c.data) + CHUNK_COST
        reasm.held += cost
        reasm.assembling += cost
        self.held.append((u, c))
        a.stats["held_for_reset"] = a.stats.get("held_for_reset", 0) + 1

    def after_data(self) -> None:
        """A packet's DATA is in: carry out the deferred resets whose Last Assigned TSN it reached."""
        a = self.a
        if self.holding and a._reconfig.deferred[0].last <= a._rx.cum:
            self._perform_deferred()

    def _perform_deferred(self) -> None:
        """The cumulative TSN reached deferred resets' Last Assigned TSNs: carry them out, say so to the peer at
        once, and deliver what waited (in TSN order, each held again if another reset still covers it)."""
        a = self.a
        rcfg, rx = a._reconfig, a._rx
        while rcfg.deferred and rcfg.deferred[0].last <= rx.cum:
            d = rcfg.deferred.pop(0)
            self._reset_inbound(sorted(d.streams) if d.streams is not None else [])
            rcfg.update(d.seq, RESULT_PERFORMED)
            a._ctrl.append(ReconfigChunk([ReconfigResponse(d.seq, RESULT_PERFORMED)]).serialize())
        self.holding = bool(rcfg.deferred)
        a._rx_special = self.holding or self.announce
        held, self.held = self.held, []
        reasm = a._reasm
        for u, c in sorted(held, key=lambda item: item[0]):
            cost = len(c.data) + CHUNK_COST
            reasm.held -= cost
            reasm.assembling -= cost
            self._redeliver(u, c)
            if a.state == CLOSED:
                return

    def _redeliver(self, u: int, c: Chunk) -> None:
        """A held chunk's turn: what ``_on_data`` does once a chunk is in, minus the TSN bookkeeping done then."""
        a = self.a
        if a._rx_special and self.special_chunk(u, c):
            return
        reasm = a._reasm
        if c.beginning and c.ending:
            reasm.message(c)  # type: ignore[arg-type]
            return
        try:
            reasm.fragment(u, c)  # type: ignore[arg-type]
        except BadFragments:
            a._abort_with(protocol_violation_cause(b"fragments of one message disagree"), "bad fragments")

    # -- our requests -------------------------------------------------------------------------------------------

    def poll(self, now: float) -> bytes:
        """Our next RE-CONFIG request, when one is ready and none is in flight (b"" otherwise)."""
        a = self.a
        rcfg = a._reconfig
        if rcfg.inflight is not None:
            return b""
        if not rcfg.wanted:
            a._reconf_work = False
            return b""
        out = a._out
        wire = rcfg.build(now, (out.next_tsn - 1) & MASK, out.cum_acked)
        if wire is None:
            return b""
        a.stats["reconfig_sent"] = a.stats.get("reconfig_sent", 0) + 1
        a._t_reconf = now + a._rtt.rto
        a._reconf_work = rcfg.wanted
        return wire

    def on_timer(self, now: float) -> None:
        """Our request went unanswered for an RTO (a loss, counted as T3's are), or the peer said "In progress"
        an RTO ago (a retry): send it again, unchanged."""
        a = self.a
        a._t_reconf = None
        req = a._reconfig.inflight
        if req is None or a.state not in DATA_FLOWS:
            a._reconf_work = a._reconfig.wanted  # a retry after "request already in progress" is due
            return
        if req.in_progress:
            req.in_progress = False
        else:
            a._error_count += 1
            if a._error_count > a.config.asocmaxrxt:
                a._lost()
                return
            a._rtt.backoff()
            a.stats["reconfig_retransmits"] = a.stats.get("reconfig_retransmits", 0) + 1
        a._ctrl.append(req.wire)
        a._t_reconf = now + a._rtt.rto
