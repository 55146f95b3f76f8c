"""``python -m federation``: the same command as ``federation`` (works without the venv on PATH)."""

import sys

from .cli import main

sys.exit(main())
