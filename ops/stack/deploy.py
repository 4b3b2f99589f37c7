"""Deploying to a Prefect server, the stack's or any other (the compose `deploy` service): the process work pool,
the deployments of deployments/prefect.yaml and the automations of deployments/automations.yaml."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from ops.stack.processes import bin_path, http_ok, http_request
from ops.stack.topology import (AUTOMATIONS_FILE, DEFAULT_CRON, DEFAULT_SPEC, PREFECT_FILE, REPO, WORK_POOL,
                                StackError)


@contextmanager
def prefect_settings(api_url: str, auth_string: str | None) -> Iterator[None]:
    """Prefect clients made inside talk to api_url and send auth_string (this process's defaults elsewhere)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: api_url}
    if auth_string:
        updates[PREFECT_API_AUTH_STRING] = auth_string
    with temporary_settings(updates=updates):
        yield


def check_prefect_auth(api_url: str, auth_string: str | None) -> None:
    """Fail with what to do when the Prefect server refuses these credentials (its /health needs none)."""
    status, _ = http_request(f"{api_url.rstrip('/')}/admin/version",
                             "Basic " + base64.b64encode(auth_string.encode()).decode() if auth_string else None)
    if status == 401:
        raise StackError(f"the Prefect server at {api_url} refused the API auth string (HTTP 401): set "
                         "SLMOPS_PREFECT_AUTH_STRING (PREFECT_API_AUTH_STRING for a client) to the one it was "
                         "started with, or stop the stack (down) and start it again with the new one")
    if status != 200:
        raise StackError(f"the Prefect server at {api_url} answered HTTP {status} to an authenticated request")


def deploy_to(api_url: str, cron: str | None = None, spec: str | None = None, env: dict[str, str] | None = None,
              timeout_s: float = 300.0, auth_string: str | None = None) -> None:
    """Create the work pool if missing, run `prefect deploy --all` on deployments/prefect.yaml, (re)create the
    automations of deployments/automations.yaml. Works against any Prefect server (the compose `deploy` service).
    auth_string: the server's API auth string (default: PREFECT_API_AUTH_STRING of env, else of this process)."""
    if not http_ok(f"{api_url.rstrip('/')}/health"):
        raise StackError(f"the Prefect server at {api_url} is unreachable; start it (python -m ops.stack up) or "
                         "set PREFECT_API_URL to its /api address")
    env = dict(env if env is not None else os.environ)
    auth_string = auth_string or env.get("PREFECT_API_AUTH_STRING") or os.environ.get("PREFECT_API_AUTH_STRING")
    check_prefect_auth(api_url, auth_string)
    ensure_work_pool(api_url, auth_string)
    if auth_string:
        env["PREFECT_API_AUTH_STRING"] = auth_string
    env = {**env, "PREFECT_API_URL": api_url, "PREFECT_CLI_PROMPT": "false",
           "SLMOPS_SWEEP_CRON": cron or os.environ.get("SLMOPS_SWEEP_CRON", DEFAULT_CRON),
           "SLMOPS_SWEEP_SPEC": spec or os.environ.get("SLMOPS_SWEEP_SPEC", DEFAULT_SPEC)}
    done = subprocess.run([bin_path("prefect"), "deploy", "--all", "--prefect-file", str(PREFECT_FILE)],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise StackError(f"prefect deploy failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
    create_automations(api_url, auth_string)


def ensure_work_pool(api_url: str, auth_string: str | None = None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with prefect_settings(api_url, auth_string):
        with get_client(sync_client=True) as client:
            try:
                client.read_work_pool(WORK_POOL)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(
                    name=WORK_POOL, type="process", description="slmops sweeps and variant conversions",
                    base_job_template=ProcessWorker.get_default_base_job_template()))


def create_automations(api_url: str, auth_string: str | None = None) -> list[str]:
    """(Re)create each automation of deployments/automations.yaml by name, so deploying twice makes no duplicate."""
    import yaml
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    specs = yaml.safe_load(AUTOMATIONS_FILE.read_text())["automations"]
    names = []
    with prefect_settings(api_url, auth_string):
        with get_client(sync_client=True) as client:
            for spec in specs:
                automation = AutomationCore.model_validate(spec)
                for old in client.read_automations_by_name(automation.name):
                    client.delete_automation(old.id)
                client.create_automation(automation)
                names.append(automation.name)
    return names
