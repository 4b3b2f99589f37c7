"""python -m slmops.cli: the same as the `slmops` command."""

import sys

from slmops.cli import main

sys.exit(main())
