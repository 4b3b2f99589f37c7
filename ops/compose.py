"""docker-compose.yml with podman on a machine that cannot pull from any registry: every image built from Debian's
packages, the stack brought up in the order its health checks allow, and brought down leaving nothing behind.

    python -m ops.compose build                          # the base image (debootstrap) and every service's image
    python -m ops.compose up [--env-file .env] [--variant-workers 2]
    python -m ops.compose status
    python -m ops.compose down [--volumes]               # --volumes: the databases and the work folder too

`build` is cached by content: an image whose Dockerfile, build context (less .dockerignore), build arguments and
base are unchanged is not built again. `up` runs podman-compose (1.5, from PyPI: Debian's 1.0.3 ignores --scale
and --env-file) on docker-compose.yml and docker-compose.local.yml. podman 4.3 runs no health check by itself
(podman-compose then ignores `condition: service_healthy`), so `up` starts the servers, runs their checks until
healthy, runs the `deploy` one-shot to its end, and only then starts the workers and the watcher. With Docker
Engine none of this is needed: `docker compose up -d` (docs/deployments.md).

Two settings this machine needs are in the containers.conf that every podman call here is given (CONTAINERS_CONF):
root may not raise its limits (default_ulimits) and crun 1.8 refuses hybrid cgroups (runtime = "runc").
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import yaml

from ops.stack.processes import apt_install, bin_path
from ops.stack.topology import REPO, StackError

COMPOSE_FILES = (REPO / "docker-compose.yml", REPO / "docker-compose.local.yml")
PROJECT = "slmops"
BASE_IMAGE = "localhost/slmops-base:bookworm"
BASE_SUITE = "bookworm"
# what every image needs from Debian beyond minbase: Python 3.11 with venv, and CAs for the package index
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
CONTENT_LABEL = "org.slmops.content"
CONTAINERS_CONF = """\
# written by ops.compose: root here cannot raise its limits, and crun 1.8 refuses this machine's hybrid cgroups
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""
# the Debian packages that run the stack, by the file each one brings (podman-compose comes from PyPI); catatonit
# is the init of the services with `init: true`
TOOLS = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap",
         "/usr/libexec/podman/catatonit": "catatonit"}
SERVERS = ("postgres", "prefect-server", "mlflow-server")
WORKERS = ("sweep-worker", "variant-worker", "checkpoint-watcher")
DEPLOY = "deploy"
# a build mounts these (read-only) at the same path: the CA bundle the package index needs here
CA_MOUNT = "/run/slmops-build-ca.crt"


def log(message: str) -> None:
    print(f"compose: {message}", file=sys.stderr, flush=True)


def conf_path() -> Path:
    return REPO / ".slmops" / "podman" / "containers.conf"


def podman_env() -> dict[str, str]:
    path = conf_path()
    if not path.is_file() or path.read_text() != CONTAINERS_CONF:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(path)}


def ensure_tools(*names: str) -> None:
    """podman, runc, debootstrap: installed with apt-get when missing (as root), else a clear error."""
    missing = [TOOLS[name] for name in names if not (shutil.which(name) or Path(name).is_file())]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StackError(f"{', '.join(missing)} missing: install them (Debian: apt-get install -y "
                         f"{' '.join(missing)}), or run this as root, which installs them")
    apt_install(" ".join(missing), ", ".join(missing))


def run(cmd: list[str], what: str, check: bool = True, timeout_s: float | None = None
        ) -> subprocess.CompletedProcess:
    """A podman or podman-compose command with this machine's containers.conf; a failure or a timeout raised as a
    StackError naming `what` with the command's last words."""
    try:
        done = subprocess.run(cmd, env=podman_env(), text=True, timeout=timeout_s, capture_output=True, cwd=str(REPO))
    except subprocess.TimeoutExpired:
        raise StackError(f"{what} did not finish within {timeout_s:.0f} s") from None
    if check and done.returncode != 0:
        raise StackError(f"{what} failed (exit {done.returncode}):\n{(done.stdout + done.stderr).strip()[-2000:]}")
    return done


