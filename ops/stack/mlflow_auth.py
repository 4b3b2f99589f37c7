"""MLflow's basic-auth app on the stack's MLflow server: its configuration file (no secret in it), and the
pipeline's own user, which the admin creates."""

from __future__ import annotations

import base64
import configparser
import urllib.parse
from pathlib import Path

from ops.stack.processes import http_request
from ops.stack.topology import StackError

# MLflow's basic-auth app. NO_PERMISSIONS: a user sees and changes only what it created (MLflow grants the
# creator MANAGE on a new experiment or registered model) or what an admin granted it.
MLFLOW_DEFAULT_PERMISSION = "NO_PERMISSIONS"


def write_mlflow_auth_config(path: Path, database_uri: str) -> None:
    """The ini of MLFLOW_AUTH_CONFIG_PATH, with no secret in it: the admin's name and password come from
    MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD, the database's password from PGPASSWORD."""
    config = configparser.ConfigParser()
    config["mlflow"] = {"default_permission": MLFLOW_DEFAULT_PERMISSION, "database_uri": database_uri,
                        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth"}
    with open(path, "w", encoding="utf-8") as out:
        config.write(out)


def _basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def ensure_mlflow_user(mlflow_url: str, admin: tuple[str, str], user: tuple[str, str]) -> str:
    """Create the pipeline's MLflow user as the admin (not an admin itself), or set its password when it exists
    (so changing SLMOPS_MLFLOW_PASSWORD and running `up` again rotates it); return 'created' or 'updated'."""
    base, auth = mlflow_url.rstrip("/"), _basic_auth(*admin)
    status, _ = http_request(f"{base}/api/2.0/mlflow/users/get?username={urllib.parse.quote(user[0])}", auth)
    if status == 401:
        raise StackError(f"the MLflow server at {mlflow_url} refused the admin's credentials "
                         f"(SLMOPS_MLFLOW_ADMIN_USER={admin[0]}, SLMOPS_MLFLOW_ADMIN_PASSWORD): the admin is created "
                         "once, with the password of the first start; see docs/security.md to rotate it")
    if status == 200:
        status, text = http_request(f"{base}/api/2.0/mlflow/users/update-password", auth, "PATCH",
                                    {"username": user[0], "password": user[1]})
        done = "updated"
    else:
        status, text = http_request(f"{base}/api/2.0/mlflow/users/create", auth, "POST",
                                    {"username": user[0], "password": user[1]})
        done = "created"
    if status != 200:
        raise StackError(f"the MLflow server at {mlflow_url} did not accept the pipeline's user {user[0]!r} "
                         f"(HTTP {status}): {text.strip()[:300]}")
    return done
