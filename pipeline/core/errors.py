"""The one exception type for problems a user can cause and fix, and the stage scripts' entry point
that prints it as one line.

Kept apart from pipeline/serve/cli.py (the petseg command) so that a stage imports nothing of predict.
"""

import sys
from collections.abc import Callable, Sequence


class UserError(ValueError):
    """A bad param, a missing or corrupt file, or no network.

    The message is one line that names the thing at fault and the fix. Stage scripts print it
    without a traceback (see :func:`run_stage`). It subclasses ``ValueError`` so
    library callers can catch it as one.
    """


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty
    (e.g. the EOFError of an empty file), for quoting inside a one-line UserError."""
    lines = str(err).splitlines()
    return lines[0] if lines else type(err).__name__


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
