"""mux.sctp.unwritten: the shared "none yet" placeholder reads as an empty dict and refuses every write."""

from __future__ import annotations

import pytest

from mux.sctp.unwritten import Unwritten


def test_reads_as_empty_and_refuses_writes() -> None:
    shared = Unwritten()
    assert not shared and len(shared) == 0 and 3 not in shared and shared.get(3) is None
    assert shared.pop(3, None) is None and list(shared.items()) == []
    for write in (
        lambda: shared.__setitem__(1, 2),
        lambda: shared.setdefault(1, 2),
        lambda: shared.update({1: 2}),
    ):
        with pytest.raises(TypeError):
            write()
    assert shared == {}
