"""The server stack as plain processes on loopback, started once for the module that asks for it, stopped after.

    .venv/bin/python -m pytest tests/stack            # about 4 minutes on 2 cores; -m "not slow" leaves the stack out

PostgreSQL is installed with apt-get by ops.stack when it is missing (as root). Every port is a free one, every
folder a temporary one, every credential a fresh random one: the stack touches nothing of the developer's.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.stack import Stack
from stack_helpers import write_sweep_spec


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts the server stack (PostgreSQL, Prefect, MLflow, workers)")


def new_credentials() -> dict[str, str]:
    """What a user puts in .env: a random secret for each credential the stack needs."""
    from ops.stack import SECRET_VARS

    return {name: secrets.token_urlsafe(24) for name in SECRET_VARS}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model, session_dir) -> Iterator[Stack]:
    """PostgreSQL, the Prefect and MLflow servers (authentication on), deployed, a sweep worker and two variant
    workers (per module: stopped as soon as the module's tests are done). Checkpoints may come from the tests'
    temporary folders only. This process talks to MLflow as the pipeline's user (MLFLOW_TRACKING_USERNAME/PASSWORD
    for the module) and to Prefect through stack_helpers (prefect_client, publish), which send the auth string."""
    root = tmp_path_factory.mktemp("stack")
    spec = write_sweep_spec(root / "deployed-spec.yaml", tiny_model)
    st = Stack(root / "state", work_dir=root / "work")
    try:
        st.up(variant_workers=2, ports={"postgres": 0, "prefect": 0, "mlflow": 0}, query_seconds=2, spec=str(spec),
              worker_env={"SLMOPS_FOUNDRY_CACHE": str(root / "foundry")}, credentials=new_credentials(),
              model_roots=[tmp_path_factory.getbasetemp(), session_dir])
        client = st.client_env(with_secrets=True)
        with pytest.MonkeyPatch.context() as mp:
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                mp.setenv(name, client[name])
            yield st
    finally:
        st.down(purge=True)


@pytest.fixture
def checkpoint(tiny_model, tmp_path) -> Path:
    """A fresh copy of the tiny model under a unique name: each triggered sweep gets an output folder of its own."""
    target = tmp_path / "checkpoints" / f"step-{time.monotonic_ns() % 10**9}"
    shutil.copytree(tiny_model, target)
    return target


