"""Stream reconfiguration (RFC 6525): the RE-CONFIG protocol state of one association.

This part keeps the bookkeeping; the association applies what it decides (pausing a stream's send queue, starting
an inbound stream over, the events).

**Our requests.** A stream to reset (``want_out``) waits until every message queued on it before the reset left
(its ``tail`` chunk has a TSN), so the request's Sender's Last Assigned TSN covers them; a request that the peer
reset its own outgoing streams (``want_in``) may wait for a *notice* message to be acknowledged first (mux sends the
QUIC error code that way, ``mux.sctp.connection``). Ready requests of one kind are merged, an outgoing and an
incoming reset share one chunk, and so do an Add Outgoing and an Add Incoming Streams request. One RE-CONFIG chunk
with requests is in flight at a time (§5.1.1); request sequence numbers start at our initial TSN. It is sent again,
unchanged, on every RTO (the association counts that as a retransmission error) until the peer answers. "In
progress" means the peer is waiting for data (deferred reset): the request is sent again after an RTO without
counting an error. "Error - Request already in progress" (the peer has its own request out) retries as a new
request an RTO later, a few times.

**The peer's requests.** Their sequence numbers start at the peer's initial TSN: the expected one is carried out, the
last two are remembered with their results so a retransmitted request gets the same answer (and a deferred one the
current one), anything else is answered "Bad Sequence Number". An outgoing reset whose Sender's Last Assigned TSN we
have not received yet is *deferred*: data above that TSN on its streams is held aside until the cumulative TSN
reaches it, then the streams start over at SSN 0, the held data is delivered, and an unsolicited "Success -
Performed" tells the sender at once (it would otherwise wait for its next retransmission).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mux.sctp.chunks import ReconfigChunk
from mux.sctp.params import (
    RESULT_IN_PROGRESS,
    RESULT_NAMES,
    AddIncomingStreamsRequest,
    AddOutgoingStreamsRequest,
    IncomingSsnResetRequest,
    OutgoingSsnResetRequest,
    Param,
    ReconfigParam,
    ReconfigResponse,
)
from mux.sctp.tx.send_queue import OutChunk
from mux.sctp.unwritten import Unwritten

MASK = 0xFFFFFFFF
HALF = 0x80000000

#: request kinds, by their parameter type
OUT = OutgoingSsnResetRequest.TYPE
IN = IncomingSsnResetRequest.TYPE
SSN_TSN = 15
ADD_OUT = AddOutgoingStreamsRequest.TYPE
ADD_IN = AddIncomingStreamsRequest.TYPE
RESPONSE = ReconfigResponse.TYPE

#: the parameter combinations a RE-CONFIG chunk may carry (§3.1)
_VALID = frozenset(
    {
        (OUT,),
        (IN,),
        (SSN_TSN,),
        (ADD_OUT,),
        (ADD_IN,),
        (RESPONSE,),
        (OUT, IN),
        (OUT, RESPONSE),
        (RESPONSE, RESPONSE),
        (ADD_OUT, ADD_IN),
    }
)
#: streams named in one reset request at most (2 bytes each: it must fit a packet with room to spare)
MAX_STREAMS_PER_REQUEST = 256
#: deferred resets of the peer's held at once; an honest peer has one request in flight at a time
MAX_DEFERRED = 4
#: retries of a request the peer refused because it had one of its own out
MAX_RETRIES = 8

#: what ``classify`` says of a peer's request sequence number
NEW = 0
RETRANSMIT = 1
BAD = 2


def valid_combination(params: list[ReconfigParam]) -> bool:
    return tuple(sorted(p.TYPE for p in params)) in _VALID


@dataclass(slots=True)
class Part:
    """One of our requests: what it asked, and whether it has its answer."""

    kind: int
    seq: int
    streams: list[int] = field(default_factory=list)
    count: int = 0
    done: bool = False
    retries: int = 0


@dataclass(slots=True)
class Request:
    """Our RE-CONFIG chunk in flight (one or two requests), sent again unchanged until answered."""

    parts: list[Part]
    wire: bytes
    #: the peer said "In progress": the next transmission is a retry after an RTO, not a loss
    in_progress: bool = False


@dataclass(slots=True)
class Deferred:
    """A peer's outgoing reset waiting for its Sender's Last Assigned TSN (unwrapped) to be received."""

    last: int
    streams: frozenset[int] | None  # None: all streams
    seq: int


def _acked(c: OutChunk, cum_acked: int) -> bool:
    return c.abandoned or (c.sent > 0 and ((cum_acked - c.tsn) & MASK) < HALF)


#: the peer's results until its first request, and the streams to reset until the first: shared, read but never
#: written
_NO_RESULTS: dict[int, tuple[int, int]] = Unwritten()
_NONE_WANTED: dict[int, OutChunk | None] = Unwritten()


class Reconfig:
    __slots__ = (
        "_results",
        "add_in",
        "add_out",
        "deferred",
        "in_wanted",
        "inflight",
        "next_seq",
        "out_resp_seq",
        "out_wanted",
        "peer_seq",
        "retries",
        "retry_at",
    )

    def __init__(self, local_initial_tsn: int, peer_initial_tsn: int) -> None:
        #: our next request sequence number, and the peer's next one we expect (§5.1.1, §5.2.1)
        self.next_seq = local_initial_tsn & MASK
        self.peer_seq = peer_initial_tsn & MASK
        #: the peer's last two requests: sequence number -> (kind, result)
        self._results: dict[int, tuple[int, int]] = _NO_RESULTS  # its own from the first (``remember``)
        #: streams to reset, each with the last chunk queued before the reset (None: nothing was)
        self.out_wanted: dict[int, OutChunk | None] = _NONE_WANTED  # its own dict from the first (``_out``)
        #: the peer's Incoming SSN Reset Request our next outgoing reset answers
        self.out_resp_seq: int | None = None
        #: streams we ask the peer to reset, each with the notice the peer must have first (None: none)
        self.in_wanted: dict[int, OutChunk | None] = _NONE_WANTED  # likewise (``_in``)
        #: streams to add, ours and the peer's
        self.add_out = 0
        self.add_in = 0
        self.inflight: Request | None = None
        #: no new request before this (the peer had a request of its own out)
        self.retry_at = 0.0
        #: how often the streams waiting now were refused that way
        self.retries = 0
        self.deferred: list[Deferred] = []

    @property
    def wanted(self) -> bool:
        return bool(self.out_wanted or self.in_wanted or self.add_out or self.add_in)

    @property
    def busy(self) -> bool:
        """A request of ours waits or is in flight."""
        return self.inflight is not None or self.wanted

    # -- our requests ---------------------------------------------------------------------------------------------

    def _out(self) -> dict[int, OutChunk | None]:
        if self.out_wanted is _NONE_WANTED:
            self.out_wanted = {}
        return self.out_wanted

    def _in(self) -> dict[int, OutChunk | None]:
        if self.in_wanted is _NONE_WANTED:
            self.in_wanted = {}
        return self.in_wanted

    def want_out(self, stream_id: int, tail: OutChunk | None, response_seq: int | None = None) -> None:
        self._out()[stream_id] = tail
        if response_seq is not None:
            self.out_resp_seq = response_seq

    def want_in(self, stream_id: int, notice: OutChunk | None) -> None:
        self._in()[stream_id] = notice

    def resetting(self, stream_id: int) -> bool:
        """Whether a reset of our outgoing ``stream_id`` waits or is in flight."""
        if stream_id in self.out_wanted:
            return True
        req = self.inflight
        return req is not None and any(p.kind == OUT and stream_id in p.streams and not p.done for p in req.parts)

    def build(self, now: float, last_tsn: int, cum_acked: int) -> bytes | None:
        """Our next RE-CONFIG chunk, when none is in flight and a request is ready; None otherwise."""
        if self.inflight is not None or now < self.retry_at:
            return None
        params: list[Param] = []
        parts: list[Part] = []
        out = [s for s, tail in self.out_wanted.items() if tail is None or tail.sent or tail.abandoned]
        if out:
            out = out[:MAX_STREAMS_PER_REQUEST]
            for s in out:
                del self.out_wanted[s]
            resp = self.out_resp_seq if self.out_resp_seq is not None else (self.peer_seq - 1) & MASK
            self.out_resp_seq = None
            seq = self._take_seq()
            params.append(OutgoingSsnResetRequest(seq, resp, last_tsn & MASK, sorted(out)))
            parts.append(Part(OUT, seq, sorted(out)))
        inc = [s for s, notice in self.in_wanted.items() if notice is None or _acked(notice, cum_acked)]
        if inc:
            inc = inc[:MAX_STREAMS_PER_REQUEST]
            for s in inc:
                del self.in_wanted[s]
            seq = self._take_seq()
            params.append(IncomingSsnResetRequest(seq, sorted(inc)))
            parts.append(Part(IN, seq, sorted(inc)))
        if not parts:
            if self.add_out:
                seq = self._take_seq()
                params.append(AddOutgoingStreamsRequest(seq, self.add_out))
                parts.append(Part(ADD_OUT, seq, count=self.add_out))
                self.add_out = 0
            if self.add_in:
                seq = self._take_seq()
                params.append(AddIncomingStreamsRequest(seq, self.add_in))
                parts.append(Part(ADD_IN, seq, count=self.add_in))
                self.add_in = 0
        if not parts:
            return None
        for p in parts:
            p.retries = self.retries
        self.retries = 0
        wire = ReconfigChunk(params).serialize()
        self.inflight = Request(parts, wire)
        return wire

    def _take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq = (seq + 1) & MASK
        return seq

    def answer(self, seq: int, result: int) -> Part | None:
        """The peer answered request ``seq`` of the chunk in flight: its part, now done (None when it was not
        ours or is answered already). "In progress" leaves it open and marks the chunk for a retry."""
        req = self.inflight
        if req is None:
            return None
        for part in req.parts:
            if part.seq == seq and not part.done:
                if result == RESULT_IN_PROGRESS:
                    req.in_progress = True
                    return None
                part.done = True
                self._settle()
                return part
        return None

    def answer_in(self, response_seq: int) -> Part | None:
        """The peer's Outgoing SSN Reset Request answering our incoming one implicitly (§4.1)."""
        req = self.inflight
        if req is not None:
            for part in req.parts:
                if part.kind == IN and part.seq == response_seq and not part.done:
                    part.done = True
                    self._settle()
                    return part
        return None

    def answer_add_in(self) -> Part | None:
        """The peer's Add Outgoing Streams Request answering our Add Incoming Streams one implicitly."""
        req = self.inflight
        if req is not None:
            for part in req.parts:
                if part.kind == ADD_IN and not part.done:
                    part.done = True
                    self._settle()
                    return part
        return None

    def _settle(self) -> None:
        req = self.inflight
        if req is not None and all(p.done for p in req.parts):
            self.inflight = None

    def retry_later(self, part: Part, now: float, rto: float) -> bool:
        """The peer had a request of its own out: ask again, as a new request, an RTO from now. False once it
        was refused too often."""
        if part.retries >= MAX_RETRIES:
            return False
        self.retries = max(self.retries, part.retries + 1)
        self.retry_at = now + rto
        if part.kind == OUT:
            for s in part.streams:
                self._out().setdefault(s, None)
        elif part.kind == IN:
            for s in part.streams:
                self._in().setdefault(s, None)
        elif part.kind == ADD_OUT:
            self.add_out += part.count
        elif part.kind == ADD_IN:
            self.add_in += part.count
        return True

    # -- the peer's requests ---------------------------------------------------------------------------------------

    def classify(self, seq: int) -> tuple[int, int]:
        """NEW, RETRANSMIT with the result given before, or BAD."""
        if seq == self.peer_seq:
            return NEW, 0
        known = self._results.get(seq)
        if known is not None:
            return RETRANSMIT, known[1]
        return BAD, 0

    def remember(self, seq: int, kind: int, result: int) -> None:
        """Request ``seq`` (the expected one) was carried out with ``result``."""
        if self._results is _NO_RESULTS:
            self._results = {}
        self._results[seq] = (kind, result)
        self._results.pop((seq - 2) & MASK, None)
        self.peer_seq = (seq + 1) & MASK

    def update(self, seq: int, result: int) -> None:
        """A deferred request was carried out after all: its retransmission now gets ``result``."""
        known = self._results.get(seq)
        if known is not None:
            self._results[seq] = (known[0], result)

    def holds(self, u: int, stream_id: int) -> bool:
        """Whether data at unwrapped TSN ``u`` on ``stream_id`` must wait for a deferred reset."""
        return any(u > d.last and (d.streams is None or stream_id in d.streams) for d in self.deferred)


def describe_result(result: int) -> str:
    return RESULT_NAMES.get(result, f"result_{result}")
