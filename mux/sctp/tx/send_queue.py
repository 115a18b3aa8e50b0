"""A chunk waiting to leave or in flight (``OutChunk``), and the send queue's lanes.

The send queue itself, per-stream queues with the scheduler that picks the next chunk, is ``tx.scheduler``. A
message is cut into chunks when it is queued; a chunk gets its TSN when it first leaves (``Outstanding.add``), and
its SSN (or with I-DATA its MID) as its message's first fragment leaves, so a message abandoned before it was ever
sent (PR-SCTP, RFC 3758) leaves no hole in the stream's numbers for the receiver to wait on.
"""

from __future__ import annotations

from typing import Literal

from mux.sctp.chunks import DATA_HEADER, FLAG_I

_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")


class OutChunk:
    """One outbound DATA chunk; ``wire`` caches its encoding without the I bit, for retransmission."""

    __slots__ = (
        "abandoned",
        "acked",
        "data",
        "expires",
        "fast_rtx",
        "flags",
        "marked",
        "max_rexmit",
        "missing",
        "ppid",
        "sent",
        "sent_at",
        "size",
        "ssn",
        "stream_id",
        "total",
        "tsn",
        "wire",
    )

    #: set on a multi-chunk message's first chunk only (``Scheduler`` cuts it): what holding the whole message is
    #: estimated to cost the receiver, for the interleaving budget
    total: int

    def __init__(
        self, stream_id: int, ppid: int, data: bytes, flags: int, max_rexmit: int = -1, expires: float = 0.0
    ) -> None:
        self.stream_id = stream_id
        self.ssn = 0  # given as the message's first fragment leaves (ordered messages)
        self.ppid = ppid
        self.data = data
        self.flags = flags
        self.size = len(data)
        #: PR-SCTP policy of its message: retransmissions allowed (-1: no limit), and when it expires (0: never)
        self.max_rexmit = max_rexmit
        self.expires = expires
        self.tsn = 0
        self.sent = 0  # transmissions so far
        self.sent_at = 0.0
        self.acked = False  # by a gap block (a cumulative ack removes it), or abandoned
        self.abandoned = False  # PR-SCTP: its message was given up; counts as acked, and FORWARD-TSN skips it
        self.marked = False  # for retransmission (not counted in flight)
        self.fast_rtx = False  # already fast-retransmitted once (§7.2.4)
        self.missing = 0  # miss indications
        self.wire = b""

    def lapsed(self, now: float) -> bool:
        """Its message's PR-SCTP policy says give up rather than (re)send it (RFC 3758 §3.5 A1)."""
        return (0 <= self.max_rexmit < self.sent) or (self.expires != 0.0 and now >= self.expires)

    def encode(self, immediate: bool = False) -> bytes:
        data = self.data
        n = 16 + len(data)
        flags = self.flags | FLAG_I if immediate else self.flags
        return b"".join(
            (DATA_HEADER.pack(0, flags, n, self.tsn, self.stream_id, self.ssn, self.ppid), data, _PAD[n & 3])
        )


#: a stream's PR-SCTP policy: (reliability, param) as ex_sctp's ``configure_stream``
Reliability = Literal["reliable", "rexmit", "timed"]


#: the lane datagrams wait in (unordered, never retransmitted messages: see ``Association.send_datagram``)
DATAGRAMS = -2
#: the lane of notices (``Association.request_reset``): unordered messages that must not wait behind a stream's data
#: nor for its reset
CONTROL = -3
