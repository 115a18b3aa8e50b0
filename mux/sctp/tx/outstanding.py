"""Data in flight: the chunks sent and not yet cumulatively acknowledged, what SACKs say of them, and which to
retransmit (RFC 9260 §6.2.1, §6.3.3, §7.2.4).

``sent`` is a list with a head index, contiguous in TSN from the cumulative ack point, so a gap block's TSN
offsets are plain list indices. Applying a SACK visits each outstanding chunk at most once, however many
blocks it lists and however they overlap. ``flight`` counts the bytes in flight as congestion control sees
them: a chunk marked for retransmission leaves it until it is sent again.

PR-SCTP (RFC 3758 §3.5): a chunk whose message's policy has lapsed is not marked for retransmission but put in
``lapsed``; the association abandons its whole message (``abandon``). Abandoned chunks count as acknowledged,
and the advanced peer ack point (``advanced``) moves over them for the FORWARD-TSN that tells the peer.

``rack`` (``tx.rack``) keeps RACK-TLP's state for what is in flight here: ``resend`` tells it of each retransmission,
and ``last_cum`` is the top of the last cumulative ack advance, its witness when no gap block acks above that.
"""

from __future__ import annotations

from collections import deque

from mux.sctp.chunks import FLAG_B, FLAG_E, FLAG_U
from mux.sctp.tx.rack import Rack
from mux.sctp.tx.rtt import RttEstimator
from mux.sctp.tx.scheduler import encode_idata
from mux.sctp.tx.send_queue import OutChunk

MASK = 0xFFFFFFFF
HALF = 0x80000000

#: ``ack`` found a cumulative TSN ack beyond anything we sent: a protocol violation
BEYOND = -1


