"""Alias of ``mux.behaviours.bench`` (the same module object), for configs that name ``behaviours.bench``."""

import sys

from mux.behaviours import bench

sys.modules[__name__] = bench
