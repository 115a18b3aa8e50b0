"""mux.sctp.entropy: kernel randomness handed out from a pool, and never the same numbers in a forked child."""

from __future__ import annotations

import os

from mux.sctp.entropy import ENTROPY, Entropy


def test_draws_cover_their_range_and_differ() -> None:
    rng = Entropy()
    tags = [rng.randrange(1, 1 << 32) for _ in range(5000)]  # more than one 4 KiB read
    assert all(1 <= tag < 1 << 32 for tag in tags)
    assert len(set(tags)) == len(tags)
    assert max(tags) > 1 << 31 > min(tags)  # both halves of the range: the top bits are used
    floats = [rng.random() for _ in range(2000)]
    assert all(0.0 <= f < 1.0 for f in floats) and max(floats) > 0.9 and min(floats) < 0.1
    assert rng.getrandbits(0) == 0 and 0 <= rng.getrandbits(3) < 8


def test_a_forked_child_does_not_repeat_its_parents_numbers() -> None:
    ENTROPY.getrandbits(64)  # the pool is filled in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the next numbers it draws
        os.write(write, ENTROPY.getrandbits(256).to_bytes(32, "big"))
        os._exit(0)
    os.close(write)
    child = os.read(read, 32)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert ENTROPY.getrandbits(256).to_bytes(32, "big") != child
