"""`python -m arrowquant` is the `arrowquant` command."""

import sys

from .cli import main

sys.exit(main())
