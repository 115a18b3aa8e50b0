"""What we have received, by TSN: the cumulative point, the ranges above it, duplicates, and the SACK that says so.

TSNs are unwrapped (RFC 1982 serial numbers turned into plain ints that keep growing), so the out-of-order ranges
are two sorted lists searched with ``bisect``: classifying or recording a TSN costs O(log n) whatever a peer
sends, and a SACK reports its first ranges in O(ranges reported). A peer cannot make the ranges grow without
bound either: beyond ``max_ranges`` separate ranges, a TSN that would open a new one is refused (not acked, so an
honest sender retransmits it once the holes below have filled).
"""

from __future__ import annotations

from bisect import bisect_right

MASK = 0xFFFFFFFF
HALF = 0x80000000

#: what ``classify`` says of a TSN
NEXT = 0  # the next in sequence: it moves the cumulative point
AHEAD = 1  # new, above a hole
DUPLICATE = 2  # at or below the cumulative point, or already in a range
TOO_FAR = 3  # further ahead than a SACK gap block (16-bit offsets) could even report
NO_ROOM = 4  # would open one range too many

#: duplicate TSNs remembered for the next SACK (RFC 9260 §3.3.4 lets us report any number; a few say enough)
MAX_DUPS = 32
#: separate out-of-order ranges kept; a SACK carries at most ~300 gap blocks in a 1280-byte packet anyway, and an
#: honest sender with 1 MiB in flight at 5% loss leaves ~45
MAX_RANGES = 512
#: a DATA chunk further than this past the cumulative point is dropped: gap offsets are 16 bits
MAX_AHEAD = 0xFFFF


class DataTracker:
    __slots__ = ("cum", "dups", "ends", "max_ranges", "starts")

    def __init__(self, last_tsn: int, *, max_ranges: int = MAX_RANGES) -> None:
        #: the cumulative TSN, unwrapped; ``cum_tsn`` is its wire value
        self.cum = last_tsn & MASK
        #: range i is [starts[i], ends[i]], inclusive, unwrapped, sorted, disjoint and non-adjacent, all > cum + 1;
        #: read-only outside (the association tests ``starts`` for "nothing missing" on its hot path)
        self.starts: list[int] = []
        self.ends: list[int] = []
        #: duplicate TSNs (wire values) for the next SACK
        self.dups: list[int] = []
        self.max_ranges = max_ranges

    @property
    def cum_tsn(self) -> int:
        return self.cum & MASK

    @property
    def has_gaps(self) -> bool:
        return bool(self.starts)

    @property
    def ranges(self) -> int:
        return len(self.starts)

    def unwrap(self, tsn: int) -> int:
        """The unwrapped TSN nearest the cumulative point (RFC 1982 comparison)."""
        cum = self.cum
        d = (tsn - cum) & MASK
        return cum + d if d < HALF else cum - ((cum - tsn) & MASK)

    def classify(self, u: int) -> int:
        cum = self.cum
        if u <= cum:
            return DUPLICATE
        if u == cum + 1:
            return NEXT
        if u - cum > MAX_AHEAD:
            return TOO_FAR
        starts = self.starts
        if not starts:
            return AHEAD if self.max_ranges else NO_ROOM
        ends = self.ends
        if u == ends[-1] + 1:
            return AHEAD  # extends the highest range: the common case while a hole waits for its retransmission
        i = bisect_right(starts, u)
        if i and ends[i - 1] >= u:
            return DUPLICATE
        if len(starts) >= self.max_ranges:
            joins = (i and ends[i - 1] == u - 1) or (i < len(starts) and starts[i] == u + 1)
            if not joins:
                return NO_ROOM
        return AHEAD

    def record(self, u: int) -> None:
        """Mark ``u`` (classified NEXT or AHEAD) as received."""
        starts, ends = self.starts, self.ends
        if u == self.cum + 1:
            if starts and starts[0] == u + 1:
                self.cum = ends[0]
                del starts[0]
                del ends[0]
            else:
                self.cum = u
            return
        if ends and u == ends[-1] + 1:
            ends[-1] = u
            return
        i = bisect_right(starts, u)
        left = i > 0 and ends[i - 1] == u - 1
        right = i < len(starts) and starts[i] == u + 1
        if left and right:
            ends[i - 1] = ends[i]
            del starts[i]
            del ends[i]
        elif left:
            ends[i - 1] = u
        elif right:
            starts[i] = u
        else:
            starts.insert(i, u)
            ends.insert(i, u)

    def forward(self, u: int) -> None:
        """FORWARD-TSN (RFC 3758 §3.6): every TSN up to ``u`` counts as received; ranges it reaches join in."""
        if u <= self.cum:
            return
        starts, ends = self.starts, self.ends
        i = bisect_right(starts, u + 1)  # ranges starting at or below u + 1 are now contiguous with it
        if i:
            u = max(u, ends[i - 1])
            del starts[:i]
            del ends[:i]
        self.cum = u

    def received(self, u: int) -> bool:
        if u <= self.cum:
            return True
        i = bisect_right(self.starts, u)
        return bool(i) and self.ends[i - 1] >= u

    def duplicate(self, tsn: int) -> None:
        if len(self.dups) < MAX_DUPS:
            self.dups.append(tsn)

    def gap_blocks(self, limit: int) -> list[tuple[int, int]]:
        """The first ``limit`` ranges as SACK gap blocks: (start, end) offsets from the cumulative TSN."""
        cum = self.cum
        starts, ends = self.starts, self.ends
        n = min(len(starts), max(limit, 0))
        return [(starts[i] - cum, ends[i] - cum) for i in range(n)]

    def take_dups(self) -> list[int]:
        dups = self.dups
        if dups:
            self.dups = []
        return dups
