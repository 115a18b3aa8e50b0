"""A shared empty dict that stands for "none yet" and refuses writes.

Many per-association maps stay empty for an association's whole life (reset codes, RE-CONFIG's results, RACK's
retransmissions...). Each starts as one of these, shared by every association, and becomes a dict of its own at
its first write; 64 bytes less per map per idle association. Reads, ``in``, ``len``, iteration and
``pop(key, default)`` work as on any empty dict; a write that forgot to make its own dict first raises instead of
filling the map every association shares.
"""

from __future__ import annotations

from typing import Any, NoReturn


class Unwritten(dict[Any, Any]):
    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a shared empty placeholder: make a dict of your own before writing")

    __setitem__ = _refuse
    setdefault = _refuse
    update = _refuse
    __ior__ = _refuse
