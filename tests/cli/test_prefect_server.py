"""The temporary Prefect server a command starts when no PREFECT_API_URL is set: it answers, and it never outlives
the command, whether its start times out, the command ends, or the command is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from helpers import processes_with_env, wait_until_none, write_spec


def env_for(tmp: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    # a PREFECT_HOME of its own: every process this command starts carries it, which is how the test finds them
    return {**env, "PREFECT_HOME": str(tmp / "prefect-home"), "SLMOPS_FOUNDRY_CACHE": str(tmp / "foundry"), **extra}


def sweep(spec: Path, tmp: Path) -> list[str]:
    return [sys.executable, "-m", "slmops.cli", "sweep", str(spec), "--out", str(tmp / "out"), "--work-dir",
            str(tmp / "work")]


def test_a_start_past_its_deadline_stops_the_server_and_says_so_in_one_line(tiny_model, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", tiny_model, [{"name": "fp32", "precision": "fp32"}])
    env = env_for(tmp_path, SLMOPS_PREFECT_STARTUP_TIMEOUT_S="0.05")
    result = subprocess.run(sweep(spec, tmp_path), capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: the temporary Prefect server did not answer within 0.05 s and was stopped; raise "
        "SLMOPS_PREFECT_STARTUP_TIMEOUT_S (a first run on a slow machine can take longer), or run a Prefect server "
        "(prefect server start) and set PREFECT_API_URL"]
    assert "Traceback" not in result.stdout + result.stderr
    assert wait_until_none("PREFECT_HOME", env["PREFECT_HOME"], timeout_s=5) == []
    assert not (tmp_path / "out" / ".slmops-sweep.json").exists(), "no sweep started, so none to resume"


def test_the_server_answers_and_is_gone_when_its_block_ends(tmp_path):
    code = ("import sys, urllib.request\nfrom pathlib import Path\nfrom slmops.cli.server import prefect_api\n"
            "with prefect_api(Path(sys.argv[1])) as server:\n    server.wait_ready()\n"
            "    print(urllib.request.urlopen(server.api_url + '/health', timeout=5).status, flush=True)\n")
    env = env_for(tmp_path)
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "work")], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "200"
    assert wait_until_none("PREFECT_HOME", env["PREFECT_HOME"], timeout_s=5) == []


def test_a_command_killed_with_sigkill_takes_its_server_with_it(tmp_path):
    code = ("import sys, time\nfrom pathlib import Path\nfrom slmops.cli.server import prefect_api\n"
            "with prefect_api(Path(sys.argv[1])) as server:\n    server.wait_ready()\n"
            "    print(server.api_url, flush=True)\n    time.sleep(600)\n")
    env = env_for(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "work")], stdout=subprocess.PIPE, text=True,
                            env=env)
    api_url = proc.stdout.readline().strip()
    assert api_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{api_url}/health", timeout=5) as response:
        assert response.status == 200
    assert len(processes_with_env("PREFECT_HOME", env["PREFECT_HOME"])) == 2  # the command and its server
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert wait_until_none("PREFECT_HOME", env["PREFECT_HOME"]) == []
