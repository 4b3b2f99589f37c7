"""The stack of plain processes end to end: a published checkpoint starts the triggered deployment on a worker, the
sweep completes and is in MLflow; bad events, killed workers and two workers sharing one sweep.

    .venv/bin/python -m pytest tests/stack/test_stack.py      # starts and stops its own stack (conftest.py)
"""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from slmops.config import SweepSpec
from slmops.events import publish_checkpoint
from slmops.stack import DEFAULT_CRON
from stack_helpers import VARIANTS, prefect_client, runs_by_worker, subflow_runs, wait_for_run, write_sweep_spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
TRIGGERED = "sweep-checkpoint/on-checkpoint"
NIGHTLY = "sweep-from-spec-file/nightly"


def now() -> datetime:
    return datetime.now(timezone.utc)


def sweep_out(stack, checkpoint: Path) -> Path:
    """Where the triggered deployment writes a checkpoint's sweep (flows/triggered.py, spec model name `tiny`)."""
    return stack.work_dir / "sweeps" / "tiny" / checkpoint.name


def report_rows(out: Path) -> list[tuple]:
    report = json.loads((out / "report.json").read_text())
    return [(v["name"], v["status"], v.get("content_key")) for v in report["variants"]]


def mlflow_runs(stack, sweep_id: str) -> list:
    client = MlflowClient(stack.mlflow_url)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, f"tags.`slmops.sweep_id` = '{sweep_id}'")


def test_a_published_checkpoint_starts_a_sweep_that_completes_and_is_in_mlflow(stack, checkpoint):
    started = now()
    publish_checkpoint(checkpoint, api_url=stack.prefect_api_url)
    run = wait_for_run(stack, TRIGGERED, started, checkpoint_path=str(checkpoint))
    assert run.state.is_completed(), run.state.message
    assert run.name == f"checkpoint-{checkpoint.name}"

    children = subflow_runs(stack, run.id)
    variant_runs = sorted(c.name for c in children if c.name in {v["name"] for v in VARIANTS})
    assert variant_runs == sorted(v["name"] for v in VARIANTS), "one flow run per variant, below the sweep's"
    assert all(c.state.is_completed() for c in children)
    with prefect_client(stack) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[c.id for c in children])))
    assert artifacts, "the sweep's report is in the Prefect UI as artifacts"

    report = json.loads((sweep_out(stack, checkpoint) / "report.json").read_text())
    assert report["source_model"]["path"] == str(checkpoint)
    assert {v["name"]: v["status"] for v in report["variants"]} == {v["name"]: "succeeded" for v in VARIANTS}
    assert report["mlflow"]["tracking_uri"] == stack.mlflow_url
    runs = mlflow_runs(stack, report["sweep_id"])
    kinds = sorted((r.data.tags["slmops.kind"], r.data.tags.get("slmops.variant", "")) for r in runs)
    assert kinds == sorted([("sweep", "")] + [("variant", v["name"]) for v in VARIANTS])
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_an_event_for_a_folder_that_is_not_a_model_fails_the_run_at_once_with_the_reason(stack, tmp_path):
    not_a_model = tmp_path / "step-broken"
    not_a_model.mkdir()
    (not_a_model / "README.md").write_text("a half-copied checkpoint")
    started = now()
    publish_checkpoint(not_a_model, api_url=stack.prefect_api_url, check=False)
    run = wait_for_run(stack, TRIGGERED, started, checkpoint_path=str(not_a_model))
    assert run.state.is_failed()
    assert f"{not_a_model}: no config.json; a Hugging Face model folder needs one" in run.state.message
    assert subflow_runs(stack, run.id) == [], "it failed before any sweep started"
    assert run.total_run_time.total_seconds() < 10
    assert not sweep_out(stack, not_a_model).exists()


def test_the_nightly_deployment_is_scheduled_and_sweeps_the_newest_complete_checkpoint(stack, checkpoint, tmp_path):
    unfinished = checkpoint.parent / "step-999999999"  # newer, still being copied: not a model folder yet
    unfinished.mkdir()
    (unfinished / "config.json").write_text((checkpoint / "config.json").read_text())
    out = tmp_path / "nightly"
    started = now()
    with prefect_client(stack) as client:
        deployment = client.read_deployment_by_name(NIGHTLY)
        assert [s.schedule.cron for s in deployment.schedules] == [DEFAULT_CRON]
        client.create_flow_run_from_deployment(deployment.id, parameters={
            "latest_checkpoint_in": str(checkpoint.parent), "out_dir": str(out)})
    run = wait_for_run(stack, NIGHTLY, started, out_dir=str(out))
    assert run.state.is_completed(), run.state.message
    report = json.loads((out / "report.json").read_text())
    assert report["source_model"]["path"] == str(checkpoint)
    assert {v["status"] for v in report["variants"]} == {"succeeded"}


def test_two_workers_share_the_variants_of_one_sweep_and_give_the_result_of_one(stack, checkpoint, tmp_path):
    if "execution" not in SweepSpec.model_fields:
        pytest.skip("needs the spec switch execution.variants_on (slmops/config.py, flows/quantization_sweep.py)")
    variants = VARIANTS[::2]  # two variants, two workers: each takes one (a worker runs one conversion at a time)
    names = {v["name"] for v in variants}
    spec = write_sweep_spec(tmp_path / "on-workers.yaml", checkpoint, variants=variants,
                            execution={"variants_on": "workers"})

    def sweep(out: Path):
        started = now()
        with prefect_client(stack) as client:
            deployment = client.read_deployment_by_name(TRIGGERED)
            client.create_flow_run_from_deployment(deployment.id, parameters={
                "checkpoint_path": str(checkpoint), "spec_path": str(spec), "out_dir": str(out)})
        run = wait_for_run(stack, TRIGGERED, started, out_dir=str(out))
        assert run.state.is_completed(), run.state.message
        variant_runs = {str(c.id) for c in subflow_runs(stack, run.id) if c.name in names}
        assert len(variant_runs) == len(variants)
        return {worker: ids & variant_runs for worker, ids in runs_by_worker(stack).items() if ids & variant_runs}

    two = sweep(tmp_path / "two-workers")
    assert set(two) == {"variants-1", "variants-2"}, f"both variant workers converted: {two}"

    stack.stop_process("worker-variants-2")
    try:
        one = sweep(tmp_path / "one-worker")
    finally:
        stack.start_workers()
    assert set(one) == {"variants-1"}
    assert report_rows(tmp_path / "two-workers") == report_rows(tmp_path / "one-worker")
    assert {status for _, status, _ in report_rows(tmp_path / "one-worker")} == {"succeeded"}


def test_a_worker_lost_mid_sweep_leaves_a_crashed_run_and_the_rerun_reuses_finished_variants(stack, checkpoint):
    """The worker and its flow-run processes killed at once (a machine lost): no process is left to report the
    end, so the heartbeat automation (deployments/automations.yaml) marks the run Crashed; the re-run resumes."""
    out = sweep_out(stack, checkpoint)
    started = now()
    publish_checkpoint(checkpoint, api_url=stack.prefect_api_url)
    deadline = time.monotonic() + 240
    while not (out / "variants" / VARIANTS[0]["name"]).is_dir():
        assert time.monotonic() < deadline, f"the sweep never finished its first variant; see {stack.logs}"
        time.sleep(0.05)
    stack.stop_process("worker-sweeps-1", sig=signal.SIGKILL)  # the worker and every process below it, at once
    crashed = wait_for_run(stack, TRIGGERED, started, timeout_s=200, checkpoint_path=str(checkpoint))
    assert crashed.state.is_crashed(), crashed.state
    assert "no heartbeat" in crashed.state.message
    interrupted = json.loads((out / ".slmops-sweep.json").read_text())

    stack.start_workers()
    rerun_started = now()
    publish_checkpoint(checkpoint, api_url=stack.prefect_api_url)
    rerun = wait_for_run(stack, TRIGGERED, rerun_started, checkpoint_path=str(checkpoint))
    assert rerun.state.is_completed(), rerun.state.message
    report = json.loads((out / "report.json").read_text())
    assert report["sweep_id"] == interrupted["sweep_id"], "the re-run resumes the crashed sweep"
    statuses = {v["name"]: v["status"] for v in report["variants"]}
    assert statuses[VARIANTS[0]["name"]] == "cached", statuses
    assert set(statuses.values()) <= {"cached", "succeeded"}
    variants = [r.data.tags["slmops.variant"] for r in mlflow_runs(stack, report["sweep_id"])
                if r.data.tags["slmops.kind"] == "variant"]
    assert sorted(variants) == sorted(v["name"] for v in VARIANTS), "one MLflow run per variant, no duplicate"
    assert not (out / ".slmops-sweep.json").exists()
