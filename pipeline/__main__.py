"""``python -m pipeline``: the ``petseg`` command (see :func:`pipeline.serve.cli.main`)."""

import sys

from pipeline.serve.cli import main

if __name__ == "__main__":
    sys.exit(main())
