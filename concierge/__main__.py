"""``python -m concierge``: the same command as ``concierge``."""

import sys

from concierge.app.cli import main

sys.exit(main())
