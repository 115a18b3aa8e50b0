"""Alias of ``mux.behaviours.echo`` (the same module object), for configs that name ``behaviours.echo``."""

import sys

from mux.behaviours import echo

sys.modules[__name__] = echo
