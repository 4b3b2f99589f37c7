"""The server stack as plain processes on loopback: PostgreSQL (Debian's package), the Prefect server and the MLflow
tracking server on it, and Prefect workers. The topology of docker-compose.yml, for machines without Docker.

    cp .env.example .env && $EDITOR .env             # the credentials: nothing starts without them
    python -m slmops.stack up                        # start it all, deploy; prints the variables to export
    python -m slmops.stack up --env-file FILE        # credentials from FILE (default ./.env; the environment wins)
    python -m slmops.stack up --model-roots DIR:DIR  # the only folders checkpoints may come from
    python -m slmops.stack up --variant-workers 2    # two workers share the variants of a sweep (scale-out)
    python -m slmops.stack deploy                    # (again) the work pool, deployments/prefect.yaml, automations
    python -m slmops.stack env [--with-secrets]      # export lines: PREFECT_API_URL, MLFLOW_TRACKING_URI, ...
    python -m slmops.stack status
    python -m slmops.stack down [--purge]            # stop every process it started; --purge deletes its data

Authentication is always on (docs/security.md): the Prefect server checks its API auth string, the MLflow server
runs MLflow's basic-auth app (an admin, and the pipeline's own user that the workers log in as), PostgreSQL
asks for a password it was given at `initdb`. The user sets SLMOPS_PREFECT_AUTH_STRING, SLMOPS_MLFLOW_ADMIN_PASSWORD
and SLMOPS_MLFLOW_PASSWORD; `up` refuses to start without them, or with a placeholder or a short one.

Every process runs in its own process group, so `down` also stops what they started (MLflow's job consumers, the
flow-run processes of a worker). The state folder (--dir, default $SLMOPS_HOME/stack, mode 0700) holds state.json
(ports, process ids: no secret), secrets.env and client.env (mode 0600: every credential, and what a client
needs), logs/, the PostgreSQL cluster and MLflow's artifacts.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import hashlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from slmops.checkpoints import ALLOWED_ROOTS_VAR
from slmops.errors import SlmopsError

REPO = Path(__file__).resolve().parents[1]
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
_PRIVATE_VARS = (*SECRET_VARS, *GENERATED_VARS, "PGPASSWORD", "POSTGRES_PASSWORD")
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


def _write_private(path: Path, values: Mapping[str, str]) -> None:
    """KEY=VALUE lines (shell-quoted: `set -a; . FILE` loads them) in a file only its owner can read (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.writelines(f"{key}={shlex.quote(value)}\n" for key, value in values.items())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _request(url: str, authorization: str | None = None, method: str = "GET", body: dict | None = None,
             timeout_s: float = 10.0) -> tuple[int, str]:
    """(HTTP status, body) of one request; never raises for an HTTP error status."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (the stack's servers)
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


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
    status, _ = _request(f"{api_url.rstrip('/')}/admin/version",
                         "Basic " + base64.b64encode(auth_string.encode()).decode() if auth_string else None)
    if status == 401:
        raise StackError(f"the Prefect server at {api_url} refused the API auth string (HTTP 401): set "
                         "SLMOPS_PREFECT_AUTH_STRING (PREFECT_API_AUTH_STRING for a client) to the one it was "
                         "started with, or stop the stack (down) and start it again with the new one")
    if status != 200:
        raise StackError(f"the Prefect server at {api_url} answered HTTP {status} to an authenticated request")


def ensure_mlflow_user(mlflow_url: str, admin: tuple[str, str], user: tuple[str, str]) -> str:
    """Create the pipeline's MLflow user as the admin (not an admin itself), or set its password when it exists
    (so changing SLMOPS_MLFLOW_PASSWORD and running `up` again rotates it); return 'created' or 'updated'."""
    base, auth = mlflow_url.rstrip("/"), _basic_auth(*admin)
    status, _ = _request(f"{base}/api/2.0/mlflow/users/get?username={urllib.parse.quote(user[0])}", auth)
    if status == 401:
        raise StackError(f"the MLflow server at {mlflow_url} refused the admin's credentials "
                         f"(SLMOPS_MLFLOW_ADMIN_USER={admin[0]}, SLMOPS_MLFLOW_ADMIN_PASSWORD): the admin is created "
                         "once, with the password of the first start; see docs/security.md to rotate it")
    if status == 200:
        status, text = _request(f"{base}/api/2.0/mlflow/users/update-password", auth, "PATCH",
                                {"username": user[0], "password": user[1]})
        done = "updated"
    else:
        status, text = _request(f"{base}/api/2.0/mlflow/users/create", auth, "POST",
                                {"username": user[0], "password": user[1]})
        done = "created"
    if status != 200:
        raise StackError(f"the MLflow server at {mlflow_url} did not accept the pipeline's user {user[0]!r} "
                         f"(HTTP {status}): {text.strip()[:300]}")
    return done


def _bin(name: str) -> str:
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


def _wait_for(url: str, what: str, log: Path, pgid: int | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http_ok(url):
            return
        if pgid is not None and not group_alive(pgid):
            raise StackError(f"{what} exited while starting; see {log}:\n{_tail(log)}")
        time.sleep(0.5)
    raise StackError(f"{what} did not answer {url} within {timeout_s:.0f} s; see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Postgres:
    """A PostgreSQL cluster of Debian's packages in a folder, on a loopback port; with a password, every connection
    (TCP and its socket) must give it (scram-sha-256), so other users of the machine cannot read the stores."""

    data_dir: Path
    port: int
    password: str | None = None

    @staticmethod
    def bin_dir() -> Path:
        """Where initdb/pg_ctl live: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (newest first)."""
        found = shutil.which("pg_ctl")
        if found:
            return Path(found).resolve().parent
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                          key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0, reverse=True)
        if versions:
            return versions[0].parent
        raise StackError("PostgreSQL is not installed; install it (Debian: apt-get install -y postgresql) or run "
                         "`python -m slmops.stack up` as root, which installs it")

    @staticmethod
    def ensure_installed() -> Path:
        """The binaries' folder, installing Debian's postgresql package first when root and it is missing."""
        try:
            return Postgres.bin_dir()
        except StackError:
            if os.geteuid() != 0 or not shutil.which("apt-get"):
                raise
        print("installing PostgreSQL: apt-get update && apt-get install -y postgresql", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise StackError(f"{' '.join(cmd)} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        return Postgres.bin_dir()

    @staticmethod
    def _as_owner(cmd: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root: as root, run it as the package's `postgres` user
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    @staticmethod
    def data_dir_for(state_dir: Path) -> Path:
        """state_dir/pgdata, or a folder under /var/tmp when root's state folder is closed to the postgres user."""
        preferred = state_dir / "pgdata"
        if os.geteuid() != 0:
            return preferred
        reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(state_dir)],
                                   capture_output=True).returncode == 0
        if reachable:
            return preferred
        digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
        return Path("/var/tmp") / f"slmops-pgdata-{digest}"

    @property
    def log(self) -> Path:
        return self.data_dir / "server.log"

    def _run(self, cmd: list[str], what: str) -> str:
        env = {**os.environ, "PGPASSWORD": self.password} if self.password else None
        done = subprocess.run(self._as_owner(cmd), capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise StackError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}")
        return done.stdout

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").is_file():
            return
        bin_dir = self.ensure_installed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        if not self.password:
            self._run([str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                       "--encoding=UTF8", "--no-instructions"], "initdb")
            return
        # initdb reads the superuser's password from a file, never from its command line (seen by `ps`)
        with tempfile.TemporaryDirectory(prefix="slmops-initdb-") as tmp:
            pwfile = Path(tmp) / "pw"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(self.password + "\n")
            if os.geteuid() == 0:
                owner = pwd.getpwnam("postgres")
                for path in (tmp, pwfile):
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            self._run([str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                       "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--no-instructions"],
                      "initdb")

    def running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        return pid_file.is_file() and self._pg_isready()

    def _pg_isready(self) -> bool:
        return subprocess.run([str(self.bin_dir() / "pg_isready"), "-h", HOST, "-p", str(self.port), "-q"],
                              capture_output=True).returncode == 0

    def start(self) -> None:
        if self.running():
            return
        if port_in_use(self.port):
            raise StackError(f"port {self.port} is taken by another program; choose another with --pg-port")
        options = f"-c listen_addresses={HOST} -c port={self.port} -c unix_socket_directories={self.data_dir}"
        self._run([str(self.bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log), "-w", "-t", "60",
                   "-o", options, "start"], f"pg_ctl start (log: {self.log})")
        for db in (PREFECT_DB, MLFLOW_DB, MLFLOW_AUTH_DB):
            self.create_database(db)

    def create_database(self, name: str) -> None:
        psql = [str(self.bin_dir() / "psql"), "-h", HOST, "-p", str(self.port), "-U", "postgres", "-tAc"]
        exists = self._run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"], "psql").strip()
        if not exists:
            self._run([*psql, f'CREATE DATABASE "{name}"'], f"creating database {name}")

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").is_file():
            return
        self._run([str(self.bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                  "pg_ctl stop")

    def url(self, db: str, driver: str, with_user: bool = True) -> str:
        """A database's URL, without the password: a server gets it as PGPASSWORD (libpq and asyncpg read it);
        without the user too (with_user=False), for a process given PGUSER (as the compose stack does)."""
        return f"postgresql+{driver}://{'postgres@' if with_user else ''}{HOST}:{self.port}/{db}"


class Stack:
    """The processes of one state folder: start, deploy, inspect and stop them."""

    def __init__(self, state_dir: Path | str, work_dir: Path | str | None = None) -> None:
        self.dir = Path(state_dir).resolve()
        self.state_file = self.dir / "state.json"
        self.logs = self.dir / "logs"
        self.state = self._load()
        self._secrets: dict[str, str] | None = None
        if work_dir is not None:
            self.state["work_dir"] = str(Path(work_dir).resolve())
        self.state.setdefault("work_dir", str(Path(os.environ.get("SLMOPS_HOME", ".slmops")).resolve()))

    def _load(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {"ports": {}, "processes": {}}
        except json.JSONDecodeError as err:
            raise StackError(f"{self.state_file} is not valid JSON ({err}); stop what it started by hand and "
                             "delete it") from None

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        os.replace(tmp, self.state_file)

    @property
    def work_dir(self) -> Path:
        return Path(self.state["work_dir"])

    @property
    def ports(self) -> dict[str, int]:
        return self.state["ports"]

    @property
    def prefect_api_url(self) -> str:
        return f"http://{HOST}:{self.ports['prefect']}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{HOST}:{self.ports['prefect']}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.ports['mlflow']}"

    @property
    def postgres(self) -> Postgres:
        return Postgres(Path(self.state["pgdata"]), self.ports["postgres"],
                        self.secrets.get("SLMOPS_POSTGRES_PASSWORD"))

    @property
    def secrets_file(self) -> Path:
        """Every credential of this stack, the generated ones too (0600): what restarted processes get."""
        return self.dir / "secrets.env"

    @property
    def client_file(self) -> Path:
        """What a client needs, credentials included (0600): `set -a; . client.env; set +a`."""
        return self.dir / "client.env"

    @property
    def secrets(self) -> dict[str, str]:
        if self._secrets is None:
            self._secrets = read_env_file(self.secrets_file) if self.secrets_file.is_file() else {}
        return self._secrets

    def _secret(self, name: str) -> str:
        try:
            return self.secrets[name]
        except KeyError:
            raise StackError(f"{self.secrets_file} has no {name}: start the stack with `up`, which writes it") from None

    @property
    def model_roots(self) -> list[str]:
        """The only folders the workers take checkpoints from (SLMOPS_ALLOWED_MODEL_ROOTS of every flow run)."""
        return self.state.get("model_roots") or [str(self.work_dir / "checkpoints")]

    def client_env(self, with_secrets: bool = False) -> dict[str, str]:
        """What a client (slmops publish, a sweep, MlflowClient) needs to talk to this stack; the passwords only
        with_secrets."""
        env = {"PREFECT_API_URL": self.prefect_api_url, "MLFLOW_TRACKING_URI": self.mlflow_url,
               ALLOWED_ROOTS_VAR: ":".join(self.model_roots)}
        if self.secrets:
            env["MLFLOW_TRACKING_USERNAME"] = self.secrets.get("SLMOPS_MLFLOW_USER", USER_VARS["SLMOPS_MLFLOW_USER"])
        if with_secrets:
            env.update(PREFECT_API_AUTH_STRING=self._secret("SLMOPS_PREFECT_AUTH_STRING"),
                       MLFLOW_TRACKING_PASSWORD=self._secret("SLMOPS_MLFLOW_PASSWORD"))
        return env

    def _base_env(self) -> dict[str, str]:
        # a child must not inherit the caller's Prefect/MLflow targets (a test harness, another stack), nor any
        # credential: each process gets only the ones it needs, below
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREFECT_", "MLFLOW_", "PG")) and k not in _PRIVATE_VARS}
        env.update(PREFECT_HOME=str(self.dir / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   DO_NOT_TRACK="1", MLFLOW_DISABLE_TELEMETRY="true")
        return env

    def _client_process_env(self) -> dict[str, str]:
        """A process of this machine that talks to the servers: `prefect deploy`, a worker."""
        return {**self._base_env(), **self.client_env(with_secrets=True)}

    def worker_env(self) -> dict[str, str]:
        """The environment of a worker, and so of every flow run it starts."""
        work = self.work_dir
        env = self._client_process_env()
        env.update(
            SLMOPS_HOME=str(work), SLMOPS_REPO=str(REPO),
            # Prefect reads the result folder once, at import: the flow-run processes must get it from here
            PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(work / "prefect-results"),
            PREFECT_WORKER_QUERY_SECONDS=str(self.state.get("query_seconds", 5)),
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_S),
            PREFECT_CLI_PROMPT="false", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
            OLIVE_DISABLE_TELEMETRY="1",
        )
        env.update(self.state.get("worker_env", {}))
        return env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> int:
        """Start a process in a new session (its own process group); record it; return its pid (= group id)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=str(REPO), start_new_session=True)
        self.state["processes"][name] = {"pid": proc.pid, "cmd": cmd, "log": str(log)}
        self._save()
        return proc.pid

    def _alive(self, name: str) -> bool:
        entry = self.state["processes"].get(name)
        return bool(entry) and group_alive(entry["pid"])

    def _port(self, name: str, requested: int | None) -> int:
        """The recorded port, else the requested one (0 = any free port), else the default."""
        if name in self.ports and requested in (None, self.ports[name]):
            return self.ports[name]
        port = DEFAULT_PORTS[name] if requested is None else requested
        return free_port() if port == 0 else port

    def _set_secrets(self, given: Mapping[str, str] | None, where: str) -> None:
        """Check the credentials (given, else the environment; a previous `up`'s fill the gaps) and keep them, with
        the generated ones, in secrets.env. Raises SecretsError before anything is started or written."""
        values = dict(given) if given is not None else credentials_from(os.environ)
        stored = {k: v for k, v in self.secrets.items() if k in (*SECRET_VARS, *USER_VARS)}
        checked = check_credentials({**stored, **{k: v for k, v in values.items() if v}}, where)
        for name in GENERATED_VARS:
            checked[name] = self.secrets.get(name) or secrets.token_urlsafe(32)
        self.dir.mkdir(parents=True, exist_ok=True)
        older_cluster_inside = os.geteuid() == 0 and Path(self.state.get("pgdata", "/")).is_relative_to(self.dir)
        if not older_cluster_inside:  # root's postgres user must still reach a cluster made inside it before
            os.chmod(self.dir, 0o700)
        _write_private(self.secrets_file, checked)
        self._secrets = checked

    def up(self, variant_workers: int = 1, variant_limit: int = 1, sweep_limit: int = 2,
           ports: dict[str, int | None] | None = None, deploy: bool = True, query_seconds: float = 5.0,
           cron: str | None = None, spec: str | None = None, worker_env: dict[str, str] | None = None,
           timeout_s: float = 180.0, credentials: Mapping[str, str] | None = None,
           model_roots: list[str | Path] | None = None, credentials_from_where: str = "the environment") -> None:
        """Start what is not running yet: PostgreSQL, the Prefect server, the MLflow server, deploy, the workers.

        credentials: SECRET_VARS and USER_VARS (default: from the environment; a previous `up`'s fill the gaps);
        checked before anything starts. model_roots: the folders checkpoints may come from (default: the last
        `up`'s, else <work dir>/checkpoints). worker_env: extra variables for the workers (kept in state.json, so
        restarted workers get them too).
        """
        self._set_secrets(credentials, credentials_from_where)
        ports = ports or {}
        self.state.setdefault("worker_env", {}).update(worker_env or {})
        if model_roots:
            self.state["model_roots"] = [os.path.realpath(r) for r in model_roots]
        for root in self.model_roots:
            Path(root).mkdir(parents=True, exist_ok=True)
        # a partly running stack (after a crash, or `up` twice): keep what runs, start the rest
        for name in DEFAULT_PORTS:
            self.ports[name] = self._port(name, ports.get(name))
        self.state["query_seconds"] = query_seconds
        self.state.setdefault("pgdata", str(Postgres.data_dir_for(self.dir)))
        self._save()

        pg = self.postgres
        pg.init()
        pg.start()
        db_env = {"PGPASSWORD": pg.password}  # URLs carry no password: they are on command lines and in logs

        if not self._alive("prefect-server"):
            self._check_port_free("prefect")
            env = {**self._base_env(), **db_env,
                   "PREFECT_SERVER_DATABASE_CONNECTION_URL": pg.url(PREFECT_DB, "asyncpg"),
                   "PREFECT_SERVER_API_AUTH_STRING": self._secret("SLMOPS_PREFECT_AUTH_STRING"),
                   "PREFECT_UI_API_URL": self.prefect_api_url}
            self._spawn("prefect-server", [_bin("prefect"), "server", "start", "--host", HOST, "--port",
                                           str(self.ports["prefect"])], env)
        if not self._alive("mlflow-server"):
            self._start_mlflow(pg, db_env)
        self._wait("prefect-server", f"{self.prefect_api_url}/health", timeout_s)
        self._wait("mlflow-server", f"{self.mlflow_url}/health", timeout_s)
        check_prefect_auth(self.prefect_api_url, self._secret("SLMOPS_PREFECT_AUTH_STRING"))
        ensure_mlflow_user(self.mlflow_url,
                           (self._secret("SLMOPS_MLFLOW_ADMIN_USER"), self._secret("SLMOPS_MLFLOW_ADMIN_PASSWORD")),
                           (self._secret("SLMOPS_MLFLOW_USER"), self._secret("SLMOPS_MLFLOW_PASSWORD")))
        _write_private(self.client_file, self.client_env(with_secrets=True))
        if deploy:
            self.deploy(cron, spec)
        self.start_workers(variant_workers, variant_limit, sweep_limit)

    def _start_mlflow(self, pg: Postgres, db_env: dict[str, str]) -> None:
        """The MLflow server with its basic-auth app: the admin is created at its first start (MLflow reads the
        password from MLFLOW_AUTH_ADMIN_PASSWORD); users and permissions live in the database mlflow_auth."""
        self._check_port_free("mlflow")
        for module, package in (("psycopg", "'psycopg[binary]'"), ("flask_wtf", "'mlflow[auth]'")):
            if not _has_module(module):
                raise StackError(f"the MLflow server of the stack needs {module}: pip install {package} into this "
                                 "environment")
        auth_config = self.dir / "mlflow-auth.ini"
        # as deployments/mlflow/basic_auth.ini of the compose stack: no secret in the file, PGUSER/PGPASSWORD
        write_mlflow_auth_config(auth_config, pg.url(MLFLOW_AUTH_DB, "psycopg", with_user=False))
        artifacts = self.dir / "mlartifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        env = {**self._base_env(), **db_env, "PGUSER": "postgres", "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
               "MLFLOW_AUTH_ADMIN_USERNAME": self._secret("SLMOPS_MLFLOW_ADMIN_USER"),
               "MLFLOW_AUTH_ADMIN_PASSWORD": self._secret("SLMOPS_MLFLOW_ADMIN_PASSWORD"),
               "MLFLOW_FLASK_SERVER_SECRET_KEY": self._secret("SLMOPS_MLFLOW_SECRET_KEY")}
        self._spawn("mlflow-server", [_bin("mlflow"), "server", "--app-name", "basic-auth", "--host", HOST,
                                      "--port", str(self.ports["mlflow"]), "--backend-store-uri",
                                      pg.url(MLFLOW_DB, "psycopg"), "--artifacts-destination", str(artifacts),
                                      "--serve-artifacts", "--workers", "2"], env)

    def _check_port_free(self, name: str) -> None:
        if port_in_use(self.ports[name]):
            raise StackError(f"port {self.ports[name]} ({name}) is taken by another program; choose another with "
                             f"--{name}-port, or 0 for any free port")

    def _wait(self, name: str, url: str, timeout_s: float) -> None:
        entry = self.state["processes"][name]
        _wait_for(url, name, Path(entry["log"]), entry["pid"], timeout_s)

    def start_workers(self, variant_workers: int | None = None, variant_limit: int | None = None,
                      sweep_limit: int | None = None) -> list[str]:
        """Start the workers that do not run: one for whole sweeps, `variant_workers` for the variants of
        scaled-out sweeps (unset: as the last `up` said); return the names started."""
        layout = self.state.setdefault("workers", {"variant_workers": 1, "variant_limit": 1, "sweep_limit": 2})
        for key, value in (("variant_workers", variant_workers), ("variant_limit", variant_limit),
                           ("sweep_limit", sweep_limit)):
            if value is not None:
                layout[key] = value
        self._save()
        variant_workers, variant_limit, sweep_limit = (layout["variant_workers"], layout["variant_limit"],
                                                       layout["sweep_limit"])
        wanted = [("sweeps-1", SWEEP_QUEUE, sweep_limit)]
        wanted += [(f"variants-{i}", VARIANT_QUEUE, variant_limit) for i in range(1, variant_workers + 1)]
        started, since = [], time.time()
        for name, queue, limit in wanted:
            process = f"worker-{name}"
            if self._alive(process):
                continue
            # --limit is this machine's guard: no more flow runs (conversions) at once than its memory allows
            self._spawn(process, [_bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process",
                                  "--work-queue", queue, "--name", name, "--limit", str(limit)], self.worker_env())
            started.append(name)
        self._wait_for_workers(started, since)
        return started

    def _wait_for_workers(self, names: list[str], since: float, timeout_s: float = 120.0) -> None:
        """Until each worker has polled the server since `since`, so a run submitted now is picked up."""
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + timeout_s
        with prefect_settings(self.prefect_api_url, self._secret("SLMOPS_PREFECT_AUTH_STRING")):
            with get_client(sync_client=True) as client:
                while names:
                    polled = {w.name for w in client.read_workers_for_work_pool(WORK_POOL)
                              if w.last_heartbeat_time and w.last_heartbeat_time.timestamp() >= since}
                    missing = [n for n in names if n not in polled]
                    if not missing:
                        return
                    for name in missing:
                        entry = self.state["processes"][f"worker-{name}"]
                        if not group_alive(entry["pid"]):
                            raise StackError(f"worker {name} exited; see {entry['log']}:\n"
                                             f"{_tail(Path(entry['log']))}")
                    if time.monotonic() > deadline:
                        raise StackError(f"workers {', '.join(missing)} did not poll the server within "
                                         f"{timeout_s:.0f} s; see {self.logs}")
                    time.sleep(0.5)

    def stop_process(self, *names: str, grace_s: float = 15.0, sig: int | None = None) -> None:
        """Stop recorded processes, all at once (sig=SIGKILL: kill them and theirs at once, as a lost machine)."""
        unknown = [n for n in names if n not in self.state["processes"]]
        if unknown:
            raise StackError(f"no process {', '.join(unknown)} in {self.state_file}; known: "
                             f"{', '.join(self.state['processes'])}")
        stop_groups([self.state["processes"][n]["pid"] for n in names], grace_s,
                    sig if sig is not None else signal.SIGTERM)
        for name in names:
            del self.state["processes"][name]
        self._save()

    def down(self, purge: bool = False) -> None:
        """Stop the workers, then the servers, then PostgreSQL; with purge, delete the database and artifacts too."""
        names = list(self.state["processes"])
        self.stop_process(*[n for n in names if n.startswith("worker-")])
        self.stop_process(*[n for n in names if not n.startswith("worker-")])
        if self.state.get("pgdata"):
            self.postgres.stop()
        if purge:
            if self.state.get("pgdata"):
                shutil.rmtree(self.state["pgdata"], ignore_errors=True)
            shutil.rmtree(self.dir, ignore_errors=True)

    def status(self) -> dict[str, str]:
        rows = {}
        if self.state.get("pgdata"):
            rows["postgres"] = (f"running on {HOST}:{self.ports['postgres']}" if self.postgres.running()
                                else "stopped")
        urls = {"prefect-server": f"{self.prefect_api_url}/health", "mlflow-server": f"{self.mlflow_url}/health"}
        for name, entry in self.state["processes"].items():
            alive = group_alive(entry["pid"])
            state = f"running (pid {entry['pid']})" if alive else "dead"
            if alive and name in urls:
                state += ", healthy" if http_ok(urls[name]) else ", NOT answering"
            rows[name] = f"{state}; log {entry['log']}"
        return rows

    def deploy(self, cron: str | None = None, spec: str | None = None) -> None:
        """The process work pool, the deployments of deployments/prefect.yaml and the automations."""
        deploy_to(self.prefect_api_url, cron=cron, spec=spec, env=self._client_process_env(),
                  auth_string=self._secret("SLMOPS_PREFECT_AUTH_STRING"))


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


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def deploy_to(api_url: str, cron: str | None = None, spec: str | None = None, env: dict[str, str] | None = None,
              timeout_s: float = 300.0, auth_string: str | None = None) -> None:
    """Create the work pool if missing, run `prefect deploy --all` on deployments/prefect.yaml, (re)create the
    automations of deployments/automations.yaml. Works against any Prefect server (the compose `deploy` service).
    auth_string: the server's API auth string (default: PREFECT_API_AUTH_STRING of env, else of this process)."""
    if not http_ok(f"{api_url.rstrip('/')}/health"):
        raise StackError(f"the Prefect server at {api_url} is unreachable; start it (python -m slmops.stack up) or "
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
    done = subprocess.run([_bin("prefect"), "deploy", "--all", "--prefect-file", str(PREFECT_FILE)],
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


def default_state_dir() -> Path:
    return Path(os.environ.get("SLMOPS_HOME", ".slmops")).resolve() / "stack"


def _print_env(stack: Stack, with_secrets: bool = False) -> None:
    """Export lines for a shell (eval "$(...)"); the credentials only with_secrets, else sourced from client.env."""
    for key, value in stack.client_env(with_secrets).items():
        print(f"export {key}={shlex.quote(value)}")
    if not with_secrets:
        print("# PREFECT_API_AUTH_STRING and MLFLOW_TRACKING_PASSWORD, from the stack's 0600 file (env --with-secrets "
              "prints them):")
        print(f"set -a; . {shlex.quote(str(stack.client_file))}; set +a")


def _deploy_command(args: argparse.Namespace, state_dir: Path) -> None:
    """`deploy`: to this stack, or to a server named by --api-url (the compose `deploy` service, which also
    creates the pipeline's MLflow user with --mlflow-url, from the SLMOPS_* credentials of its environment)."""
    if args.api_url or not (state_dir / "state.json").is_file():
        api_url = args.api_url or os.environ.get("PREFECT_API_URL")
        if not api_url:
            raise StackError(f"no stack in {state_dir} and no PREFECT_API_URL; pass --api-url")
        auth_string = os.environ.get("PREFECT_API_AUTH_STRING")
        if args.mlflow_url:
            found = check_credentials(credentials_from(os.environ), "the environment")
            auth_string = auth_string or found["SLMOPS_PREFECT_AUTH_STRING"]
            outcome = ensure_mlflow_user(
                args.mlflow_url, (found["SLMOPS_MLFLOW_ADMIN_USER"], found["SLMOPS_MLFLOW_ADMIN_PASSWORD"]),
                (found["SLMOPS_MLFLOW_USER"], found["SLMOPS_MLFLOW_PASSWORD"]))
            print(f"MLflow user {found['SLMOPS_MLFLOW_USER']} {outcome}")
        deploy_to(api_url, args.cron, args.spec,
                  auth_string=auth_string or os.environ.get("SLMOPS_PREFECT_AUTH_STRING"))
    else:
        Stack(state_dir).deploy(args.cron, args.spec)
    print("deployed: work pool, deployments/prefect.yaml, deployments/automations.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slmops.stack", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="state folder (default: $SLMOPS_HOME/stack)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start PostgreSQL, the Prefect and MLflow servers and the workers; deploy")
    up.add_argument("--work-dir", help="the workers' SLMOPS_HOME: caches, sweep outputs (default: $SLMOPS_HOME or "
                                       "./.slmops)")
    up.add_argument("--env-file", help=f"credentials ({', '.join(SECRET_VARS)}) as KEY=VALUE lines; the "
                                       "environment wins (default: ./.env when it exists)")
    up.add_argument("--model-roots", help=f"colon-separated folders checkpoints may come from ({ALLOWED_ROOTS_VAR} "
                                          "of the workers; default: $SLMOPS_ALLOWED_MODEL_ROOTS, else the last up's, "
                                          "else <work dir>/checkpoints)")
    for name, default in DEFAULT_PORTS.items():
        flag = "--pg-port" if name == "postgres" else f"--{name}-port"
        up.add_argument(flag, type=int, dest=f"{name}_port", help=f"default {default}; 0 = any free port")
    up.add_argument("--variant-workers", type=int, default=1, help="workers on the variants queue (default 1)")
    up.add_argument("--variant-limit", type=int, default=1,
                    help="conversions one variant worker runs at once: what this machine's memory allows (default 1)")
    up.add_argument("--sweep-limit", type=int, default=2, help="sweeps the sweep worker runs at once (default 2)")
    up.add_argument("--no-deploy", action="store_true", help="start the processes only")
    up.add_argument("--cron", help=f"nightly sweep's schedule (default $SLMOPS_SWEEP_CRON or {DEFAULT_CRON!r})")
    up.add_argument("--spec", help=f"spec of the deployed sweeps (default $SLMOPS_SWEEP_SPEC or {DEFAULT_SPEC})")
    deploy = sub.add_parser("deploy", help="create the work pool, deployments and automations")
    deploy.add_argument("--api-url", help="a Prefect server's API (default: this stack's, else $PREFECT_API_URL); "
                                          "its auth string from $PREFECT_API_AUTH_STRING or "
                                          "$SLMOPS_PREFECT_AUTH_STRING")
    deploy.add_argument("--mlflow-url", help="with --api-url: an MLflow server with basic auth, where the pipeline's "
                                             "user is created from $SLMOPS_MLFLOW_* (the compose stack)")
    deploy.add_argument("--cron", help=f"nightly sweep's schedule (default $SLMOPS_SWEEP_CRON or {DEFAULT_CRON!r})")
    deploy.add_argument("--spec", help=f"spec of the deployed sweeps (default $SLMOPS_SWEEP_SPEC or {DEFAULT_SPEC})")
    env = sub.add_parser("env", help="print export lines: the URLs, and where the credentials are")
    env.add_argument("--with-secrets", action="store_true",
                     help="print PREFECT_API_AUTH_STRING and MLFLOW_TRACKING_PASSWORD too")
    sub.add_parser("status", help="what runs, and whether the servers answer")
    down = sub.add_parser("down", help="stop everything this state folder started")
    down.add_argument("--purge", action="store_true", help="also delete the database files, artifacts, logs and "
                                                           "secrets")
    args = parser.parse_args(argv)

    state_dir = Path(args.dir) if args.dir else default_state_dir()
    try:
        if args.command == "up":
            env_file = Path(args.env_file) if args.env_file else Path(".env")
            if args.env_file and not env_file.is_file():
                raise SecretsError(f"--env-file {env_file}: no such file")
            credentials = credentials_from(os.environ, env_file)  # checked by up(), before anything starts
            roots = args.model_roots or os.environ.get(ALLOWED_ROOTS_VAR)
            stack = Stack(state_dir, args.work_dir)
            ports = {n: getattr(args, f"{n}_port") for n in DEFAULT_PORTS}
            stack.up(args.variant_workers, args.variant_limit, args.sweep_limit, ports, deploy=not args.no_deploy,
                     cron=args.cron, spec=args.spec, credentials=credentials,
                     model_roots=[r for r in roots.split(":") if r] if roots else None,
                     credentials_from_where=f"the environment or {env_file}")
            print(f"Prefect UI  {stack.prefect_ui_url}\nMLflow UI   {stack.mlflow_url}\nstate       {stack.dir}\n"
                  f"checkpoints only from {':'.join(stack.model_roots)}\n")
            _print_env(stack)
        elif args.command == "deploy":
            _deploy_command(args, state_dir)
        elif args.command == "env":
            _print_env(_existing(state_dir), args.with_secrets)
        elif args.command == "status":
            for name, row in _existing(state_dir).status().items():
                print(f"{name:<20} {row}")
        else:
            _existing(state_dir).down(purge=args.purge)
            print(f"stopped{' and purged' if args.purge else ''}: {state_dir}")
    except SlmopsError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


def _existing(state_dir: Path) -> Stack:
    if not (state_dir / "state.json").is_file():
        raise StackError(f"no stack in {state_dir}; start one with `python -m slmops.stack up`")
    return Stack(state_dir)


if __name__ == "__main__":
    sys.exit(main())
