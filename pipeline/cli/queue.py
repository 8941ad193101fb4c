"""Waiting for experiments queued in DVC's queue (`make seeds`): ``python -m pipeline.cli.queue QUEUED``,
where QUEUED holds what `dvc exp run --queue` printed. It polls `dvc queue status` until none of those
experiments is queued or running, and exits 1 naming `dvc queue logs <name>` for each that failed.

`dvc queue status` prints a table ``Task  Name  Created  Status`` (dvc/commands/queue/status.py), whose
status is one of Queued, Running, Failed, Success (dvc/repo/experiments/queue/base.py).
"""

import re
import subprocess
import sys
import time
from collections.abc import Callable

from pipeline.core.errors import UserError

PENDING = ("Queued", "Running")
FAILED = "Failed"
POLL_S = 30.0  # seconds between two looks at the queue: a seed's training takes minutes
_QUEUED = re.compile(r"^Queued experiment '([^']+)' for future execution\.$", re.MULTILINE)


def queued_names(text: str) -> list[str]:
    """The experiments' names in what `dvc exp run --queue` printed. Raises UserError if there are none."""
    names = _QUEUED.findall(text)
    if not names:
        raise UserError(
            "no `Queued experiment '<name>'` line in the output of dvc exp run --queue; nothing to wait for"
        )
    return names


def task_states(text: str) -> dict[str, str]:
    """Name → status of each task in the table `dvc queue status` prints (a task without a name is left out)."""
    rows = [line.split() for line in text.splitlines()]
    return {row[1]: row[-1] for row in rows if len(row) >= 5 and row[-1] in (*PENDING, FAILED, "Success")}


def dvc_queue_status() -> str:
    """What `dvc queue status` prints in the working directory. Raises UserError if it fails."""
    shown = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True)
    if shown.returncode != 0:
        raise UserError(f"dvc queue status failed (exit {shown.returncode}); run it to see why")
    return shown.stdout


def wait(
    names: list[str],
    status: Callable[[], str] = dvc_queue_status,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = POLL_S,
) -> None:
    """Return once none of the experiments ``names`` is queued or running in DVC's queue (``status()`` gives
    `dvc queue status`'s table; ``sleep(poll_s)`` between looks, in seconds). A name the table no longer lists
    counts as done. Raises UserError naming `dvc queue logs <name>` for those that failed."""
    while True:
        states = task_states(status())
        if not any(states.get(name) in PENDING for name in names):
            break
        sleep(poll_s)
    failed = [name for name in names if states.get(name) == FAILED]
    if failed:
        logs = "; ".join(f"dvc queue logs {name}" for name in failed)
        raise UserError(f"{len(failed)} of {len(names)} queued experiments failed; see why: {logs}")


def main(argv: list[str]) -> int:
    """``python -m pipeline.cli.queue QUEUED``: wait for the experiments QUEUED names. Exit status 0 when every
    one succeeded, 1 (one ``error:`` line) when one failed or QUEUED names none."""
    try:
        with open(argv[0]) as queued:
            wait(queued_names(queued.read()))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