class Outstanding:
    __slots__ = (
        "bytes",
        "cum_acked",
        "flight",
        "forwarded",
        "head",
        "lapsed",
        "last_cum",
        "next_tsn",
        "rack",
        "rtt_chunk",
        "rtx",
        "sent",
    )

    def __init__(self, initial_tsn: int) -> None:
        self.next_tsn = initial_tsn & MASK
        self.cum_acked = (initial_tsn - 1) & MASK
        self.sent: list[OutChunk] = []
        self.head = 0
        #: chunks marked for retransmission, in TSN order as they were marked; None until a loss (``need_rtx``) and
        #: again once sent: a deque costs 760 bytes even empty
        self.rtx: deque[OutChunk] | None = None
        self.flight = 0
        #: user bytes sent and not yet cumulatively acknowledged
        self.bytes = 0
        #: the chunk timing the next RTT sample (one at a time, never a retransmitted one: Karn)
        self.rtt_chunk: OutChunk | None = None
        #: chunks due for retransmission whose PR-SCTP policy lapsed: the association abandons their messages
        self.lapsed: list[OutChunk] = []
        #: the New Cumulative TSN of the last FORWARD-TSN sent (the cumulative ack point when none is due)
        self.forwarded = self.cum_acked
        #: the highest chunk the last cumulative ack advance covered (RACK's witness when no gap block acks above it)
        self.last_cum: OutChunk | None = None
        #: time-based loss detection and the tail loss probe
        self.rack = Rack()

    def __len__(self) -> int:
        """Chunks outstanding (hot paths compute ``len(sent) - head`` themselves: a dunder call costs)."""
        return len(self.sent) - self.head

    def add(self, c: OutChunk, now: float) -> bytes:
        """``c`` leaves for the first time: give it the next TSN; returns its encoding."""
        tsn = self.next_tsn
        self.next_tsn = (tsn + 1) & MASK
        c.tsn = tsn
        c.sent = 1
        c.sent_at = now
        wire = c.encode()
        c.wire = wire
        self.bytes += c.size
        self.flight += c.size
        self.sent.append(c)
        if self.rtt_chunk is None:
            self.rtt_chunk = c
        return wire

    def add_idata(self, c: OutChunk, now: float) -> bytes:
        """``add`` for an I-DATA association (RFC 8260): the same, encoded as I-DATA."""
        tsn = self.next_tsn
        self.next_tsn = (tsn + 1) & MASK
        c.tsn = tsn
        c.sent = 1
        c.sent_at = now
        wire = encode_idata(c)
        c.wire = wire
        self.bytes += c.size
        self.flight += c.size
        self.sent.append(c)
        if self.rtt_chunk is None:
            self.rtt_chunk = c
        return wire

    def resend(self, c: OutChunk, now: float) -> None:
        """``c`` (marked) leaves again."""
        c.marked = False
        c.sent += 1
        c.sent_at = now
        self.flight += c.size
        if c is self.rtt_chunk:
            self.rtt_chunk = None  # Karn: no RTT from a retransmitted chunk
        self.rack.resent(c)

    def ack(self, cum: int, gaps: list[tuple[int, int]], now: float, rtt: RttEstimator) -> tuple[int, int, list[int]]:
        """Apply a SACK's cumulative TSN and gap blocks.

        Returns (TSNs newly acknowledged cumulatively, bytes newly acknowledged, indices newly acknowledged by gap
        blocks in ascending order); (0, 0, []) for an old, reordered SACK and (BEYOND, 0, []) for one acking
        what was never sent. RTT samples go to ``rtt``.
        """
        d = (cum - self.cum_acked) & MASK
        if d >= HALF:
            return 0, 0, []  # an old, reordered SACK (§6.2.1 D i)
        sent = self.sent
        head = self.head
        n_out = len(sent) - head
        if d > n_out:
            return BEYOND, 0, []
        acked_bytes = 0
        flight = self.flight
        rtt_chunk = self.rtt_chunk
        if d:
            stop = head + d
            released = 0
            for i in range(head, stop):
                c = sent[i]
                if not c.acked:
                    acked_bytes += c.size
                    if c.marked:
                        c.marked = False
                    else:
                        flight -= c.size
                    if c is rtt_chunk:
                        if c.sent == 1:
                            rtt.sample(now - c.sent_at)
                        self.rtt_chunk = rtt_chunk = None
                released += c.size
            self.bytes -= released
            self.last_cum = sent[stop - 1]
            head = stop
            self.cum_acked = cum
            if head > 4096 and head * 2 > len(sent):
                del sent[:head]
                head = 0
            self.head = head
            n_out = len(sent) - head
        newly: list[int] = []
        if gaps and n_out:
            # Each outstanding chunk is visited once per SACK, whatever the blocks say: a peer sending hundreds of
            # overlapping blocks that all cover everything costs what one block would. Honest blocks come sorted.
            last = len(sent) - 1
            covered = head - 1
            for start, end in sorted(gaps) if len(gaps) > 1 else gaps:
                if start == 0 or start > end:
                    continue
                lo = head + start - 1
                if lo <= covered:
                    lo = covered + 1
                hi = head + end - 1
                if hi > last:
                    hi = last
                if lo > hi:
                    continue
                covered = hi
                for i in range(lo, hi + 1):
                    c = sent[i]
                    if not c.acked:
                        c.acked = True
                        acked_bytes += c.size
                        if c.marked:
                            c.marked = False
                        else:
                            flight -= c.size
                        if c is rtt_chunk:
                            if c.sent == 1:
                                rtt.sample(now - c.sent_at)
                            self.rtt_chunk = rtt_chunk = None
                        newly.append(i)
        self.flight = flight
        return d, acked_bytes, newly

    def mark_misses(self, newly: list[int], now: float) -> int:
        """HTNA (§7.2.4): TSNs below the highest newly acked one count misses; at three, fast retransmit.

        A SACK counts one miss per TSN it newly acks above the hole, as if the peer had SACKed each packet (§6.7
        asks it to while there are gaps): a receiver that reads a batch of datagrams and answers with one SACK
        would otherwise starve fast retransmit into RTO timeouts. Returns how many chunks were newly marked.
        """
        sent = self.sent
        head = self.head
        threshold = 3
        if len(sent) - head < 8:
            # Early Retransmit (RFC 5827): with fewer than four chunks outstanding three misses can never come;
            # retransmit after outstanding - 1 of them instead of waiting for the RTO
            outstanding = sum(1 for i in range(head, len(sent)) if not sent[i].acked)
            if outstanding < 4:
                threshold = max(outstanding - 1, 1)
        marked = 0
        k = len(newly) - 1  # newly[k] is the lowest newly acked index above i; len(newly) - k of them
        rtx = self.need_rtx()
        for i in range(newly[-1] - 1, head - 1, -1):
            while k > 0 and newly[k - 1] > i:
                k -= 1
            c = sent[i]
            if c.acked or c.marked or c.fast_rtx:
                continue
            c.missing += len(newly) - k
            if c.missing >= threshold:
                c.missing = 0
                if c.lapsed(now):
                    self.lapsed.append(c)
                    continue
                c.fast_rtx = True
                c.marked = True
                self.flight -= c.size
                rtx.append(c)
                marked += 1
        return marked

    def need_rtx(self) -> deque[OutChunk]:
        """The retransmission queue, made on first use."""
        rtx = self.rtx
        if rtx is None:
            rtx = self.rtx = deque()
        return rtx

    def mark_all(self, now: float) -> None:
        """The retransmission timer expired (§6.3.3 E3): everything unacknowledged goes again, in TSN order."""
        self.rtt_chunk = None
        rtx: deque[OutChunk] = deque()
        sent = self.sent
        flight = self.flight
        lapsed = self.lapsed
        for i in range(self.head, len(sent)):
            c = sent[i]
            if not c.acked:
                if c.lapsed(now):
                    lapsed.append(c)
                    continue
                if not c.marked:
                    c.marked = True
                    flight -= c.size
                c.missing = 0
                rtx.append(c)
        self.rtx = rtx or None
        self.flight = max(flight, 0)

    # -- PR-SCTP ----------------------------------------------------------------------------------------------

    def abandon(self, c: OutChunk) -> bool:
        """Abandon the sent fragments of ``c``'s message (RFC 3758 §3.5 A1-A3); True when its last fragment was
        among them (else the rest still waits in the send queue, for the caller to drop)."""
        sent = self.sent
        i = self.head + ((c.tsn - self.cum_acked - 1) & MASK)
        if not (self.head <= i < len(sent)) or sent[i] is not c:
            return True  # no longer outstanding: cumulatively acknowledged meanwhile
        start = i
        while not sent[start].flags & FLAG_B and start > self.head:
            start -= 1
        end = i
        last = len(sent) - 1
        while not sent[end].flags & FLAG_E and end < last:
            end += 1
        flight = self.flight
        for j in range(start, end + 1):
            f = sent[j]
            f.abandoned = True  # acknowledged by a gap block or not: FORWARD-TSN moves past the whole message
            if f.acked:
                continue
            if f.marked:
                f.marked = False
            else:
                flight -= f.size
            f.acked = True
            if f is self.rtt_chunk:
                self.rtt_chunk = None
        self.flight = max(flight, 0)
        return bool(sent[end].flags & FLAG_E)

    def abandon_message(self, stream_id: int, unordered: int, mid: int) -> bool:
        """I-DATA (RFC 8260): abandon the sent fragments of message (``stream_id``, ``unordered`` U bit, ``mid``),
        which may lie anywhere among the outstanding chunks (other messages interleave with it); True when its
        last fragment was among them."""
        sent = self.sent
        flight = self.flight
        ended = False
        for j in range(self.head, len(sent)):
            f = sent[j]
            if f.ssn != mid or f.stream_id != stream_id or f.flags & FLAG_U != unordered or f.abandoned:
                continue
            f.abandoned = True
            if f.flags & FLAG_E:
                ended = True
            if f.acked:
                continue
            if f.marked:
                f.marked = False
            else:
                flight -= f.size
            f.acked = True
            if f is self.rtt_chunk:
                self.rtt_chunk = None
        self.flight = max(flight, 0)
        return ended

    def skip_rest(self, c: OutChunk) -> None:
        """The rest of ``c``'s message never left and never will: it takes one TSN that is never sent, so the
        FORWARD-TSN reaches beyond every fragment the peer may hold. Without it, a peer that had received all
        that was sent would find the FORWARD-TSN out of date (§3.6) and keep the partial message, and its stream
        would wait for that SSN for ever (usrsctp does the same)."""
        end = OutChunk(c.stream_id, c.ppid, b"", (c.flags & FLAG_U) | FLAG_E)
        end.ssn = c.ssn
        end.tsn = self.next_tsn
        self.next_tsn = (end.tsn + 1) & MASK
        end.acked = end.abandoned = True
        self.sent.append(end)

    def advanced(self) -> tuple[int, dict[int, int]] | None:
        """The advanced peer ack point (§3.5 C1) and, per stream, the highest SSN of the ordered messages it skips;
        None when it is the cumulative ack point (nothing abandoned right above it)."""
        sent = self.sent
        i = self.head
        n = len(sent)
        if i >= n or not sent[i].abandoned:
            return None
        streams: dict[int, int] = {}
        while i < n and sent[i].abandoned:
            c = sent[i]
            if not c.flags & FLAG_U:
                streams[c.stream_id] = c.ssn
            i += 1
        return sent[i - 1].tsn, streams

    def advanced_idata(self) -> tuple[int, list[tuple[int, bool, int]]] | None:
        """``advanced`` for I-FORWARD-TSN (RFC 8260 §2.3.1): the advanced peer ack point and, per (stream, U bit),
        the largest MID abandoned below it. Unordered messages of one chunk are left out: a receiver holds
        nothing of them, and naming one would tell it to drop every unordered message of the stream up to that
        MID, a datagram's MID above a live multi-chunk message's (the datagram lane shares stream 0's counter)."""
        sent = self.sent
        i = self.head
        n = len(sent)
        if i >= n or not sent[i].abandoned:
            return None
        largest: dict[tuple[int, int], int] = {}
        while i < n and sent[i].abandoned:
            c = sent[i]
            i += 1
            flags = c.flags
            if flags & FLAG_U and flags & FLAG_B and flags & FLAG_E:
                continue
            key = (c.stream_id, flags & FLAG_U)
            best = largest.get(key)
            if best is None or ((c.ssn - best) & MASK) < HALF:
                largest[key] = c.ssn
        entries = [(sid, bool(u), mid) for (sid, u), mid in sorted(largest.items())]
        return sent[i - 1].tsn, entries
