"""The images of docker-compose.local.yml, built with podman on a machine that cannot pull from any registry: a
Debian base image made by debootstrap from the machine's own apt mirror, and every service's image FROM it, each
cached by content (ops.compose brings them up).

    python -m ops.compose build          # build_images(): the base, then each image whose content changed

Every podman call here is given the containers.conf this machine needs (CONTAINERS_CONF): root may not raise its
limits (default_ulimits) and crun 1.8 refuses hybrid cgroups (runtime = "runc").
"""

from __future__ import annotations

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

from ops.stack.processes import apt_install
from ops.stack.topology import REPO, StackError

LOCAL_FILE = REPO / "docker-compose.local.yml"
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
# where a build finds the CA bundle this machine's pip trusts (mounted read-only, for the build only)
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
    services = yaml.safe_load(LOCAL_FILE.read_text())["services"]
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
