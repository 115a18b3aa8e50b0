"""Unpredictable numbers for verification tags, initial TSNs and HEARTBEAT nonces, at a fraction of their cost.

``random.SystemRandom`` makes one ``os.urandom`` system call per number; a handshake draws several (about 6% of
the server's CPU per SCTP handshake). ``Entropy`` reads the kernel's randomness 4 KiB at a time and hands it
out: the numbers are as unpredictable as SystemRandom's (never from a seeded generator a peer could learn).
"""

from __future__ import annotations

import os
import random
import weakref

_CHUNK = 4096


class Entropy(random.Random):
    """A ``random.Random`` whose every bit comes from ``os.urandom``, read in 4 KiB chunks."""

    def __init__(self) -> None:
        super().__init__()
        self._pool = b""
        self._at = 0
        _all.add(self)

    def forget(self) -> None:
        """Drop what was read: a forked child must not hand out its parent's numbers again."""
        self._pool, self._at = b"", 0

    def _take(self, n: int) -> bytes:
        at = self._at
        if at + n > len(self._pool):
            self._pool, at = os.urandom(max(_CHUNK, n)), 0
        self._at = at + n
        return self._pool[at : at + n]

    def getrandbits(self, k: int) -> int:
        if k <= 0:
            if k < 0:
                raise ValueError("number of bits must be non-negative")
            return 0
        n = (k + 7) // 8
        return int.from_bytes(self._take(n), "big") >> (n * 8 - k)

    def random(self) -> float:
        return (int.from_bytes(self._take(7), "big") >> 3) * 2.0**-53

    def seed(self, *args: object, **kwargs: object) -> None:
        """Nothing to seed: the bits come from the kernel."""


_all: weakref.WeakSet[Entropy] = weakref.WeakSet()


def _forget_all() -> None:
    for each in list(_all):
        each.forget()


os.register_at_fork(after_in_child=_forget_all)

#: the one a process's endpoints and associations share unless given their own (a 4 KiB pool each would not be cheap)
ENTROPY = Entropy()
