"""``python -m allocation``: the bootstrap script."""

from __future__ import annotations

import sys

from allocation.entrypoints.cli import main

if __name__ == "__main__":
    sys.exit(main())
