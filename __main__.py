"""`python -m mcc` is the `mcc` command."""

import sys

from .cli import main

sys.exit(main())
