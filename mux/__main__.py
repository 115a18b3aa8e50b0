"""``python -m mux ...``: the ``mux`` command."""

import sys

from mux.cli import main

sys.exit(main())
