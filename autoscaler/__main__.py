"""`python -m autoscaler ...`: the `autoscaler` command, for a venv whose bin/ is not on PATH."""

import sys

from autoscaler.cli import main

sys.exit(main())
