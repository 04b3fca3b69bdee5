"""`python -m tinygrad_reason.cli`: the same as the `tinygrad-reason` command."""
import sys

from . import main

sys.exit(main())
