"""What the processes of the stack and docker-compose.yml share: the repository's deployment files, the names of
the work pool, its queues and the databases, the default ports; and StackError."""

from __future__ import annotations

from pathlib import Path

from slmops.errors import SlmopsError

REPO = Path(__file__).resolve().parents[2]
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
AUTOMATIONS_FILE = REPO / "deployments" / "automations.yaml"
WORK_POOL = "slmops"
SWEEP_QUEUE = "sweeps"
VARIANT_QUEUE = "variants"
PREFECT_DB = "prefect"
MLFLOW_DB = "mlflow"
MLFLOW_AUTH_DB = "mlflow_auth"  # MLflow's basic-auth app: users, their password hashes and permissions
HOST = "127.0.0.1"
DEFAULT_PORTS = {"postgres": 55432, "prefect": 4200, "mlflow": 5000}
DEFAULT_CRON = "0 2 * * *"
DEFAULT_SPEC = "configs/demo.yaml"
# the lowest Prefect allows; the crash automation (deployments/automations.yaml) waits three of them
HEARTBEAT_S = 30


class StackError(SlmopsError):
    """The stack could not be started, deployed or stopped."""
