"""The temporary Prefect server a command's flows report to when no PREFECT_API_URL is set: started once, early,
and always stopped, also when this process is killed with SIGKILL.

Prefect's own temporary server (``SubprocessASGIServer``) is started lazily by the first flow and stopped at exit. Two
ways it outlived us: a start that timed out left its process running while Prefect started a second one on the same
port, and a `kill -9` of the sweep left it running (nothing runs at exit then). This one is the same uvicorn
command, started by this process with a parent-death signal (Linux ``PR_SET_PDEATHSIG``), waited for with a
deadline (SLMOPS_PREFECT_STARTUP_TIMEOUT_S, default 120 s) that stops it when passed, and stopped when the command
ends.

    with temporary_server(work_dir) as server:    # starts it; import flows meanwhile
        server.wait_ready()                        # raises SlmopsError naming the deadline (no traceback)
        with server.settings():                    # PREFECT_API_URL points at it for the flows run in the block
            ...
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from slmops.children import dies_with_parent
from slmops.errors import SlmopsError

TIMEOUT_VAR = "SLMOPS_PREFECT_STARTUP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def startup_timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_VAR, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(raw)
    except ValueError:
        raise SlmopsError(f"{TIMEOUT_VAR}={raw!r}: expected seconds, e.g. {DEFAULT_TIMEOUT_S:g}") from None
    if value <= 0:
        raise SlmopsError(f"{TIMEOUT_VAR}={raw!r}: must be above 0")
    return value


class TemporaryServer:
    """One Prefect API server (SQLite in PREFECT_HOME, no UI) in a child process that dies with this one."""

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        import prefect

        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # Prefect's SubprocessASGIServer command (prefect/server/api/server.py), in a process we own
        command = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent),
                   "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
                   str(self.port), "--log-level", "error", "--lifespan", "on"]
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=dies_with_parent())

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the server answers its health check; stop it and raise when it dies or the deadline passes."""
        timeout_s = startup_timeout_s() if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise SlmopsError(f"the temporary Prefect server exited with status {self.process.returncode} "
                                  f"before it answered; its log: {self.log_file}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SlmopsError(
                    f"the temporary Prefect server did not answer within {timeout_s:g} s and was stopped; raise "
                    f"{TIMEOUT_VAR} (a first run on a slow machine can take longer), or run a Prefect server "
                    "(prefect server start) and set PREFECT_API_URL")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @contextlib.contextmanager
    def settings(self) -> Iterator[None]:
        """PREFECT_API_URL set to this server for the block; no flow-run heartbeats (nothing watches them here,
        and each flow waits up to 1 s for its heartbeat thread)."""
        from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


def needs_temporary_server() -> bool:
    """True when no Prefect API is configured and Prefect would otherwise start its own temporary server."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    return not PREFECT_API_URL.value() and PREFECT_SERVER_EPHEMERAL_ENABLED.value()


@contextlib.contextmanager
def prefect_api(work_dir: Path) -> Iterator[TemporaryServer | None]:
    """The configured Prefect API (None), or a temporary server started now and stopped when the block ends."""
    if not needs_temporary_server():
        yield None
        return
    server = TemporaryServer(work_dir / "logs" / "prefect-server.log")
    server.start()
    try:
        yield server
    finally:
        _drain_workers()
        server.stop()


def _drain_workers(timeout_s: float = 10.0) -> None:
    """Send the logs and events Prefect still holds while the server is up. Left for exit, they go to a stopped
    server, and the process retried for about a minute before it ended ("Error logging to API: All connection
    attempts failed"; measured here: 60-75 s of every `slmops sweep`)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout_s)
        except Exception:  # noqa: BLE001 -- a worker that never started, or one that fails: nothing left to lose
            pass
