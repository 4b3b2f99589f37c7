"""PostgreSQL for the stack: Debian's package (installed with apt-get when root and missing), a cluster in a folder
of the stack's, with the databases of the Prefect server, the MLflow server and MLflow's basic-auth app."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ops.stack.processes import apt_install, port_in_use
from ops.stack.topology import HOST, MLFLOW_AUTH_DB, MLFLOW_DB, PREFECT_DB, StackError


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
                         "`python -m ops.stack up` as root, which installs it")

    @staticmethod
    def ensure_installed() -> Path:
        """The binaries' folder, installing Debian's postgresql package first when root and it is missing."""
        try:
            return Postgres.bin_dir()
        except StackError:
            if os.geteuid() != 0 or not shutil.which("apt-get"):
                raise
        apt_install("postgresql", "PostgreSQL")
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
