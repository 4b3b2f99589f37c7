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

The images and podman itself: ops/images.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ops.images import BASE_IMAGE, build_images, ensure_tools, image_builds, image_label, log, podman, run
from ops.stack.processes import bin_path
from ops.stack.topology import REPO, StackError

__all__ = ["BASE_IMAGE", "ComposeStack", "build_images", "image_builds", "image_label", "main", "podman"]

COMPOSE_FILES = (REPO / "docker-compose.yml", REPO / "docker-compose.local.yml")
PROJECT = "slmops"
SERVERS = ("postgres", "prefect-server", "mlflow-server")
WORKERS = ("sweep-worker", "variant-worker", "checkpoint-watcher")
DEPLOY = "deploy"


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
