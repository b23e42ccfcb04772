"""``python -m bench``: the issue-10 harness (see :mod:`bench.harness`)."""

import sys

from bench.cli import main

sys.exit(main())
