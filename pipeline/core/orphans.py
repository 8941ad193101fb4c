"""Child processes that die with their parent, so a SIGKILLed stage leaves no process behind."""

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int | None = None) -> bool:
    """Have the kernel SIGKILL this process when its parent dies; call first thing in a child.

    A parent killed with SIGKILL (the OOM killer, a pre-empted job, ``kill -9`` of a stage) cannot
    stop its children: decode workers would wait for tasks and torchrun's training ranks would train
    on, forever or to the end. Linux's ``prctl(PR_SET_PDEATHSIG)`` does it for them. ``parent``: the
    pid of the process that started this one, if known; when it is no longer the parent (it died
    before the call, and this process was adopted), this process kills itself at once. Returns False
    where the C library has no ``prctl`` (not Linux): there the children outlive a SIGKILLed parent.
    """
    prctl = getattr(ctypes.CDLL(None), "prctl", None)
    if prctl is None:
        return False
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    return True
