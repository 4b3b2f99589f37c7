"""The stack's processes of one state folder: PostgreSQL, the Prefect server, the MLflow server and the workers,
each in a process group of its own; started, deployed to, inspected and stopped by the Stack class."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from ops.stack.credentials import (GENERATED_VARS, PRIVATE_VARS, SECRET_VARS, USER_VARS, check_credentials,
                                   credentials_from, read_env_file, write_private)
from ops.stack.deploy import check_prefect_auth, deploy_to, prefect_settings
from ops.stack.mlflow_auth import ensure_mlflow_user, write_mlflow_auth_config
from ops.stack.postgres import Postgres
from ops.stack.processes import bin_path, free_port, group_alive, http_ok, port_in_use, stop_groups, tail, wait_for
from ops.stack.topology import (DEFAULT_PORTS, HEARTBEAT_S, HOST, MLFLOW_AUTH_DB, MLFLOW_DB, PREFECT_DB, REPO,
                                SWEEP_QUEUE, VARIANT_QUEUE, WORK_POOL, StackError)
from slmops.checkpoints import ALLOWED_ROOTS_VAR


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


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
               if not k.startswith(("PREFECT_", "MLFLOW_", "PG")) and k not in PRIVATE_VARS}
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
        write_private(self.secrets_file, checked)
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
            self._spawn("prefect-server", [bin_path("prefect"), "server", "start", "--host", HOST, "--port",
                                           str(self.ports["prefect"])], env)
        if not self._alive("mlflow-server"):
            self._start_mlflow(pg, db_env)
        self._wait("prefect-server", f"{self.prefect_api_url}/health", timeout_s)
        self._wait("mlflow-server", f"{self.mlflow_url}/health", timeout_s)
        check_prefect_auth(self.prefect_api_url, self._secret("SLMOPS_PREFECT_AUTH_STRING"))
        ensure_mlflow_user(self.mlflow_url,
                           (self._secret("SLMOPS_MLFLOW_ADMIN_USER"), self._secret("SLMOPS_MLFLOW_ADMIN_PASSWORD")),
                           (self._secret("SLMOPS_MLFLOW_USER"), self._secret("SLMOPS_MLFLOW_PASSWORD")))
        write_private(self.client_file, self.client_env(with_secrets=True))
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
        self._spawn("mlflow-server", [bin_path("mlflow"), "server", "--app-name", "basic-auth", "--host", HOST,
                                      "--port", str(self.ports["mlflow"]), "--backend-store-uri",
                                      pg.url(MLFLOW_DB, "psycopg"), "--artifacts-destination", str(artifacts),
                                      "--serve-artifacts", "--workers", "2"], env)

    def _check_port_free(self, name: str) -> None:
        if port_in_use(self.ports[name]):
            raise StackError(f"port {self.ports[name]} ({name}) is taken by another program; choose another with "
                             f"--{name}-port, or 0 for any free port")

    def _wait(self, name: str, url: str, timeout_s: float) -> None:
        entry = self.state["processes"][name]
        wait_for(url, name, Path(entry["log"]), entry["pid"], timeout_s)

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
            self._spawn(process, [bin_path("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process",
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
                                             f"{tail(Path(entry['log']))}")
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
