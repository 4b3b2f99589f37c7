"""The server stack as plain processes on loopback: PostgreSQL (Debian's package), the Prefect server and the MLflow
tracking server on it, and Prefect workers. The topology of docker-compose.yml, for machines without Docker.

    python -m slmops.stack up                        # start it all, deploy; prints the variables to export
    python -m slmops.stack up --variant-workers 2    # two workers share the variants of a sweep (scale-out)
    python -m slmops.stack deploy                    # (again) the work pool, deployments/prefect.yaml, automations
    python -m slmops.stack env                       # export lines: PREFECT_API_URL, MLFLOW_TRACKING_URI
    python -m slmops.stack status
    python -m slmops.stack down [--purge]            # stop every process it started; --purge deletes its data

Every process runs in its own process group, so `down` also stops what they started (MLflow's job consumers, the
flow-run processes of a worker). The state folder (--dir, default $SLMOPS_HOME/stack) holds state.json (ports,
process ids), logs/, the PostgreSQL cluster and MLflow's artifacts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from slmops.errors import SlmopsError

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
AUTOMATIONS_FILE = REPO / "deployments" / "automations.yaml"
WORK_POOL = "slmops"
SWEEP_QUEUE = "sweeps"
VARIANT_QUEUE = "variants"
PREFECT_DB = "prefect"
MLFLOW_DB = "mlflow"
HOST = "127.0.0.1"
DEFAULT_PORTS = {"postgres": 55432, "prefect": 4200, "mlflow": 5000}
DEFAULT_CRON = "0 2 * * *"
DEFAULT_SPEC = "configs/demo.yaml"
# the lowest Prefect allows; the crash automation (deployments/automations.yaml) waits three of them
HEARTBEAT_S = 30


class StackError(SlmopsError):
    """The stack could not be started, deployed or stopped."""


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
    """A PostgreSQL cluster of Debian's packages in a folder, on a loopback port, trust auth (loopback only)."""

    data_dir: Path
    port: int

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
        done = subprocess.run(self._as_owner(cmd), capture_output=True, text=True)
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
        self._run([str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                   "--encoding=UTF8", "--no-instructions"], "initdb")

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
        for db in (PREFECT_DB, MLFLOW_DB):
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

    def url(self, db: str, driver: str) -> str:
        return f"postgresql+{driver}://postgres@{HOST}:{self.port}/{db}"


