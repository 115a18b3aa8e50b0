"""``python -m mux.impair --listen HOST:PORT --upstream HOST:PORT ...``: the proxy without the ``mux`` command."""

import sys

from mux.impair.cli import main

sys.exit(main())
