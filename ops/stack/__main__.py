"""python -m ops.stack up|deploy|env|status|down: see the package's docstring."""

import sys

from ops.stack.cli import main

sys.exit(main())
