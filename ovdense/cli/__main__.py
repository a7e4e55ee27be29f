"""``python -m ovdense.cli <command> ...``: the ``ovdense`` command (see :mod:`ovdense.cli`)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
