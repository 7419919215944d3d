"""``python -m rlcustom.cli ...`` (what a job on a bare Ray image runs)."""
import sys

from rlcustom.cli import main

sys.exit(main())
