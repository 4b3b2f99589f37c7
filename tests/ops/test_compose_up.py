"""docker-compose.yml, run for real: every image built with podman from Debian's packages (no registry), the stack
brought up with a generated .env (authentication on), the deployments registered by its `deploy` service, the demo
checkpoint published, and the triggered sweep seen to complete on its workers: scaled out over two variant workers,
its variants in MLflow and the champion alias set. Then requests without credentials are refused, and `down`
leaves no container, network, volume or process of the project behind.

    .venv/bin/python -m pytest tests/ops/test_compose_up.py    # first run builds the images (minutes), then cached

Needs root (podman, runc and debootstrap are installed with apt-get when missing) and the network to Debian's mirror
and the package index on the first run; skipped with the reason where podman cannot run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from ops import compose
from ops.stack import free_port, http_ok
from ops.stack.processes import http_request
from stack_helpers import subflow_runs, wait_for_run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "slmopstest"
MODEL = "composetiny"
TRIGGERED = "sweep-checkpoint/on-checkpoint"
VARIANTS = [{"name": "fp32", "precision": "fp32"}, {"name": "int8", "precision": "int8"},
            {"name": "int4-b32", "precision": "int4", "block_size": 32},
            {"name": "int4-b16", "precision": "int4", "block_size": 16}]
EVALUATION = {"profile": "quick", "fidelity": True, "max_eval_items": 4, "prompt_lengths": [8, 16, 24], "warmup": 1,
              "min_repetitions": 3, "repetitions": 3, "edge_cases": ["empty"], "max_new_tokens": 8}
EVAL_ROWS = [{"prompt": f"Say the word number {i}.", "reference": "hello"} for i in range(6)]
TIMINGS = ROOT / "out" / "compose-timings.json"


def _podman_runs() -> str | None:
    """Why the stack cannot run here (None when it can): rootful podman and debootstrap need root."""
    if os.geteuid() != 0:
        return "needs root: rootful podman, and debootstrap for the base image"
    if not (shutil.which("podman") or shutil.which("apt-get")):
        return "podman is not installed and there is no apt-get to install it"
    return None


@dataclass
class ComposeTarget:
    """What tests/stack_helpers needs of a stack: the Prefect API on the host, and the credentials a client sends."""

    prefect_api_url: str
    mlflow_url: str
    credentials: dict[str, str]
    logs: str

    def client_env(self, with_secrets: bool = False) -> dict[str, str]:
        return {"PREFECT_API_AUTH_STRING": self.credentials["SLMOPS_PREFECT_AUTH_STRING"]}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compose")


@pytest.fixture(scope="module")
def checkpoints(root, tiny_model) -> Path:
    """The host folder mounted at /checkpoints: the tiny model as a training job would leave it (with its own eval
    set), and the spec the deployments sweep with (scaled out to the variant workers)."""
    folder = root / "checkpoints"
    shutil.copytree(tiny_model, folder / "step-1")
    (folder / "step-1" / "eval.jsonl").write_text("".join(json.dumps(row) + "\n" for row in EVAL_ROWS))
    (folder / "sweep.yaml").write_text(yaml.safe_dump({
        "model": {"path": "/checkpoints/step-1", "name": MODEL}, "variants": VARIANTS,
        "evaluation": EVALUATION, "execution": {"variants_on": "workers"}}))
    os.chmod(folder, 0o777)  # the containers' users write nothing here, but must read it
    return folder


@pytest.fixture(scope="module")
def stack(root, checkpoints):
    """The compose stack up, with two variant workers; brought down with its volumes at the end whatever happens."""
    if reason := _podman_runs():
        pytest.skip(reason)
    credentials = {name: secrets.token_urlsafe(24) for name in (
        "SLMOPS_PREFECT_AUTH_STRING", "SLMOPS_MLFLOW_ADMIN_PASSWORD", "SLMOPS_MLFLOW_PASSWORD", "POSTGRES_PASSWORD",
        "SLMOPS_MLFLOW_SECRET_KEY")}
    ports = {"PREFECT_PORT": str(free_port()), "MLFLOW_PORT": str(free_port())}
    env_file = root / ".env"
    # .env.example with every credential set, as a user would leave it
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else None
        values = {**credentials, **ports, "CHECKPOINTS_DIR": str(checkpoints), "WATCH_INTERVAL_S": "3600",
                  "SLMOPS_SWEEP_SPEC": "/checkpoints/sweep.yaml"}
        lines.append(f"{key}={values[key]}" if key in values else line)
    env_file.write_text("\n".join(lines) + "\n")
    env_file.chmod(0o600)

    st = compose.ComposeStack(env_file, PROJECT)
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        outcome = compose.build_images(env_file=env_file)
        timings["images_s"] = round(time.monotonic() - t0, 1)
        timings.update({f"up_{k}_s": round(v, 1) for k, v in st.up(variant_workers=2, build=False).items()})
        target = ComposeTarget(f"http://127.0.0.1:{ports['PREFECT_PORT']}/api",
                               f"http://127.0.0.1:{ports['MLFLOW_PORT']}", credentials,
                               f"podman logs {PROJECT}_sweep-worker_1 (and the variant workers')")
        yield st, target, timings, outcome
    finally:
        t0 = time.monotonic()
        st.down(volumes=True)
        timings.setdefault("down_s", round(time.monotonic() - t0, 1))
        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        TIMINGS.write_text(json.dumps(timings, indent=1))


def _exec(st: compose.ComposeStack, service: str, *cmd: str) -> subprocess.CompletedProcess:
    return compose.podman("exec", st.container(service), *cmd, check=False)


@pytest.fixture(scope="module")
def triggered(stack):
    """The checkpoint published from inside the stack (as a training job's container would), and the sweep it
    triggered, final."""
    st, target, timings, _ = stack
    since = datetime.now(timezone.utc)
    t0 = time.monotonic()
    done = _exec(st, "sweep-worker", "slmops", "publish", "/checkpoints/step-1")
    assert done.returncode == 0, done.stdout + done.stderr
    run = wait_for_run(target, TRIGGERED, since, timeout_s=900, checkpoint_path="/checkpoints/step-1")
    timings["triggered_sweep_s"] = round(time.monotonic() - t0, 1)
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}\n{st.logs(st.container('sweep-worker'))}"
    report = _exec(st, "sweep-worker", "cat", f"/data/slmops/sweeps/{MODEL}/step-1/report.json")
    assert report.returncode == 0, report.stderr
    return run, json.loads(report.stdout)


def test_the_images_are_built_from_the_local_base_and_a_second_build_reuses_them(stack):
    st, _, _, first = stack
    assert all(done == "up to date" or done.startswith("built") for done in first.values()), first
    again = compose.build_images(env_file=st.env_file)
    assert again == {image: "up to date" for image in first}, "a second build builds nothing"
    for image in first:
        assert compose.image_label(image), f"{image} carries no content label"
    base_id = compose.podman("image", "inspect", compose.BASE_IMAGE, "--format", "{{.Id}}").stdout.strip()
    worker = next(b.image for b in compose.image_builds() if "worker" in b.image)
    layers = compose.podman("image", "tree", worker).stdout
    assert base_id[:12] in layers or compose.BASE_IMAGE in layers, layers


def test_the_triggered_sweep_completes_on_the_compose_workers_scaled_out_over_two(stack, triggered):
    st, target, _, _ = stack
    run, report = triggered
    assert [v["name"] for v in report["variants"] if v["status"] == "succeeded"] == [v["name"] for v in VARIANTS]
    # the variants ran as flow runs of their own, on the variant workers: both took some, two ran at once
    variant_runs = [r for r in subflow_runs(target, run.id) if r.deployment_id]
    assert len(variant_runs) == len(VARIANTS), [r.name for r in variant_runs]
    taken: dict[str, set[str]] = {}
    for container in st.containers("variant-worker"):
        name = container["Names"][0]
        taken[name] = {str(r.id) for r in variant_runs if str(r.id) in st.logs(name, lines=2000)}
    assert len(taken) == 2 and all(taken.values()), f"each variant worker takes variants: {taken}"
    spans = sorted((r.start_time, r.end_time) for r in variant_runs)
    overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]
    assert overlaps, f"no two variants ran at once: {spans}"


def test_the_variants_are_in_mlflow_and_the_champion_alias_is_set(stack, triggered):
    from mlflow.tracking import MlflowClient

    _, target, _, _ = stack
    _, report = triggered
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_USERNAME", "slmops")
        mp.setenv("MLFLOW_TRACKING_PASSWORD", target.credentials["SLMOPS_MLFLOW_PASSWORD"])
        client = MlflowClient(target.mlflow_url)
        parent = client.get_run(report["mlflow"]["parent_run_id"])
        children = client.search_runs([parent.info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert sorted(r.info.run_name for r in children) == sorted(v["name"] for v in VARIANTS)
        assert all(r.data.metrics.get("size_bytes") for r in children), "every variant's run holds its metrics"
        champion = report["decision"]["champion"]
        assert champion, report["decision"]["reason"]
        assert client.get_model_version_by_alias(MODEL, "champion").version == champion["model_version"]


def test_every_server_refuses_a_request_without_credentials(stack):
    st, target, _, _ = stack
    status, _ = http_request(f"{target.prefect_api_url}/admin/version")
    assert status == 401
    status, _ = http_request(f"{target.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1")
    assert status == 401
    # PostgreSQL publishes no port; from inside the stack's network it asks for the password
    done = _exec(st, "sweep-worker", "python", "-c",
                 "import psycopg; psycopg.connect('host=postgres dbname=prefect user=slmops', connect_timeout=5)")
    assert done.returncode != 0 and "password" in done.stderr, done.stderr[-500:]


def test_down_leaves_no_container_network_volume_or_process(stack, triggered):
    st, target, timings, _ = stack
    t0 = time.monotonic()
    st.down(volumes=True)
    timings["down_s"] = round(time.monotonic() - t0, 1)
    label = f"label=io.podman.compose.project={PROJECT}"
    assert compose.podman("ps", "-a", "-q", "--filter", label).stdout.split() == []
    assert compose.podman("network", "ls", "-q", "--filter", label).stdout.split() == []
    assert compose.podman("volume", "ls", "-q", "--filter", label).stdout.split() == []
    assert not [n for n in compose.podman("network", "ls", "--format", "{{.Name}}").stdout.split()
                if n.startswith(PROJECT)]
    leftover = subprocess.run(["pgrep", "-af", f"conmon.*{PROJECT}_"], capture_output=True, text=True).stdout
    assert leftover == "", leftover
    assert not http_ok(f"{target.prefect_api_url}/health")
