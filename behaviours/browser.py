"""Alias of ``mux.behaviours.browser`` (the same module object), for configs that name ``behaviours.browser``."""

import sys

from mux.behaviours import browser

sys.modules[__name__] = browser
