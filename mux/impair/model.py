"""Sans-IO impairment of one direction of a UDP path: loss, bursts, delay, jitter, reordering, duplication, rate, MTU.

The pipeline a datagram goes through, in this order (each step only when its knob is set):

1. MTU: longer than ``mtu`` bytes of UDP payload -> dropped (``dropped_mtu``).
2. Loss: random loss with probability ``loss``, and independently the Gilbert-Elliott chain (one step per datagram);
   lost if either says so (``dropped_loss``).
3. Duplication: with probability ``duplicate`` a second copy follows the original through the rest (``duplicated``).
4. Hold limit: at most ``limit_packets`` datagrams are held in the model at once (``dropped_limit``), so no
   sender can make us hold unbounded memory whatever the delay.
5. Rate: a link of ``rate_mbit`` Mbit/s serialises datagrams one after the other (time = size * 8 / rate); the
   datagrams waiting for or on the link form a tail-drop queue of ``queue_bytes`` and/or ``queue_packets``
   (``dropped_queue``).
6. Delay: ``delay_ms`` plus jitter, then FIFO: a datagram never leaves before the one ahead of it, so jitter alone
   never reorders (a datagram whose draw would overtake leaves together with the one ahead instead; with dense
   traffic this lifts the mean delay a little above ``delay_ms``).
7. Reordering: with probability ``reorder`` a datagram is held back by an extra ``reorder_delay_ms`` outside the FIFO
   order, so those behind it may overtake it (``reordered`` counts held-back datagrams; whether any actually overtake
   depends on how dense the traffic is).

All randomness comes from one ``random.Random(seed)``, so the same arrivals give the same result every run.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import asdict, dataclass, fields, replace

JITTER_DISTRIBUTIONS = ("uniform", "normal")


@dataclass(frozen=True, slots=True)
class Impairment:
    """Settings of one direction; the defaults impair nothing.

    Probabilities are fractions in [0, 1]. Gilbert-Elliott (off while ``ge_good_to_bad`` is 0): a two-state chain
    stepped once per datagram; in the textbook naming p = ``ge_good_to_bad``, r = ``ge_bad_to_good``,
    1-k = ``ge_loss_good`` and 1-h = ``ge_loss_bad``. Mean loss is (r*(1-k) + p*(1-h)) / (p + r) and with the
    defaults (k = 1, h = 0) a loss burst lasts 1/r datagrams on average.

    Jitter: ``uniform`` draws the delay from [delay - jitter, delay + jitter]; ``normal`` from a normal distribution
    of mean ``delay_ms`` and standard deviation ``jitter_ms``. Either way it is clamped at 0.

    ``rate_mbit`` 0 means unlimited; then the queue limits do nothing. ``queue_bytes``/``queue_packets`` None means
    no limit of that kind (``limit_packets`` still bounds memory).
    """

    loss: float = 0.0
    ge_good_to_bad: float = 0.0
    ge_bad_to_good: float = 1.0
    ge_loss_good: float = 0.0
    ge_loss_bad: float = 1.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    jitter_dist: str = "uniform"
    reorder: float = 0.0
    reorder_delay_ms: float = 10.0
    duplicate: float = 0.0
    rate_mbit: float = 0.0
    queue_bytes: int | None = None
    queue_packets: int | None = 1000
    mtu: int | None = None
    limit_packets: int = 20_000

    def __post_init__(self) -> None:
        for name in ("loss", "ge_good_to_bad", "ge_bad_to_good", "ge_loss_good", "ge_loss_bad", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1, not {value!r}")
        for name in ("delay_ms", "jitter_ms", "reorder_delay_ms", "rate_mbit"):
            value = getattr(self, name)
            if not value >= 0.0 or value == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if self.jitter_dist not in JITTER_DISTRIBUTIONS:
            raise ValueError(f"jitter_dist must be one of {', '.join(JITTER_DISTRIBUTIONS)}, not {self.jitter_dist!r}")
        if self.ge_good_to_bad > 0.0 and self.ge_bad_to_good == 0.0:
            raise ValueError("ge_bad_to_good must be > 0 when ge_good_to_bad is set (else the bad state never ends)")
        for name in ("queue_bytes", "queue_packets", "mtu"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or unset, not {value!r}")
        if self.limit_packets < 1:
            raise ValueError(f"limit_packets must be >= 1, not {self.limit_packets!r}")

    def changed(self) -> dict[str, object]:
        """The settings that differ from the defaults, for logs and stats output."""
        default = Impairment()
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if value != getattr(default, name)}


@dataclass(slots=True)
class ImpairStats:
    """Counters of one direction; ``bytes_*`` count UDP payload bytes."""

    received: int = 0
    bytes_received: int = 0
    dropped_mtu: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_limit: int = 0
    duplicated: int = 0
    reordered: int = 0
    delivered: int = 0
    bytes_delivered: int = 0

    def snapshot(self) -> ImpairStats:
        return replace(self)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ImpairModel:
    """One direction of an impaired path; time is whatever ``now`` the caller passes (seconds, non-decreasing)."""

    def __init__(self, settings: Impairment | None = None, seed: int | str | None = 0) -> None:
        self.settings = settings if settings is not None else Impairment()
        self.stats = ImpairStats()
        self._rng = random.Random(seed)
        # (release time, arrival sequence, data, tag): the sequence keeps equal release times in arrival order
        self._heap: list[tuple[float, int, bytes, object]] = []
        self._seq = 0
        self._fifo_floor = float("-inf")  # release time of the last in-order datagram
        self._ge_bad = False
        self._link_free = float("-inf")  # when the rate-limited link finishes the last queued datagram
        self._link_queue: deque[tuple[float, int]] = deque()  # (serialisation end, size) not yet fully sent
        self._link_bytes = 0
        s = self.settings
        self._delay = s.delay_ms / 1000.0
        self._jitter = s.jitter_ms / 1000.0
        self._normal = s.jitter_dist == "normal"
        self._reorder_delay = s.reorder_delay_ms / 1000.0
        self._seconds_per_byte = 8.0 / (s.rate_mbit * 1e6) if s.rate_mbit > 0 else 0.0

    def __len__(self) -> int:
        """Datagrams held (waiting for their release time)."""
        return len(self._heap)

    def submit(self, data: bytes, now: float, tag: object = None) -> None:
        """Take one datagram arriving at ``now``; ``tag`` travels with it (the proxy uses it for the destination)."""
        s = self.settings
        size = len(data)
        stats = self.stats
        stats.received += 1
        stats.bytes_received += size
        if s.mtu is not None and size > s.mtu:
            stats.dropped_mtu += 1
            return
        rng = self._rng
        if self._lost(rng):
            stats.dropped_loss += 1
            return
        copies = 1
        if s.duplicate > 0.0 and rng.random() < s.duplicate:
            copies = 2
            stats.duplicated += 1
        for _ in range(copies):
            self._enqueue(data, size, now, tag, rng)

    def _lost(self, rng: random.Random) -> bool:
        s = self.settings
        lost = s.loss > 0.0 and rng.random() < s.loss
        if s.ge_good_to_bad > 0.0:
            # decide in the current state, then step the chain
            if self._ge_bad:
                lost = rng.random() < s.ge_loss_bad or lost
                if rng.random() < s.ge_bad_to_good:
                    self._ge_bad = False
            else:
                lost = (s.ge_loss_good > 0.0 and rng.random() < s.ge_loss_good) or lost
                if rng.random() < s.ge_good_to_bad:
                    self._ge_bad = True
        return lost

    def _enqueue(self, data: bytes, size: int, now: float, tag: object, rng: random.Random) -> None:
        s = self.settings
        stats = self.stats
        if len(self._heap) >= s.limit_packets:
            stats.dropped_limit += 1
            return
        sent = now
        if self._seconds_per_byte:
            queue = self._link_queue
            while queue and queue[0][0] <= now:
                self._link_bytes -= queue.popleft()[1]
            if (s.queue_packets is not None and len(queue) >= s.queue_packets) or (
                s.queue_bytes is not None and self._link_bytes + size > s.queue_bytes
            ):
                stats.dropped_queue += 1
                return
            sent = max(now, self._link_free) + size * self._seconds_per_byte
            self._link_free = sent
            queue.append((sent, size))
            self._link_bytes += size
        release = sent + self._delay
        if self._jitter:
            if self._normal:
                release += rng.gauss(0.0, self._jitter)
            else:
                release += rng.uniform(-self._jitter, self._jitter)
            release = max(release, sent)
        if s.reorder > 0.0 and rng.random() < s.reorder:
            release += self._reorder_delay
            stats.reordered += 1
        elif release < self._fifo_floor:
            release = self._fifo_floor
        else:
            self._fifo_floor = release
        self._seq += 1
        heapq.heappush(self._heap, (release, self._seq, data, tag))

    def next_deadline(self) -> float | None:
        """When the next datagram is due, or None when nothing is held."""
        return self._heap[0][0] if self._heap else None

    def due_tagged(self, now: float) -> list[tuple[bytes, object]]:
        """Every datagram due at ``now``, with its tag, in release order."""
        heap = self._heap
        out: list[tuple[bytes, object]] = []
        while heap and heap[0][0] <= now:
            _, _, data, tag = heapq.heappop(heap)
            out.append((data, tag))
            self.stats.bytes_delivered += len(data)
        self.stats.delivered += len(out)
        return out

    def due(self, now: float) -> list[bytes]:
        """Every datagram due at ``now``, in release order."""
        return [data for data, _ in self.due_tagged(now)]

    def clear(self) -> int:
        """Forget every held datagram (e.g. on shutdown); returns how many there were."""
        count = len(self._heap)
        self._heap.clear()
        return count
