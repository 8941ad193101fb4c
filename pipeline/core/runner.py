"""The stage scripts' entry point: a user error or an interruption ends the stage in one line on
stderr, never a traceback.

A stage reports how far it got (:func:`report_progress`, e.g. "after epoch 3 of 20") and what a
rerun does, so that Ctrl-C (SIGINT) or a SIGTERM (a scheduler's kill, `timeout`) says what was
interrupted and that `dvc repro` picks it up. Outputs are written atomically, so an interrupted
stage leaves none half-written.
"""

import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from pipeline.core.errors import UserError

# Exit statuses of a process ended by a signal, as a shell reports them: 128 + the signal number.
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143
RERUN = "`dvc repro` runs it again (no output is left half-written)"


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt is for SIGINT, so that the same
    ``finally`` blocks and context managers clean up. A BaseException: ``except Exception`` must not
    swallow it."""


@dataclass
class Progress:
    """What the running stage has done (``done``, e.g. "after epoch 3 of 20"; empty before its first
    step) and what a rerun will do (``rerun``)."""

    done: str = ""
    rerun: str = RERUN


PROGRESS = Progress()


def report_progress(done: str, rerun: str = RERUN) -> None:
    """Record how far the stage got and what `dvc repro` will do next, for the line an interruption prints."""
    PROGRESS.done, PROGRESS.rerun = done, rerun


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def interrupted_line(stage: str, progress: Progress) -> str:
    """The one line printed when ``stage`` is interrupted: what was done and what a rerun does."""
    done = f" {progress.done}" if progress.done else ""
    return f"interrupted: {stage}{done}; {progress.rerun}"


def _say(line: str) -> None:
    # A progress bar left open (an exception inside a loop over it) has not ended its line: close it
    # first, so that the message starts a line of its own in a log, not glued onto the bar.
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    print(line, file=sys.stderr)


def run_stage(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a stage's ``main(argv)`` and return its exit status for ``sys.exit``.

    0 on success; 1 after a :class:`UserError`, printed as ``error: <message>``; 130 after Ctrl-C
    (SIGINT) and 143 after SIGTERM, printed as one ``interrupted:`` line (:func:`interrupted_line`).
    The stage's name is its module's last part (``stages.train`` → "train"). Any other exception is
    a bug in petseg and propagates with its traceback.
    """
    # `python -m stages.train` runs the module as __main__; its spec keeps the name it was run by.
    spec = getattr(sys.modules.get(main.__module__), "__spec__", None)
    stage = (spec.name if spec else main.__module__).rpartition(".")[2]
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        main(argv)
    except UserError as err:
        _say(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        _say(interrupted_line(stage, PROGRESS))
        return EXIT_SIGINT
    except Terminated:
        _say(interrupted_line(stage, PROGRESS))
        return EXIT_SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
