"""``python -m explorer``: the command-line interface."""

import sys

from explorer.tools.cli import main

sys.exit(main())
