"""The one exception type for problems a user can cause and fix."""


class UserError(ValueError):
    """A bad param, a missing or corrupt file, or no network.

    The message is one line that names the thing at fault and the fix. Stage scripts print it
    without a traceback (see :func:`pipeline.cli.run_stage`). It subclasses ``ValueError`` so
    library callers can catch it as one.
    """