def podman(*args: str, check: bool = True, timeout_s: float | None = None) -> subprocess.CompletedProcess:
    return run(["podman", *args], f"podman {' '.join(args[:3])}", check, timeout_s)


def image_label(image: str) -> str | None:
    """The content key an image was built with; None when there is no such image."""
    done = podman("image", "inspect", image, "--format", f'{{{{index .Labels "{CONTENT_LABEL}"}}}}', check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


# ---- the base image --------------------------------------------------------------------------------------------

def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 .sources or a one-line `deb` entry)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        text = path.read_text(errors="replace") if path.is_file() else ""
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.M):
            uri = match.group(1)
            if uri.startswith(("http://", "https://")) and not uri.rstrip("/").endswith("-security"):
                return uri
    return "http://deb.debian.org/debian"


def build_base(mirror: str | None = None) -> bool:
    """Debian minbase with Python 3.11, made by debootstrap and imported as BASE_IMAGE; False when it was there."""
    mirror = mirror or apt_mirror()
    key = _key(BASE_SUITE, mirror, *BASE_PACKAGES)
    if image_label(BASE_IMAGE) == key:
        log(f"{BASE_IMAGE}: up to date")
        return False
    ensure_tools("debootstrap")
    started = time.monotonic()
    log(f"{BASE_IMAGE}: debootstrap --variant=minbase {BASE_SUITE} from {mirror} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="slmops-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                               BASE_SUITE, str(rootfs), mirror], capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"debootstrap failed (exit {done.returncode}): {(done.stdout + done.stderr)[-1500:]}")
        tarball = Path(tmp) / "rootfs.tar"
        packed = subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], capture_output=True, text=True)
        if packed.returncode != 0:
            raise StackError(f"tar of the base image's root failed (exit {packed.returncode}): {packed.stderr[-800:]}")
        podman("import", "--change", f"LABEL {CONTENT_LABEL}={key}", "--change", 'CMD ["/bin/bash"]', str(tarball),
               BASE_IMAGE)
    log(f"{BASE_IMAGE}: made in {time.monotonic() - started:.0f} s")
    return True


