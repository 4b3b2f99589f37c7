"""The server stack as plain processes on loopback: PostgreSQL (Debian's package), the Prefect server and the MLflow
tracking server on it, and Prefect workers. The topology of docker-compose.yml, for machines without Docker.

    cp .env.example .env && $EDITOR .env             # the credentials: nothing starts without them
    python -m ops.stack up                           # start it all, deploy; prints the variables to export
    python -m ops.stack up --env-file FILE           # credentials from FILE (default ./.env; the environment wins)
    python -m ops.stack up --model-roots DIR:DIR     # the only folders checkpoints may come from
    python -m ops.stack up --variant-workers 2       # two workers share the variants of a sweep (scale-out)
    python -m ops.stack deploy                       # (again) the work pool, deployments/prefect.yaml, automations
    python -m ops.stack env [--with-secrets]         # export lines: PREFECT_API_URL, MLFLOW_TRACKING_URI, ...
    python -m ops.stack status
    python -m ops.stack down [--purge]               # stop every process it started; --purge deletes its data

Authentication is always on (docs/security.md): the Prefect server checks its API auth string, the MLflow server
runs MLflow's basic-auth app (an admin, and the pipeline's own user that the workers log in as), PostgreSQL
asks for a password it was given at `initdb`. The user sets SLMOPS_PREFECT_AUTH_STRING, SLMOPS_MLFLOW_ADMIN_PASSWORD
and SLMOPS_MLFLOW_PASSWORD; `up` refuses to start without them, or with a placeholder or a short one.

Every process runs in its own process group, so `down` also stops what they started (MLflow's job consumers, the
flow-run processes of a worker). The state folder (--dir, default $SLMOPS_HOME/stack, mode 0700) holds state.json
(ports, process ids: no secret), secrets.env and client.env (mode 0600: every credential, and what a client
needs), logs/, the PostgreSQL cluster and MLflow's artifacts.

One module per job: topology (the names and ports both topologies share), credentials (what the user sets, checked
before anything starts), processes (ports, process groups), postgres, mlflow_auth (MLflow's basic-auth app),
deploy (to any Prefect server), services (the Stack of one state folder) and cli (the command).
"""

from ops.stack.cli import default_state_dir, main
from ops.stack.credentials import (GENERATED_VARS, MIN_SECRET_CHARS, SECRET_VARS, USER_VARS, SecretsError,
                                   check_credentials, credentials_from, read_env_file)
from ops.stack.deploy import check_prefect_auth, create_automations, deploy_to, ensure_work_pool, prefect_settings
from ops.stack.mlflow_auth import MLFLOW_DEFAULT_PERMISSION, ensure_mlflow_user, write_mlflow_auth_config
from ops.stack.postgres import Postgres
from ops.stack.processes import descendants, free_port, group_alive, http_ok, port_in_use, stop_groups
from ops.stack.services import Stack
from ops.stack.topology import (AUTOMATIONS_FILE, DEFAULT_CRON, DEFAULT_PORTS, DEFAULT_SPEC, HEARTBEAT_S, HOST,
                                MLFLOW_AUTH_DB, MLFLOW_DB, PREFECT_DB, PREFECT_FILE, REPO, SWEEP_QUEUE, VARIANT_QUEUE,
                                WORK_POOL, StackError)

__all__ = [
    "AUTOMATIONS_FILE", "DEFAULT_CRON", "DEFAULT_PORTS", "DEFAULT_SPEC", "GENERATED_VARS", "HEARTBEAT_S", "HOST",
    "MIN_SECRET_CHARS", "MLFLOW_AUTH_DB", "MLFLOW_DB", "MLFLOW_DEFAULT_PERMISSION", "PREFECT_DB", "PREFECT_FILE",
    "REPO", "SECRET_VARS", "SWEEP_QUEUE", "USER_VARS", "VARIANT_QUEUE", "WORK_POOL", "Postgres", "SecretsError",
    "Stack", "StackError", "check_credentials", "check_prefect_auth", "create_automations", "credentials_from",
    "default_state_dir", "deploy_to", "descendants", "ensure_mlflow_user", "ensure_work_pool", "free_port",
    "group_alive", "http_ok", "main", "port_in_use", "prefect_settings", "read_env_file", "stop_groups",
    "write_mlflow_auth_config",
]
