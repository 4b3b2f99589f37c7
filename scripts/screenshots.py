"""Screenshots of the stack's two UIs for docs/, taken logged in (authentication on, as the stack always runs): the
Prefect UI with a finished triggered sweep (its variants' flow runs, its artifacts, the variants table) and the
MLflow UI comparing the sweep's variants and showing the registered model's champion. Playwright driving Debian's
Chromium (installed with apt-get when missing and run as root), as tests/ui does.

    .venv/bin/python scripts/screenshots.py                             # a stack of its own, stopped afterwards
    .venv/bin/python scripts/screenshots.py --stack-dir .slmops/stack   # a running `python -m ops.stack up`
    .venv/bin/python scripts/screenshots.py --checkpoint PATH --out docs

The checkpoint defaults to the demo model ($SLMOPS_HOME/demo-model, trained once if missing). It is published as a
`checkpoint.published` event, so the pictures show the triggered deployment's run. A stack of its own gets fresh
random credentials; a running one is logged in to with the credentials in its state folder (what
`python -m ops.stack env --with-secrets` prints).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.stack import SECRET_VARS, Stack, prefect_settings  # noqa: E402
from ops.ui import chromium_browser, ensure_chromium, mlflow_page, prefect_page  # noqa: E402
from slmops.errors import SlmopsError  # noqa: E402

TRIGGERED = "sweep-checkpoint/on-checkpoint"


@contextmanager
def logged_in(stack: Stack):
    """This process talks to the stack's servers as its pipeline user and with its Prefect auth string."""
    client = stack.client_env(with_secrets=True)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update({k: client[k] for k in saved})
    try:
        with prefect_settings(stack.prefect_api_url, client["PREFECT_API_AUTH_STRING"]):
            yield client
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def wait_for_triggered_run(checkpoint: Path, since: datetime, timeout_s: float = 1800):
    """The flow run the event started, once it is final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(TRIGGERED)
        while time.monotonic() < deadline:
            runs = [r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[deployment.id])))
                if r.parameters.get("checkpoint_path") == str(checkpoint) and r.created >= since]
            if runs and runs[0].state.is_final():
                return runs[0]
            time.sleep(3)
    raise SlmopsError(f"the triggered sweep of {checkpoint} did not finish within {timeout_s:.0f} s")


def sweep_subflow(run_id):
    """The quantization-sweep flow run below the triggered run: the one that holds the variants and artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
        [sweep] = [c for c in children if client.read_flow(c.flow_id).name == "quantization-sweep"]
        deployed_spec = client.read_deployment_by_name(TRIGGERED).parameters["spec_path"]
    return sweep, deployed_spec


def take(stack: Stack, checkpoint: Path, out_dir: Path) -> list[Path]:
    """Publish the checkpoint, wait for its sweep, and photograph both UIs."""
    from ops.events import publish_checkpoint

    with logged_in(stack) as client:
        since = datetime.now(timezone.utc)
        publish_checkpoint(checkpoint, api_url=stack.prefect_api_url)
        print(f"published {checkpoint}; waiting for the triggered sweep (see {stack.prefect_ui_url})")
        run = wait_for_triggered_run(checkpoint, since)
        if not run.state.is_completed():
            raise SlmopsError(f"the triggered sweep ended {run.state.name}: {run.state.message}")
        sweep, deployed_spec = sweep_subflow(run.id)
        return photograph(stack, client, sweep, deployed_spec, checkpoint, out_dir)


def shot(page, path: Path, settle_s: float = 2.0) -> Path:
    page.wait_for_timeout(settle_s * 1000)  # charts and the run graph animate in
    page.screenshot(path=str(path))
    print(path)
    return path


