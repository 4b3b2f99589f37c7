"""Screenshots of the stack's two UIs for docs/: the Prefect UI with a finished triggered sweep (its task runs, its
variants' flow runs, its artifacts) and the MLflow UI comparing the sweep's variants. Headless Debian chromium.

    .venv/bin/python scripts/screenshots.py                             # a stack of its own, stopped afterwards
    .venv/bin/python scripts/screenshots.py --stack-dir .slmops/stack   # a running `python -m ops.stack up`
    .venv/bin/python scripts/screenshots.py --checkpoint PATH --out docs

The checkpoint defaults to the demo model ($SLMOPS_HOME/demo-model, trained once if missing). It is published as a
`checkpoint.published` event, so the pictures show the triggered deployment's run. Chromium comes from Debian's
package (installed with apt-get when missing and run as root).

Since the stack requires credentials (docs/security.md), set SLMOPS_PREFECT_AUTH_STRING, SLMOPS_MLFLOW_ADMIN_PASSWORD
and SLMOPS_MLFLOW_PASSWORD before running it. Not updated yet: the headless browser does not log in to the two UIs,
so with authentication on the pictures show their login prompts (the pictures in docs/ predate authentication).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.stack import Stack  # noqa: E402
from slmops.errors import SlmopsError  # noqa: E402

TRIGGERED = "sweep-checkpoint/on-checkpoint"


def chromium() -> str:
    """Debian's chromium, installed first when missing and we are root."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0:
        raise SlmopsError("chromium is not installed; install it (Debian: apt-get install -y chromium)")
    print("installing chromium: apt-get update && apt-get install -y chromium", file=sys.stderr)
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("chromium")


class Browser:
    """Headless chromium driven over the DevTools protocol: open a page, wait for its data, click, capture."""

    def __init__(self, width: int = 1600, height: int = 1000) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="slmops-chromium-"))
        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise SlmopsError("chromium did not start its DevTools endpoint within 60 s")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:  # noqa: S310
            page = next(t for t in json.load(response) if t["type"] == "page")
        from websockets.sync.client import connect

        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.next_id = 0
        self.size(width, height)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise SlmopsError(f"chromium: {method}: {message['error'].get('message')}")
                return message.get("result", {})

    def size(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.js(expression):
            if time.monotonic() > deadline:
                raise SlmopsError(f"the page never showed {what} within {timeout_s:.0f} s")
            time.sleep(0.5)

    def open(self, url: str, text: str, timeout_s: float = 60) -> None:
        """Go to url and wait until the page shows `text` (the single-page app has loaded its data)."""
        self.call("Page.navigate", url=url)
        self.wait_for(f"document.body && document.body.innerText.includes({json.dumps(text)})", repr(text), timeout_s)

    def click_text(self, text: str, selector: str = "*") -> None:
        """Click the innermost element whose own text is exactly `text`."""
        found = self.js(f"""(() => {{
            const hits = [...document.querySelectorAll({json.dumps(selector)})].filter(
                e => e.innerText && e.innerText.trim() === {json.dumps(text)});
            const el = hits[hits.length - 1];
            if (!el) return false;
            el.click();
            return true;
        }})()""")
        if not found:
            raise SlmopsError(f"nothing to click with the text {text!r}")

    def key(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code,
                      nativeVirtualKeyCode=code)

    def choose(self, select_id: str, values: list[str]) -> None:
        """Pick values in a searchable select (MLflow's): open it, type each value, Enter; then Escape."""
        for value in values:
            opened = self.js(f"""(() => {{
                const input = document.getElementById({json.dumps(select_id)});
                if (!input) return false;
                const opener = new MouseEvent('mousedown', {{bubbles: true}});
                input.closest('[class*="select-selector"]').dispatchEvent(opener);
                input.focus();
                return true;
            }})()""")
            if not opened:
                raise SlmopsError(f"no select #{select_id} on the page")
            time.sleep(0.3)
            self.call("Input.insertText", text=value)
            time.sleep(0.5)  # the option list filters as it is typed
            self.key("Enter", 13)
            time.sleep(0.3)
        self.key("Escape", 27)

    def shot(self, out: Path, settle_s: float = 2.0) -> Path:
        time.sleep(settle_s)  # charts and the run graph animate in
        import base64

        data = self.call("Page.captureScreenshot", format="png")["data"]
        out.write_bytes(base64.b64decode(data))
        print(out)
        return out

    def close(self) -> None:
        if getattr(self, "ws", None):
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


@contextmanager
def client_for(stack: Stack):
    """A Prefect client of the stack's server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url}):
        with get_client(sync_client=True) as client:
            yield client


def wait_for_triggered_run(stack: Stack, checkpoint: Path, since: datetime, timeout_s: float = 1800):
    """The flow run the event started, once it is final."""
    deadline = time.monotonic() + timeout_s
    with client_for(stack) as client:
        deployment = client.read_deployment_by_name(TRIGGERED)
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        while time.monotonic() < deadline:
            runs = [r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[deployment.id])))
                if r.parameters.get("checkpoint_path") == str(checkpoint) and r.created >= since]
            if runs and runs[0].state.is_final():
                return runs[0]
            time.sleep(3)
    raise SlmopsError(f"the triggered sweep of {checkpoint} did not finish within {timeout_s:.0f} s; see {stack.logs}")


def sweep_subflow(stack: Stack, run_id) -> object:
    """The quantization-sweep flow run below the triggered run: the one that holds the tasks and artifacts."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with client_for(stack) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
        flows = {c.flow_id: client.read_flow(c.flow_id).name for c in children}
    [sweep] = [c for c in children if flows[c.flow_id] == "quantization-sweep"]
    return sweep


def mlflow_compare_url(stack: Stack, report: dict) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.mlflow_url)
    experiment = client.get_run(report["mlflow"]["parent_run_id"]).info.experiment_id
    runs = [v["mlflow_run_id"] for v in report["variants"] if v.get("mlflow_run_id")]
    query = urllib.parse.urlencode({"runs": json.dumps(runs), "experiments": json.dumps([experiment])})
    return f"{stack.mlflow_url}/#/compare-runs?{query}"


