"""``python -m pipeline``: the ``petseg`` command (see :func:`pipeline.cli.main.main`)."""

import sys

from pipeline.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