def photograph(stack: Stack, client: dict, sweep, deployed_spec: str, checkpoint: Path, out_dir: Path) -> list[Path]:
    """The sweep in the Prefect UI (graph, variants' flow runs, artifacts, variants table); its variants compared in
    the MLflow UI, and the registered model's versions with the champion alias."""
    from mlflow.tracking import MlflowClient

    from slmops.config import load_spec

    # where flows/triggered.py writes a checkpoint's sweep: <work>/sweeps/<model name>/<checkpoint folder name>
    model = load_spec(ROOT / deployed_spec).model.name
    report = json.loads((stack.work_dir / "sweeps" / model / checkpoint.name / "report.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    ui, shots = stack.prefect_ui_url, []
    with chromium_browser() as browser:
        page = prefect_page(browser, ui, client["PREFECT_API_AUTH_STRING"])
        page.goto(f"{ui}/runs/flow-run/{sweep.id}")
        page.get_by_text("Subflow Runs", exact=True).click()
        page.locator(".state-list-item").first.wait_for()
        shots.append(shot(page, out_dir / "prefect-sweep.png", settle_s=4))
        page.get_by_text("Artifacts", exact=True).click()
        page.get_by_text("sweep-variants", exact=True).wait_for()
        shots.append(shot(page, out_dir / "prefect-artifacts.png"))
        page.get_by_text("sweep-variants", exact=True).click()  # the table artifact: one row per variant
        page.get_by_text("Show raw data").wait_for()
        shots.append(shot(page, out_dir / "prefect-variants-table.png"))

        base = stack.mlflow_url
        page = mlflow_page(browser, client["MLFLOW_TRACKING_USERNAME"], client["MLFLOW_TRACKING_PASSWORD"])
        page.set_viewport_size({"width": 1600, "height": 1400})
        experiment = MlflowClient(base).get_run(report["mlflow"]["parent_run_id"]).info.experiment_id
        page.goto(f"{base}/#/experiments/{experiment}/runs")
        page.get_by_role("row").filter(has_text=report["sweep_id"]).locator("button").first.click()
        for variant in report["variants"]:
            row = page.get_by_role("row").filter(has=page.get_by_text(variant["name"], exact=True))
            row.locator("input[type=checkbox]").first.check()
        page.get_by_role("button", name="Compare").click()
        page.get_by_text(f"Comparing {len(report['variants'])} Runs").wait_for()
        page.locator('button[aria-label="Close"]').first.click(timeout=5000)  # the assistant's panel
        # the parallel-coordinates plot of what a sweep trades: size, fidelity, speed (the last one colours it)
        page.get_by_role("button", name="Clear All").click()
        for select, values in (("dubois-select-1", ["precision", "block_size"]),
                               ("dubois-select-2", ["size_bytes", "kl_div_mean", "exact_match",
                                                    "decode_tokens_per_s"])):
            for value in values:
                page.locator(f"#{select}").click()
                page.keyboard.type(value)
                page.keyboard.press("Enter")
            page.keyboard.press("Escape")
        shots.append(shot(page, out_dir / "mlflow-compare.png", settle_s=3))
        page.goto(f"{base}/#/models/{model}")
        page.get_by_text("@\u00a0champion").first.wait_for()
        shots.append(shot(page, out_dir / "mlflow-champion.png"))
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stack-dir", help="state folder of a running stack (default: start one in a temp folder)")
    parser.add_argument("--checkpoint", help="model folder to publish (default: $SLMOPS_HOME/demo-model)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where the PNGs go (default: docs/)")
    args = parser.parse_args(argv)

    from slmops.demo import ensure_demo_model
    from slmops.workspace import default_work_dir

    try:
        ensure_chromium()
        if args.checkpoint:
            checkpoint = Path(args.checkpoint).resolve()
        else:
            checkpoint, made = ensure_demo_model(default_work_dir() / "demo-model")
            print(f"checkpoint: {checkpoint} ({'trained now' if made else 'reused'})")
        if args.stack_dir:
            take(Stack(args.stack_dir), checkpoint, Path(args.out))
            return 0
        with tempfile.TemporaryDirectory(prefix="slmops-screenshots-") as tmp:
            stack = Stack(Path(tmp) / "stack", work_dir=Path(tmp) / "work")
            try:
                stack.up(ports={"postgres": 0, "prefect": 0, "mlflow": 0}, query_seconds=2,
                         credentials={name: secrets.token_urlsafe(24) for name in SECRET_VARS},
                         model_roots=[checkpoint.parent])
                take(stack, checkpoint, Path(args.out))
            finally:
                stack.down(purge=True)
    except SlmopsError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
