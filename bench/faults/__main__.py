"""`python -m bench.faults`: the same as bench/faults/run.py."""

import sys

from bench.faults.run import main

sys.exit(main())
