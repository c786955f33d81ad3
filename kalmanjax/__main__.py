"""``python -m kalmanjax``: see :mod:`kalmanjax.cli`."""

import sys

from .cli import main

sys.exit(main())
