"""Alias of ``mux.behaviours.chat`` (the same module object), for configs that name ``behaviours.chat``."""

import sys

from mux.behaviours import chat

sys.modules[__name__] = chat
