"""`python -m immutable_guard` is the `immutable-guard` command."""

import sys

from immutable_guard.cli import main

sys.exit(main())
