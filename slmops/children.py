"""Child processes that die with the process that started them, however it dies (a `kill -9` included): the
temporary Prefect server, the measuring processes.

    subprocess.Popen(command, preexec_fn=dies_with_parent())

Linux's ``PR_SET_PDEATHSIG`` sends the child SIGTERM when the thread that started it exits; slmops starts children
from the thread that then waits for them (or from the main thread), so that is the process's end. Elsewhere the
child is stopped only by the code that started it.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def dies_with_parent() -> Callable[[], None]:
    """A preexec_fn that arms the parent-death signal (and exits if the parent is already gone)."""
    parent = os.getpid()

    def arm() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (AttributeError, OSError):
            return
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm
