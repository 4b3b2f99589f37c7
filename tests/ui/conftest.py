"""The stack's two UIs in a real browser (Playwright driving Debian's Chromium, installed with apt-get when missing):
one stack per module with authentication on, a triggered sweep that completes, and a sweep in which one variant
fails on purpose. A failed test leaves a screenshot of each page it opened in out/ui-failures/.

    .venv/bin/python -m pytest tests/ui          # about 4 minutes on 2 cores
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ops.stack import Stack
from slmops.config import load_spec
from stack_helpers import prefect_client, publish, running_stack, subflow_runs, wait_for_run, write_sweep_spec
from ui_sweeps import EVAL_ROWS, EVALUATION, FAILING, FAILURE_SHOTS, MODEL, NIGHTLY, TRIGGERED, VARIANTS, Sweep


def _sweep_of(stack: Stack, run, out: Path) -> Sweep:
    with prefect_client(stack) as client:
        [sweep_run] = [r for r in subflow_runs(stack, run.id)
                       if client.read_flow(r.flow_id).name == "quantization-sweep"]
    return Sweep(run=run, sweep_run=sweep_run, report=json.loads((out / "report.json").read_text()))


@pytest.fixture(scope="module")
def ui_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui")


@pytest.fixture(scope="module")
def checkpoint(ui_root, tiny_model) -> Path:
    """The tiny model with an eval set of its own, as a training job would leave a checkpoint."""
    target = ui_root / "checkpoints" / "step-100"
    shutil.copytree(tiny_model, target)
    (target / "eval.jsonl").write_text("".join(json.dumps(row) + "\n" for row in EVAL_ROWS))
    return target


@pytest.fixture(scope="module")
def stack(ui_root, checkpoint) -> Iterator[Stack]:
    spec = write_sweep_spec(ui_root / "deployed-spec.yaml", checkpoint, name=MODEL, evaluation=EVALUATION)
    load_spec(spec)  # a spec the workers would refuse fails here, before the stack starts
    with running_stack(ui_root, spec, [ui_root], variant_workers=1) as st:
        yield st


@pytest.fixture(scope="module")
def triggered(stack, checkpoint) -> Sweep:
    """The sweep the published checkpoint started, completed."""
    since = datetime.now(timezone.utc)
    publish(stack, checkpoint)
    run = wait_for_run(stack, TRIGGERED, since, timeout_s=600, checkpoint_path=str(checkpoint))
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}; see {stack.logs}"
    return _sweep_of(stack, run, stack.work_dir / "sweeps" / MODEL / checkpoint.name)


@pytest.fixture(scope="module")
def with_a_failure(stack, checkpoint, ui_root, triggered) -> Sweep:
    """A sweep of the nightly deployment whose spec adds a variant that fails (after the triggered one: the
    champion is already set, so this sweep faces it)."""
    spec = write_sweep_spec(ui_root / "failing-spec.yaml", checkpoint, name=MODEL, variants=[*VARIANTS, FAILING],
                            evaluation=EVALUATION)
    out = ui_root / "failing-out"
    since = datetime.now(timezone.utc)
    with prefect_client(stack) as client:
        client.create_flow_run_from_deployment(client.read_deployment_by_name(NIGHTLY).id,
                                               parameters={"spec_path": str(spec), "out_dir": str(out)})
    run = wait_for_run(stack, NIGHTLY, since, timeout_s=600, spec_path=str(spec))
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}; see {stack.logs}"
    return _sweep_of(stack, run, out)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from ops.ui import chromium_browser

    with chromium_browser() as found:
        yield found


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def pages(request) -> Iterator[list]:
    """The pages a test opened: each one photographed into out/ui-failures/ when the test fails."""
    opened: list = []
    yield opened
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        FAILURE_SHOTS.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(opened):
            path = FAILURE_SHOTS / f"{request.node.name}-{i}.png"
            try:
                page.screenshot(path=str(path), full_page=True)
                print(f"screenshot of {page.url}: {path}")
            except Exception as err:  # a page that crashed: say so, keep the test's own failure
                print(f"no screenshot of page {i}: {err}")
