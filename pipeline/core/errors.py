"""The one exception type for problems a user can cause and fix (printed as one line by the stage
scripts' entry point, :mod:`pipeline.core.runner`, and by the petseg command)."""


class UserError(ValueError):
    """A bad param, a missing or corrupt file, or no network.

    The message is one line that names the thing at fault and the fix. Stage scripts print it
    without a traceback (see :func:`pipeline.core.runner.run_stage`). It subclasses ``ValueError`` so
    library callers can catch it as one.
    """


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty
    (e.g. the EOFError of an empty file), for quoting inside a one-line UserError."""
    lines = str(err).splitlines()
    return lines[0] if lines else type(err).__name__
