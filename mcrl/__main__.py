"""``python -m mcrl``: the ``mcrl`` command of this interpreter."""

import sys

from mcrl.cli import main

sys.exit(main())
