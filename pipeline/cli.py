"""Shared entry point for the scripts in ``stages/``."""

import sys
from collections.abc import Callable, Sequence

from pipeline.errors import UserError


def run_stage(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a stage's ``main(argv)``; turn a :class:`UserError` into one line on stderr.

    Returns the process exit code: 0 on success, 1 after a ``UserError``. Any other exception is
    a bug in petseg and propagates with its traceback.
    """
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
