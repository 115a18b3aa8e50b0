"""``python -m mux.bench [CONFIG] [--quick] ...``: the benchmark without the ``mux`` command."""

import sys

from mux.bench.cli import main

sys.exit(main())
