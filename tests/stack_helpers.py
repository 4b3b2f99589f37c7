"""What the stack tests share: the sweep they deploy, publishing to the stack, and reading flow runs back from the
stack's Prefect server (with its auth string)."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from ops.stack import Stack

VARIANTS = [{"name": "fp32", "precision": "fp32"}, {"name": "int8", "precision": "int8"},
            {"name": "int4-b32", "precision": "int4", "block_size": 32}]


def write_sweep_spec(path: Path, model: Path, name: str = "tiny", variants: list[dict] = VARIANTS,
                     model_extra: dict | None = None, **extra) -> Path:
    path.write_text(yaml.safe_dump({"model": {"path": str(model), "name": name, **(model_extra or {})},
                                    "variants": variants, **extra}))
    return path


def new_credentials() -> dict[str, str]:
    """What a user puts in .env: a random secret for each credential the stack needs."""
    from ops.stack import SECRET_VARS

    return {name: secrets.token_urlsafe(24) for name in SECRET_VARS}


@contextmanager
def running_stack(root: Path, spec: Path, model_roots: list[Path], variant_workers: int = 2) -> Iterator[Stack]:
    """PostgreSQL, the Prefect and MLflow servers (authentication on, fresh credentials), deployed with `spec`, a
    sweep worker and `variant_workers` variant workers; stopped and purged on exit. Checkpoints may come from
    model_roots only. Inside, this process talks to MLflow as the pipeline's user (MLFLOW_TRACKING_USERNAME/PASSWORD)
    and to Prefect through prefect_client and publish, which send the auth string."""
    st = Stack(root / "state", work_dir=root / "work")
    try:
        st.up(variant_workers=variant_workers, ports={"postgres": 0, "prefect": 0, "mlflow": 0}, query_seconds=2,
              spec=str(spec), worker_env={"SLMOPS_FOUNDRY_CACHE": str(root / "foundry")},
              credentials=new_credentials(), model_roots=model_roots)
        client = st.client_env(with_secrets=True)
        with pytest.MonkeyPatch.context() as mp:
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                mp.setenv(name, client[name])
            yield st
    finally:
        st.down(purge=True)


def stack_settings(st: Stack):
    """Prefect settings of the stack's server and auth string (this session's own test server stays the default
    elsewhere)."""
    from ops.stack import prefect_settings

    return prefect_settings(st.prefect_api_url, st.client_env(with_secrets=True)["PREFECT_API_AUTH_STRING"])


@contextmanager
def prefect_client(st: Stack):
    """A Prefect client of the stack's server."""
    from prefect.client.orchestration import get_client

    with stack_settings(st):
        with get_client(sync_client=True) as client:
            yield client


def publish(st: Stack, path: Path, **kwargs) -> dict:
    """slmops publish to the stack, as a client holding its auth string."""
    from ops.events import publish_checkpoint

    with stack_settings(st):
        return publish_checkpoint(path, api_url=st.prefect_api_url, **kwargs)


def runs_of_deployment(st: Stack, deployment: str, **parameters) -> list:
    """Flow runs of a deployment whose parameters include these values."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with prefect_client(st) as client:
        dep = client.read_deployment_by_name(deployment)
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
    return [r for r in runs if all(r.parameters.get(k) == v for k, v in parameters.items())]


def wait_for_run(st: Stack, deployment: str, since: datetime, timeout_s: float = 240, **parameters):
    """The newest run of the deployment created after `since` with these parameters, once it is final."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [r for r in runs_of_deployment(st, deployment, **parameters) if r.created and r.created >= since]
        if runs:
            newest = max(runs, key=lambda r: r.created)
            if newest.state and newest.state.is_final():
                return newest
        time.sleep(1)
    raise AssertionError(f"no final run of {deployment} with {parameters} within {timeout_s} s; see {st.logs}")


def subflow_runs(st: Stack, parent_id) -> list:
    """Every flow run below a flow run (its subflows, theirs, ...)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    found, frontier = [], [parent_id]
    with prefect_client(st) as client:
        while frontier:
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
            found += children
            frontier = [c.id for c in children]
    return found


def runs_by_worker(st: Stack) -> dict[str, set[str]]:
    """Which flow runs each worker took, from the workers' own logs."""
    taken: dict[str, set[str]] = {}
    for log in st.logs.glob("worker-*.log"):
        for worker, run_id in re.findall(r"Worker '([^']+)' submitting flow run '([0-9a-f-]+)'", log.read_text()):
            taken.setdefault(worker, set()).add(run_id)
    return taken
