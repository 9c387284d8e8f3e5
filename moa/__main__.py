"""``python -m moa`` is the ``moa`` command."""

import sys

from moa.cli import main

sys.exit(main())
