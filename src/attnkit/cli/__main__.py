"""``python -m attnkit.cli`` (used by torchrun relaunches)."""

import sys

from attnkit.cli import main

sys.exit(main())
