"""`python -m ghibli_keras` is the `ghibli-keras` command."""

import sys

from .cli import main

sys.exit(main())
