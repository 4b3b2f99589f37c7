"""The stack's processes on loopback: free ports, HTTP checks and requests to its servers, and process groups to
wait for and to stop with everything they started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ops.stack.topology import HOST, StackError


def apt_install(package: str, label: str) -> None:
    """Debian's package (or packages, space-separated) installed with apt-get (as root; the caller checks), progress
    on stderr, a failure raised with apt-get's own words."""
    print(f"installing {label}: apt-get update && apt-get install -y {package}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *package.split()]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise StackError(f"{' '.join(cmd)} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")


def bin_path(name: str) -> str:
    """An executable of this Python environment (prefect, mlflow), found next to the interpreter."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def http_ok(url: str, timeout_s: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (loopback)
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def http_request(url: str, authorization: str | None = None, method: str = "GET", body: dict | None = None,
                 timeout_s: float = 10.0) -> tuple[int, str]:
    """(HTTP status, body) of one request; never raises for an HTTP error status."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if authorization:
        headers["Authorization"] = authorization
    prepared = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(prepared, timeout=timeout_s) as response:  # noqa: S310 (the stack's servers)
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's group now: ours is gone
        return False
    return True


def descendants(pid: int) -> list[int]:
    """Every process below pid, wherever its group: Prefect starts each flow run in a session of its own."""
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal_all(pgid: int, pids: list[int], sig: int) -> None:
    for send, target in [(os.killpg, pgid)] + [(os.kill, p) for p in pids]:
        try:
            send(target, sig)
        except (ProcessLookupError, PermissionError):
            continue  # gone already


def _any_alive(pgid: int, pids: list[int]) -> bool:
    import psutil

    try:  # reap the leader if it is our child (started by this process): a zombie still counts in its group
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: init reaps it
    return group_alive(pgid) or any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                    for p in pids)


def stop_groups(pgids: list[int], grace_s: float = 15.0, sig: int = signal.SIGTERM) -> None:
    """Signal each process group and every descendant at once (SIGTERM), wait for all, SIGKILL what is left."""
    targets = [(pgid, descendants(pgid)) for pgid in pgids]
    targets = [(pgid, pids) for pgid, pids in targets if _any_alive(pgid, pids)]
    for pgid, pids in targets:
        _signal_all(pgid, pids, sig)
    for final in (False, True):
        deadline = time.monotonic() + (grace_s if not final else 5)
        while time.monotonic() < deadline:
            targets = [(pgid, pids) for pgid, pids in targets if _any_alive(pgid, pids)]
            if not targets:
                return
            time.sleep(0.2)
        if not final:
            for pgid, pids in targets:
                _signal_all(pgid, pids, signal.SIGKILL)


def wait_for(url: str, what: str, log: Path, pgid: int | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http_ok(url):
            return
        if pgid is not None and not group_alive(pgid):
            raise StackError(f"{what} exited while starting; see {log}:\n{tail(log)}")
        time.sleep(0.5)
    raise StackError(f"{what} did not answer {url} within {timeout_s:.0f} s; see {log}:\n{tail(log)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
