"""``python -m ovdense <command> ...``: the ``ovdense`` command (see :mod:`ovdense.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
