"""`python -m ops.stack up` refuses to start without the credentials, with a placeholder or with a weak one: one
line naming the variable, exit 2, nothing started or written (docs/security.md).

    .venv/bin/python -m pytest tests/stack/test_credentials.py      # no stack: a few seconds
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ops import stack
from ops.stack import MIN_SECRET_CHARS, SECRET_VARS, USER_VARS, main, read_env_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> Path:
    """No credential in the environment, and a current folder without .env; returns that folder."""
    for name in (*SECRET_VARS, *USER_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def good() -> dict[str, str]:
    return {name: secrets.token_urlsafe(18) for name in SECRET_VARS}


def refused(capsys, tmp_path: Path, *args: str) -> str:
    """`up` with these arguments: exit 2, one line on stderr (returned), no state folder made."""
    state = tmp_path / "state"
    assert main(["--dir", str(state), "up", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert not state.exists(), "nothing is written or started before the credentials are checked"
    return err[0]


def test_up_without_credentials_exits_2_naming_the_first_missing_variable(clean_env, capsys):
    line = refused(capsys, clean_env)
    assert line == ("error: SLMOPS_PREFECT_AUTH_STRING is not set (the Prefect server's API auth string, which "
                    "clients and workers send): set it in the environment or .env (see .env.example), at least "
                    f"{MIN_SECRET_CHARS} characters")


def test_the_command_itself_exits_2_before_starting_anything(clean_env):
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    done = subprocess.run([sys.executable, "-m", "ops.stack", "--dir", str(clean_env / "state"), "up"],
                          capture_output=True, text=True, env=env, cwd=clean_env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: SLMOPS_PREFECT_AUTH_STRING is not set") and done.stdout == ""
    assert not (clean_env / "state").exists()


def test_an_env_file_copied_from_env_example_is_refused(clean_env, capsys):
    shutil.copy(ROOT / ".env.example", clean_env / ".env")
    assert refused(capsys, clean_env).startswith("error: SLMOPS_PREFECT_AUTH_STRING is not set")


@pytest.mark.parametrize("name", list(SECRET_VARS))
def test_each_credential_is_required(clean_env, capsys, monkeypatch, name):
    for other, value in good().items():
        if other != name:
            monkeypatch.setenv(other, value)
    assert refused(capsys, clean_env).startswith(f"error: {name} is not set")


def test_a_placeholder_is_refused(clean_env, capsys, monkeypatch):
    for name, value in {**good(), "SLMOPS_MLFLOW_PASSWORD": "change-me"}.items():
        monkeypatch.setenv(name, value)
    assert refused(capsys, clean_env) == ("error: SLMOPS_MLFLOW_PASSWORD is the placeholder of .env.example: choose a "
                                          f"secret of your own, at least {MIN_SECRET_CHARS} characters")


def test_a_short_password_is_refused(clean_env, capsys, monkeypatch):
    for name, value in {**good(), "SLMOPS_MLFLOW_ADMIN_PASSWORD": "hunter2"}.items():
        monkeypatch.setenv(name, value)
    assert refused(capsys, clean_env) == (f"error: SLMOPS_MLFLOW_ADMIN_PASSWORD is too short (7 characters): use at "
                                          f"least {MIN_SECRET_CHARS}")


def test_the_pipeline_user_cannot_share_the_admins_password_or_name(clean_env, capsys, monkeypatch):
    values = good()
    values["SLMOPS_MLFLOW_PASSWORD"] = values["SLMOPS_MLFLOW_ADMIN_PASSWORD"]
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert "SLMOPS_MLFLOW_PASSWORD must differ from SLMOPS_MLFLOW_ADMIN_PASSWORD" in refused(capsys, clean_env)
    monkeypatch.setenv("SLMOPS_MLFLOW_PASSWORD", good()["SLMOPS_MLFLOW_PASSWORD"])
    monkeypatch.setenv("SLMOPS_MLFLOW_USER", "admin")
    assert "SLMOPS_MLFLOW_USER must differ from SLMOPS_MLFLOW_ADMIN_USER" in refused(capsys, clean_env)


def test_credentials_come_from_the_env_file_and_the_environment_wins(clean_env, monkeypatch):
    from_file = good()
    (clean_env / "creds.env").write_text("# a comment\n" + "".join(f"{k}='{v}'\n" for k, v in from_file.items()))
    monkeypatch.setenv("SLMOPS_MLFLOW_PASSWORD", "from-the-environment-1")
    found = stack.credentials_from(os.environ, clean_env / "creds.env")
    assert found == {**from_file, "SLMOPS_MLFLOW_PASSWORD": "from-the-environment-1"}
    assert stack.check_credentials(found)["SLMOPS_MLFLOW_USER"] == "slmops", "usernames have defaults"


def test_a_missing_env_file_named_on_the_command_line_is_an_error(clean_env, capsys):
    assert refused(capsys, clean_env, "--env-file", "nowhere.env") == "error: --env-file nowhere.env: no such file"


def test_env_example_names_every_credential_and_shows_no_value(clean_env):
    example = read_env_file(ROOT / ".env.example")
    assert {name: example.get(name) for name in SECRET_VARS} == {name: "" for name in SECRET_VARS}
    assert {name: example[name] for name in USER_VARS} == USER_VARS