# ---- the services' images --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageBuild:
    """One image of docker-compose.local.yml: its name, build context, Dockerfile and build arguments."""

    image: str
    context: Path
    dockerfile: Path
    args: tuple[tuple[str, str], ...]

    def declared_args(self) -> set[str]:
        return set(re.findall(r"^ARG\s+(\w+)", self.dockerfile.read_text(), re.M))

    def content_key(self, base_key: str, extra_args: dict[str, str]) -> str:
        digest = hashlib.sha256()
        for part in (base_key, json.dumps(sorted({**dict(self.args), **extra_args}.items())),
                     self.dockerfile.read_text()):
            digest.update(part.encode() + b"\0")
        for path in context_files(self.context):
            digest.update(str(path.relative_to(self.context)).encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()[:16]


def _interpolate(value: str, env: dict[str, str]) -> str:
    """${VAR} and ${VAR:-default}, as compose reads them (enough for the image names and build arguments)."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def compose_env(env_file: Path | None = None) -> dict[str, str]:
    """The variables compose interpolates with: the env file's, then this process's environment over them."""
    from ops.stack.credentials import read_env_file

    values = read_env_file(env_file) if env_file and Path(env_file).is_file() else {}
    return {**values, **os.environ}


def image_builds(env: dict[str, str] | None = None) -> list[ImageBuild]:
    """Each distinct image docker-compose.local.yml builds, in the order of its services."""
    env = compose_env() if env is None else env
    services = yaml.safe_load(COMPOSE_FILES[1].read_text())["services"]
    builds: dict[str, ImageBuild] = {}
    for service in services.values():
        image = _interpolate(service["image"], env)
        build = service["build"]
        context = (REPO / build["context"]).resolve()
        args = tuple(sorted((k, _interpolate(str(v), env)) for k, v in (build.get("args") or {}).items()))
        builds.setdefault(image, ImageBuild(image, context, context / build.get("dockerfile", "Dockerfile"), args))
    return list(builds.values())


def _ignored(relative: str, patterns: list[str]) -> bool:
    return any(fnmatch(relative, p) or fnmatch(relative, p.removeprefix("**/")) or
               fnmatch(relative.rsplit("/", 1)[-1], p.removeprefix("**/")) and p.startswith("**/")
               for p in patterns)


def context_files(context: Path) -> list[Path]:
    """The files a build of context sees: every file but those its .dockerignore names, in a stable order."""
    ignore = context / ".dockerignore"
    patterns = [line.strip().rstrip("/") for line in (ignore.read_text().splitlines() if ignore.is_file() else [])
                if line.strip() and not line.startswith("#")]
    files = []
    for root, dirs, names in os.walk(context):
        rel_root = Path(root).relative_to(context)
        dirs[:] = sorted(d for d in dirs if not _ignored((rel_root / d).as_posix(), patterns))
        files += [Path(root) / n for n in sorted(names) if not _ignored((rel_root / n).as_posix(), patterns)]
    return files


def pip_sources() -> tuple[list[str], dict[str, str]]:
    """What a build needs to install like this machine's pip does: volumes (read-only, same paths) of the local
    wheel folders and indexes pip is configured with, the CA bundle pip is told to trust, and the build arguments
    that name them (PIP_FIND_LINKS, PIP_EXTRA_INDEX_URL, PIP_CERT). Empty where pip has none of them."""
    config: dict[str, str] = {}
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        try:  # pip prints each value as a Python literal: '\n/opt/wheels' for a multi-line one
            value = str(ast.literal_eval(value.strip()))
        except (ValueError, SyntaxError):
            value = value.strip()
        config[key.split(".", 1)[-1]] = value
    find_links = os.environ.get("PIP_FIND_LINKS") or config.get("find-links", "")
    extra_index = os.environ.get("PIP_EXTRA_INDEX_URL") or config.get("extra-index-url", "")
    cert = os.environ.get("PIP_CERT") or config.get("cert", "")
    volumes, args = [], {}
    local_links = [p for p in find_links.split() if Path(p.removeprefix("file://")).is_dir()]
    local_indexes = [u for u in extra_index.split() if u.startswith("file://") and Path(u[7:]).is_dir()]
    for url in local_links + local_indexes:
        folder = Path(url.removeprefix("file://"))
        # an index's simple/ pages point into its sibling folders: mount the index's whole parent
        mount = folder.parent if folder.name == "simple" else folder
        volumes.append(f"{mount}:{mount}:ro")
    if local_links:
        args["PIP_FIND_LINKS"] = " ".join(local_links)
    if local_indexes:
        args["PIP_EXTRA_INDEX_URL"] = " ".join(local_indexes)
    if cert and Path(cert).is_file():
        volumes.append(f"{Path(cert).resolve()}:{CA_MOUNT}:ro")
        args["PIP_CERT"] = CA_MOUNT
    return sorted(set(volumes)), args


def build_images(rebuild: bool = False, env_file: Path | None = None) -> dict[str, str]:
    """The base image, then every image of docker-compose.local.yml that is missing or built from other content
    (image names and build arguments read with env_file's variables, as compose reads them). Returns each image
    with what happened to it ("built in N s" or "up to date")."""
    ensure_tools("podman", "runc", "/usr/libexec/podman/catatonit")
    started = time.monotonic()
    outcome = {BASE_IMAGE: "built" if build_base() else "up to date"}
    base_key = image_label(BASE_IMAGE) or ""
    volumes, pip_args = pip_sources()
    for build in image_builds(compose_env(env_file)):
        declared = build.declared_args()
        extra = {k: v for k, v in pip_args.items() if k in declared}
        key = build.content_key(base_key, extra)
        if not rebuild and image_label(build.image) == key:
            log(f"{build.image}: up to date")
            outcome[build.image] = "up to date"
            continue
        log(f"{build.image}: building from {build.dockerfile.relative_to(REPO)}")
        t0 = time.monotonic()
        cmd = ["build", "--tag", build.image, "--file", str(build.dockerfile), "--label", f"{CONTENT_LABEL}={key}"]
        for name, value in [*build.args, *extra.items()]:
            cmd += ["--build-arg", f"{name}={value}"]
        for volume in volumes:
            cmd += ["--volume", volume]
        done = subprocess.run(["podman", *cmd, str(build.context)], env=podman_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise StackError(f"building {build.image} failed (exit {done.returncode}):\n{done.stdout[-3000:]}")
        outcome[build.image] = f"built in {time.monotonic() - t0:.0f} s"
        log(f"{build.image}: {outcome[build.image]}")
    log(f"images ready in {time.monotonic() - started:.0f} s")
    return outcome


# ---- the stack ---------------------------------------------------------------------------------------------------

@dataclass
class ComposeStack:
    """One compose project of docker-compose.yml + docker-compose.local.yml, with its .env."""

    env_file: Path = REPO / ".env"
    project: str = PROJECT

    def compose(self, *args: str, check: bool = True, timeout_s: float = 600.0) -> subprocess.CompletedProcess:
        found = bin_path("podman-compose")
        if not Path(found).is_file():
            raise StackError("podman-compose is missing: pip install 'podman-compose==1.5.0' (it is in the test extra: "
                             "pip install -e '.[test]')")
        cmd = [found, "--project-name", self.project, "--env-file", str(self.env_file)]
        for path in COMPOSE_FILES:
            cmd += ["--file", str(path)]
        return run([*cmd, *args], f"podman-compose {' '.join(args)}", check, timeout_s)

    def containers(self, service: str | None = None, all_states: bool = True) -> list[dict]:
        """The project's containers (podman ps --format json), of one service when named."""
        args = ["ps", "--format", "json", "--filter", f"label=io.podman.compose.project={self.project}"]
        if service:
            args += ["--filter", f"label=io.podman.compose.service={service}"]
        return json.loads(podman(*args, *(["-a"] if all_states else [])).stdout or "[]")

    def container(self, service: str, index: int = 1) -> str:
        return f"{self.project}_{service}_{index}"

    def logs(self, name: str, lines: int = 30) -> str:
        done = podman("logs", "--tail", str(lines), name, check=False)
        return (done.stdout + done.stderr).strip()

    def wait_healthy(self, services: tuple[str, ...], timeout_s: float) -> None:
        """Run each container's own health check (podman 4.3 runs none by itself) until it passes."""
        names = [c["Names"][0] for s in services for c in self.containers(s)]
        missing = [s for s in services if not self.containers(s)]
        if missing:
            raise StackError(f"no container of {', '.join(missing)}")
        deadline = time.monotonic() + timeout_s
        pending = list(names)
        while pending:
            for name in list(pending):
                state = podman("inspect", name, "--format", "{{.State.Status}}").stdout.strip()
                if state in ("exited", "stopped", "dead"):
                    raise StackError(f"{name} exited while starting:\n{self.logs(name)}")
                if podman("healthcheck", "run", name, check=False).returncode == 0:
                    pending.remove(name)
                    log(f"{name}: healthy")
            if pending and time.monotonic() > deadline:
                raise StackError(f"not healthy within {timeout_s:.0f} s: {', '.join(pending)}\n"
                                 f"{self.logs(pending[0])}")
            if pending:
                time.sleep(2)

    def up(self, variant_workers: int = 1, build: bool = True, timeout_s: float = 300.0) -> dict[str, float]:
        """Build (when asked), then the servers, healthy; `deploy` run to its end; the workers (healthy) and the
        watcher. A project already up is brought down first (its volumes kept), so that every container runs the
        images and the .env of now. Returns the seconds each stage took."""
        if not self.env_file.is_file():
            raise StackError(f"{self.env_file} does not exist: cp .env.example .env, set every credential in it "
                             "(docs/security.md)")
        ensure_tools("podman", "runc", "/usr/libexec/podman/catatonit")
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        if build:
            build_images(env_file=self.env_file)
            timings["build"] = time.monotonic() - t0
        if self.containers():
            log(f"{self.project} is up: down first (volumes kept), to start every container afresh")
            self.down()
        t0 = time.monotonic()
        self.compose("up", "--detach", "--no-build", *SERVERS)
        self.wait_healthy(SERVERS, timeout_s)
        timings["servers"] = time.monotonic() - t0
        t0 = time.monotonic()
        self.compose("up", "--detach", "--no-build", "--no-deps", "--no-recreate", DEPLOY)
        deploy = self.container(DEPLOY)
        code = podman("wait", deploy, timeout_s=timeout_s).stdout.strip()
        if code != "0":
            raise StackError(f"the deploy service failed (exit {code}):\n{self.logs(deploy)}")
        timings["deploy"] = time.monotonic() - t0
        t0 = time.monotonic()
        self.compose("up", "--detach", "--no-build", "--no-deps", "--no-recreate",
                     "--scale", f"variant-worker={variant_workers}", *WORKERS)
        self.wait_healthy(("sweep-worker", "variant-worker"), timeout_s)
        timings["workers"] = time.monotonic() - t0
        return timings

    def down(self, volumes: bool = False) -> None:
        """podman-compose down, then whatever it left: the project's containers, its networks (podman-compose
        leaves them), and with volumes=True its volumes."""
        self.compose("down", "--timeout", "10", *(["--volumes"] if volumes else []), check=False)
        label = f"label=io.podman.compose.project={self.project}"
        ids = podman("ps", "-a", "-q", "--filter", label).stdout.split()
        if ids:
            podman("rm", "--force", "--time", "10", *ids, check=False)
        for network in podman("network", "ls", "-q", "--filter", label).stdout.split():
            podman("network", "rm", "--force", network, check=False)
        if volumes:
            for volume in podman("volume", "ls", "-q", "--filter", label).stdout.split():
                podman("volume", "rm", "--force", volume, check=False)

    def status(self) -> list[tuple[str, str]]:
        return [(c["Names"][0], c.get("Status") or c.get("State", "")) for c in self.containers()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.compose", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="the base image and every service's image (cached by content)")
    build.add_argument("--rebuild", action="store_true", help="build even the images that are up to date")
    up = sub.add_parser("up", help="build, then start the stack in order, healthy")
    up.add_argument("--env-file", type=Path, default=REPO / ".env")
    up.add_argument("--variant-workers", type=int, default=1)
    up.add_argument("--no-build", action="store_true", help="use the images as they are")
    for name in ("down", "status"):
        one = sub.add_parser(name)
        one.add_argument("--env-file", type=Path, default=REPO / ".env")
    sub.choices["down"].add_argument("--volumes", action="store_true", help="delete the stack's data too")
    for one in sub.choices.values():
        one.add_argument("--project", default=PROJECT)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build_images(rebuild=args.rebuild)
            return 0
        stack = ComposeStack(args.env_file, args.project)
        if args.command == "up":
            if args.variant_workers < 1:
                parser.error("--variant-workers must be at least 1")
            timings = stack.up(args.variant_workers, build=not args.no_build)
            log("up: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
        elif args.command == "down":
            stack.down(volumes=args.volumes)
        for name, state in stack.status():
            print(f"{name}\t{state}")
        return 0
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