class Stack:
    """The processes of one state folder: start, deploy, inspect and stop them."""

    def __init__(self, state_dir: Path | str, work_dir: Path | str | None = None) -> None:
        self.dir = Path(state_dir).resolve()
        self.state_file = self.dir / "state.json"
        self.logs = self.dir / "logs"
        self.state = self._load()
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
        return Postgres(Path(self.state["pgdata"]), self.ports["postgres"])

    def client_env(self) -> dict[str, str]:
        """What a client (slmops publish, a sweep, MlflowClient) needs to talk to this stack."""
        return {"PREFECT_API_URL": self.prefect_api_url, "MLFLOW_TRACKING_URI": self.mlflow_url}

    def _base_env(self) -> dict[str, str]:
        # a child must not inherit the caller's Prefect/MLflow targets (a test harness, another stack)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
        env.update(PREFECT_HOME=str(self.dir / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   DO_NOT_TRACK="1", MLFLOW_DISABLE_TELEMETRY="true")
        return env

    def worker_env(self) -> dict[str, str]:
        """The environment of a worker, and so of every flow run it starts."""
        work = self.work_dir
        env = {**self._base_env(), **self.client_env()}
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

    def up(self, variant_workers: int = 1, variant_limit: int = 1, sweep_limit: int = 2,
           ports: dict[str, int | None] | None = None, deploy: bool = True, query_seconds: float = 5.0,
           cron: str | None = None, spec: str | None = None, worker_env: dict[str, str] | None = None,
           timeout_s: float = 180.0) -> None:
        """Start what is not running yet: PostgreSQL, the Prefect server, the MLflow server, deploy, the workers.

        worker_env: extra variables for the workers (kept in state.json, so restarted workers get them too).
        """
        ports = ports or {}
        self.state.setdefault("worker_env", {}).update(worker_env or {})
        # a partly running stack (after a crash, or `up` twice): keep what runs, start the rest
        for name in DEFAULT_PORTS:
            self.ports[name] = self._port(name, ports.get(name))
        self.state["query_seconds"] = query_seconds
        self.dir.mkdir(parents=True, exist_ok=True)  # before asking whether the postgres user can reach it
        self.state.setdefault("pgdata", str(Postgres.data_dir_for(self.dir)))
        self._save()

        pg = self.postgres
        pg.init()
        pg.start()

        if not self._alive("prefect-server"):
            self._check_port_free("prefect")
            env = {**self._base_env(),
                   "PREFECT_SERVER_DATABASE_CONNECTION_URL": pg.url(PREFECT_DB, "asyncpg"),
                   "PREFECT_UI_API_URL": self.prefect_api_url}
            self._spawn("prefect-server", [_bin("prefect"), "server", "start", "--host", HOST, "--port",
                                           str(self.ports["prefect"])], env)
        if not self._alive("mlflow-server"):
            self._check_port_free("mlflow")
            if not _has_module("psycopg"):
                raise StackError("the MLflow server's PostgreSQL backend needs psycopg 3: pip install "
                                 "'psycopg[binary]' into this environment")
            artifacts = self.dir / "mlartifacts"
            artifacts.mkdir(parents=True, exist_ok=True)
            self._spawn("mlflow-server", [_bin("mlflow"), "server", "--host", HOST, "--port",
                                          str(self.ports["mlflow"]), "--backend-store-uri",
                                          pg.url(MLFLOW_DB, "psycopg"), "--artifacts-destination", str(artifacts),
                                          "--serve-artifacts", "--workers", "2"], self._base_env())
        self._wait("prefect-server", f"{self.prefect_api_url}/health", timeout_s)
        self._wait("mlflow-server", f"{self.mlflow_url}/health", timeout_s)
        if deploy:
            self.deploy(cron, spec)
        self.start_workers(variant_workers, variant_limit, sweep_limit)

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
        from prefect.settings import PREFECT_API_URL, temporary_settings

        deadline = time.monotonic() + timeout_s
        with temporary_settings(updates={PREFECT_API_URL: self.prefect_api_url}):
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
        deploy_to(self.prefect_api_url, cron=cron, spec=spec, env=self._base_env())


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def deploy_to(api_url: str, cron: str | None = None, spec: str | None = None, env: dict[str, str] | None = None,
              timeout_s: float = 300.0) -> None:
    """Create the work pool if missing, run `prefect deploy --all` on deployments/prefect.yaml, (re)create the
    automations of deployments/automations.yaml. Works against any Prefect server (the compose `deploy` service)."""
    if not http_ok(f"{api_url.rstrip('/')}/health"):
        raise StackError(f"the Prefect server at {api_url} is unreachable; start it (python -m slmops.stack up) or "
                         "set PREFECT_API_URL to its /api address")
    ensure_work_pool(api_url)
    env = {**(env if env is not None else os.environ), "PREFECT_API_URL": api_url, "PREFECT_CLI_PROMPT": "false",
           "SLMOPS_SWEEP_CRON": cron or os.environ.get("SLMOPS_SWEEP_CRON", DEFAULT_CRON),
           "SLMOPS_SWEEP_SPEC": spec or os.environ.get("SLMOPS_SWEEP_SPEC", DEFAULT_SPEC)}
    done = subprocess.run([_bin("prefect"), "deploy", "--all", "--prefect-file", str(PREFECT_FILE)],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise StackError(f"prefect deploy failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
    create_automations(api_url)


def ensure_work_pool(api_url: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            try:
                client.read_work_pool(WORK_POOL)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(
                    name=WORK_POOL, type="process", description="slmops sweeps and variant conversions",
                    base_job_template=ProcessWorker.get_default_base_job_template()))


def create_automations(api_url: str) -> list[str]:
    """(Re)create each automation of deployments/automations.yaml by name, so deploying twice makes no duplicate."""
    import yaml
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore
    from prefect.settings import PREFECT_API_URL, temporary_settings

    specs = yaml.safe_load(AUTOMATIONS_FILE.read_text())["automations"]
    names = []
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
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


def _print_env(stack: Stack) -> None:
    for key, value in stack.client_env().items():
        print(f"export {key}={value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slmops.stack", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="state folder (default: $SLMOPS_HOME/stack)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start PostgreSQL, the Prefect and MLflow servers and the workers; deploy")
    up.add_argument("--work-dir", help="the workers' SLMOPS_HOME: caches, sweep outputs (default: $SLMOPS_HOME or "
                                       "./.slmops)")
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
    deploy.add_argument("--api-url", help="a Prefect server's API (default: this stack's, else $PREFECT_API_URL)")
    deploy.add_argument("--cron", help=f"nightly sweep's schedule (default $SLMOPS_SWEEP_CRON or {DEFAULT_CRON!r})")
    deploy.add_argument("--spec", help=f"spec of the deployed sweeps (default $SLMOPS_SWEEP_SPEC or {DEFAULT_SPEC})")
    sub.add_parser("env", help="print export lines for PREFECT_API_URL and MLFLOW_TRACKING_URI")
    sub.add_parser("status", help="what runs, and whether the servers answer")
    down = sub.add_parser("down", help="stop everything this state folder started")
    down.add_argument("--purge", action="store_true", help="also delete the database files, artifacts and logs")
    args = parser.parse_args(argv)

    state_dir = Path(args.dir) if args.dir else default_state_dir()
    try:
        if args.command == "up":
            stack = Stack(state_dir, args.work_dir)
            ports = {n: getattr(args, f"{n}_port") for n in DEFAULT_PORTS}
            stack.up(args.variant_workers, args.variant_limit, args.sweep_limit, ports, deploy=not args.no_deploy,
                     cron=args.cron, spec=args.spec)
            print(f"Prefect UI  {stack.prefect_ui_url}\nMLflow UI   {stack.mlflow_url}\nstate       {stack.dir}\n")
            _print_env(stack)
        elif args.command == "deploy":
            if args.api_url:
                deploy_to(args.api_url, args.cron, args.spec)
            elif (state_dir / "state.json").is_file():
                Stack(state_dir).deploy(args.cron, args.spec)
            elif os.environ.get("PREFECT_API_URL"):
                deploy_to(os.environ["PREFECT_API_URL"], args.cron, args.spec)
            else:
                raise StackError(f"no stack in {state_dir} and no PREFECT_API_URL; pass --api-url")
            print("deployed: work pool, deployments/prefect.yaml, deployments/automations.yaml")
        elif args.command == "env":
            _print_env(_existing(state_dir))
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