def take(stack: Stack, checkpoint: Path, out_dir: Path) -> list[Path]:
    """Publish the checkpoint, wait for its sweep, and photograph both UIs."""
    from ops.events import publish_checkpoint

    since = datetime.now(timezone.utc)
    publish_checkpoint(checkpoint, api_url=stack.prefect_api_url)
    print(f"published {checkpoint}; waiting for the triggered sweep (see {stack.prefect_ui_url})")
    run = wait_for_triggered_run(stack, checkpoint, since)
    if not run.state.is_completed():
        raise SlmopsError(f"the triggered sweep ended {run.state.name}: {run.state.message}")
    return photograph(stack, run.id, checkpoint, out_dir)


def photograph(stack: Stack, run_id, checkpoint: Path, out_dir: Path) -> list[Path]:
    """The triggered run's sweep in the Prefect UI (graph, artifacts), its variants compared in the MLflow UI."""
    from slmops.config import load_spec

    sweep = sweep_subflow(stack, run_id)
    # where flows/triggered.py writes a checkpoint's sweep: <work>/sweeps/<model name>/<checkpoint folder name>
    spec = load_spec(ROOT / _deployed_spec(stack))
    report = json.loads((stack.work_dir / "sweeps" / spec.model.name / checkpoint.name / "report.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    ui = stack.prefect_ui_url
    browser = Browser()
    try:
        browser.open(f"{ui}/runs/flow-run/{sweep.id}", "quantization-sweep")  # the graph is a canvas
        shots = [browser.shot(out_dir / "prefect-sweep.png", settle_s=4)]
        browser.click_text("Artifacts")
        browser.wait_for("document.body.innerText.includes('sweep-variants')", "the sweep's artifacts")
        shots.append(browser.shot(out_dir / "prefect-artifacts.png"))
        browser.click_text("sweep-variants")  # the table artifact: one row per variant
        browser.wait_for(f"document.body.innerText.includes({json.dumps(report['variants'][-1]['name'])})",
                         "the variants table")
        shots.append(browser.shot(out_dir / "prefect-variants-table.png"))
        browser.size(1600, 1400)
        browser.open(mlflow_compare_url(stack, report), "Comparing")
        browser.wait_for("document.body.innerText.includes('decode_tokens_per_s')", "the variants' metrics")
        browser.js("document.querySelector('button[aria-label=\"Close\"]')?.click()")  # the assistant's panel
        # the parallel-coordinates plot of what a sweep trades: size, fidelity, speed (the last one colours it)
        browser.click_text("Clear All", "button")
        browser.choose("dubois-select-1", ["precision", "block_size"])
        browser.choose("dubois-select-2", ["size_bytes", "kl_div_mean", "exact_match", "decode_tokens_per_s"])
        shots.append(browser.shot(out_dir / "mlflow-compare.png", settle_s=3))
    finally:
        browser.close()
    return shots


def _deployed_spec(stack: Stack) -> str:
    with client_for(stack) as client:
        return client.read_deployment_by_name(TRIGGERED).parameters["spec_path"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stack-dir", help="state folder of a running stack (default: start one in a temp folder)")
    parser.add_argument("--checkpoint", help="model folder to publish (default: $SLMOPS_HOME/demo-model)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where the PNGs go (default: docs/)")
    args = parser.parse_args(argv)

    from slmops.demo import ensure_demo_model
    from slmops.workspace import default_work_dir

    try:
        chromium()
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
                stack.up(ports={"postgres": 0, "prefect": 0, "mlflow": 0}, query_seconds=2)
                take(stack, checkpoint, Path(args.out))
            finally:
                stack.down(purge=True)
    except SlmopsError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
