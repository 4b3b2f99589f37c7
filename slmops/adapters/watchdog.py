"""A watchdog for one runtime request: cancels it, from a thread of its own, if it is still running after a timeout.

    with Watchdog(request, timeout_s) as watchdog:
        ...                       # the request; watchdog.fired says whether it was cancelled
"""

from __future__ import annotations

import threading
from typing import Any


class Watchdog:
    """Cancels a request still running after timeout_s, from a thread of its own."""

    def __init__(self, request: Any, timeout_s: float) -> None:
        self.fired = False
        self._request = request
        self._timeout_s = timeout_s
        self._done = threading.Event()
        self._lock = threading.Lock()  # never cancel a request that has finished (and may be released)
        self._thread = threading.Thread(target=self._run, name="slmops-foundry-watchdog", daemon=True)

    def _run(self) -> None:
        if self._done.wait(self._timeout_s):
            return
        self.fired = True
        # cancel() only reaches a request the runtime is processing: repeat until it has stopped
        while True:
            with self._lock:
                if self._done.is_set():
                    return
                self._request.cancel()
            self._done.wait(0.01)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._done.set()
        self._thread.join()
