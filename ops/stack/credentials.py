"""The stack's credentials: the ones the user sets (in the environment or an env file such as ./.env), checked
before anything starts, and the private files (0600) they are kept in."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from ops.stack.topology import REPO, StackError


class SecretsError(StackError):
    """A credential the stack needs is missing, a placeholder or too weak: nothing was started."""

    exit_code = 2


# The credentials the user sets, in the environment or an env file (.env, the file docker compose reads too).
SECRET_VARS = {
    "SLMOPS_PREFECT_AUTH_STRING": "the Prefect server's API auth string, which clients and workers send",
    "SLMOPS_MLFLOW_ADMIN_PASSWORD": "the MLflow admin's password",
    "SLMOPS_MLFLOW_PASSWORD": "the password of the pipeline's own MLflow user, which the workers log in as",
}
USER_VARS = {"SLMOPS_MLFLOW_ADMIN_USER": "admin", "SLMOPS_MLFLOW_USER": "slmops"}
# Made by `up` (random) and kept in the state folder's secrets.env: nobody needs to type them.
GENERATED_VARS = ("SLMOPS_POSTGRES_PASSWORD", "SLMOPS_MLFLOW_SECRET_KEY")
# Never inherited by a process of the stack from the caller's environment: each gets only the ones it needs.
PRIVATE_VARS = (*SECRET_VARS, *GENERATED_VARS, "PGPASSWORD", "POSTGRES_PASSWORD")
MIN_SECRET_CHARS = 12  # MLflow's own minimum for a password
ENV_EXAMPLE = REPO / ".env.example"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as in docker compose's .env: # comments, blank lines, optional quotes."""
    values = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, raw = line.removeprefix("export ").partition("=")
        if not sep:
            raise SecretsError(f"{path}:{number}: expected KEY=VALUE")
        try:
            values[key.strip()] = " ".join(shlex.split(raw, comments=True))
        except ValueError as err:
            raise SecretsError(f"{path}:{number}: {key.strip()}: {err}") from None
    return values


def _placeholders() -> set[str]:
    """Values that must never be a credential: the ones .env.example shows, and the usual 'change-me'."""
    shown = read_env_file(ENV_EXAMPLE) if ENV_EXAMPLE.is_file() else {}
    return {"change-me", "changeme"} | {v.lower() for k, v in shown.items() if k in SECRET_VARS and v}


def credentials_from(environ: Mapping[str, str], env_file: Path | None = None) -> dict[str, str]:
    """The stack's credentials (SECRET_VARS, USER_VARS) that are set: the environment first, then env_file."""
    from_file = read_env_file(env_file) if env_file is not None and env_file.is_file() else {}
    found = {}
    for name in (*SECRET_VARS, *USER_VARS):
        value = environ.get(name) or from_file.get(name)
        if value:
            found[name] = value
    return found


def check_credentials(values: Mapping[str, str], where: str = "the environment or .env") -> dict[str, str]:
    """Every credential set, none a placeholder or shorter than MIN_SECRET_CHARS; usernames defaulted."""
    placeholders = _placeholders()
    for name, what in SECRET_VARS.items():
        value = values.get(name, "")
        if not value:
            raise SecretsError(f"{name} is not set ({what}): set it in {where} (see .env.example), "
                               f"at least {MIN_SECRET_CHARS} characters")
        if value.strip().lower() in placeholders:
            raise SecretsError(f"{name} is the placeholder of .env.example: choose a secret of your own, at least "
                               f"{MIN_SECRET_CHARS} characters")
        if len(value) < MIN_SECRET_CHARS:
            raise SecretsError(f"{name} is too short ({len(value)} characters): use at least {MIN_SECRET_CHARS}")
    checked = {**USER_VARS, **{k: v for k, v in values.items() if k in (*SECRET_VARS, *USER_VARS) and v}}
    if checked["SLMOPS_MLFLOW_PASSWORD"] == checked["SLMOPS_MLFLOW_ADMIN_PASSWORD"]:
        raise SecretsError("SLMOPS_MLFLOW_PASSWORD must differ from SLMOPS_MLFLOW_ADMIN_PASSWORD: every worker holds "
                           "the pipeline's password")
    if checked["SLMOPS_MLFLOW_USER"] == checked["SLMOPS_MLFLOW_ADMIN_USER"]:
        raise SecretsError("SLMOPS_MLFLOW_USER must differ from SLMOPS_MLFLOW_ADMIN_USER: the pipeline's user is "
                           "not an admin")
    return checked


def write_private(path: Path, values: Mapping[str, str]) -> None:
    """KEY=VALUE lines (shell-quoted: `set -a; . FILE` loads them) in a file only its owner can read (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.writelines(f"{key}={shlex.quote(value)}\n" for key, value in values.items())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
