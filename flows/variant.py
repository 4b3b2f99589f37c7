"""One variant's journey, as a flow run of its own: quantize, register, smoke-test and evaluate, track.

    variant_pipeline(job, variant, index=1)     # from quantization_sweep, or on a worker (flows/scaleout.py)

Each step is a task that returns the variant's updated VariantResult. A step that fails the variant (a
VariantError: Olive produced nothing, the graph is wrong, Foundry Local refused it, a measuring process died)
records the error and skips the steps that need it; the variant is still tracked. Any other exception is a bug and
stops the sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State
from pydantic import BaseModel

from slmops.calibration import Calibration
from slmops.config import SweepSpec
from slmops.convert import Export
from slmops.errors import TransientError, VariantError
from slmops.evaluate.baseline import Baseline
from slmops.report import human_size
from slmops.timing import Phases
from slmops.variant import Variant, VariantResult
from slmops.workspace import Workspace
from tasks.evaluate import evaluate, roofline
from tasks.quantize import quantize
from tasks.register import register, smoke_ask, smoke_test
from tasks.track import track_variant

LOST = "not logged: MLflow was unreachable earlier in this sweep"  # what the null tracker of a lost store says


class VariantJob(BaseModel):
    """What one variant's flow needs from its sweep (JSON-able, so that a worker elsewhere can run it too)."""

    spec: SweepSpec
    work_dir: Path
    out_dir: Path
    sweep_id: str
    source_sha: str
    tool_versions: dict[str, str]
    tracking_uri: str
    parent_run_id: str | None
    tracking_lost: str | None = None
    export: Export | None
    baseline: Baseline | None = None
    baseline_error: str | None = None
    foundry_cache: Path
    smoke_prompt: str
    dataset: Path | None = None
    calibration: Calibration | None = None
    total: int

    @property
    def ws(self) -> Workspace:
        return Workspace(self.work_dir, self.out_dir)

    @property
    def evaluates(self) -> bool:
        """Whether variants are measured: evaluation on, an eval set, and Foundry Local to serve them."""
        return bool(self.spec.evaluation.enabled and self.spec.foundry.enabled and self.dataset)


def _run_name() -> str:
    variant = flow_run.parameters["variant"]  # a Variant in process, its JSON on a worker
    return variant["name"] if isinstance(variant, dict) else variant.name


@flow(name="variant", flow_run_name=_run_name)
def variant_pipeline(job: VariantJob, variant: Variant, index: int) -> VariantResult | State:
    """One variant: quantize (or reuse) and check it, register and smoke-test it in Foundry Local, evaluate, track.

    A variant that failed ends its flow run Failed (what the Prefect UI shows), still carrying its result for the
    sweep: read it with ``result_of``."""
    logger = get_run_logger()
    step, ws, spec, phases = f"[{index}/{job.total}] {variant.name}", job.ws, job.spec, Phases()
    logger.info("%s: quantizing (%s, %s)", step, variant.precision, variant.method)
    result = VariantResult.planned(variant, ws.variants / variant.name)
    with phases("convert"):
        result = _step(result, quantize, variant, ws.variants / variant.name, spec.model.path, job.source_sha,
                       job.export, job.tool_versions, ws.logs, spec.model.trust_remote_code,
                       job.calibration.rows_file if job.calibration and variant.method == "gptq" else None)
    if result.ok and spec.foundry.enabled:
        with phases("foundry"):
            result = _step(result, register, result, spec.model.name, spec.foundry, job.foundry_cache)
            if result.ok and not job.evaluates:  # measured, it is smoke-tested by its measuring process
                logger.info("%s: registered as %s; smoke test", step, result.foundry_model_id)
                result = _step(result, smoke_test, result, job.smoke_prompt, spec.foundry, job.foundry_cache,
                               ws.smoke_tests, job.tool_versions)
    if result.ok and result.foundry_model_id and job.evaluates:
        logger.info("%s: registered as %s; smoke test and evaluation in a fresh process", step,
                    result.foundry_model_id)
        with phases("evaluate"):
            result = _evaluate(job, result)
    if result.ok:
        with phases("evaluate"):
            result = _step(result, roofline, result, ws.roofline)
    logger.info("%s: %s", step, f"{result.status} ({human_size(result.size_bytes)})" if result.ok
                else f"failed: {result.error}")
    # the orchestrating process's memory after each variant: a sweep of many variants must not grow it
    result = result.with_metrics({"orchestrator_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1)})
    with phases("tracking"):
        result = _track(job, result)
    result = result.model_copy(update={"timings": phases.as_dict()})
    return result if result.ok else Failed(message=result.error, data=result)


def result_of(state: State) -> VariantResult | None:
    """The sweep's entry of a variant flow run that ended: completed, or failed with its VariantResult (the
    variant's own failure). None when it ended otherwise (crashed, cancelled, a bug's exception)."""
    if not (state.is_completed() or state.is_failed()):
        return None
    outcome = state.result(raise_on_failure=False)
    return outcome if isinstance(outcome, VariantResult) else None


def _step(result: VariantResult, task: Any, *args: Any) -> VariantResult:
    """The task's updated result; its VariantError fails the variant (the task run shows failed); any other error is
    a bug and is raised."""
    outcome = task(*args, return_state=True).result(raise_on_failure=False)
    if isinstance(outcome, VariantError):
        return result.failed(str(outcome))
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _evaluate(job: VariantJob, result: VariantResult) -> VariantResult:
    """Measure the variant; without the baseline fidelity needs, it fails saying why."""
    if job.baseline_error:
        return result.failed(f"variant {result.name}: evaluation failed: {job.baseline_error}")
    smoke = smoke_ask(result, job.smoke_prompt, job.spec.foundry, job.ws.smoke_tests, job.tool_versions)
    return _step(result, evaluate, result, job.baseline, job.spec.evaluation, job.dataset, job.foundry_cache,
                 job.ws.evaluations / result.name, job.tool_versions, smoke)


def _track(job: VariantJob, result: VariantResult) -> VariantResult:
    """Log the variant to MLflow; a store that stays unreachable after the retries is recorded, not raised (the
    variant is complete on disk, and `slmops sync` logs it later)."""
    outcome = track_variant(job.tracking_uri, job.tracking_lost, job.parent_run_id, job.sweep_id, result,
                            job.source_sha, job.tool_versions, return_state=True).result(raise_on_failure=False)
    if isinstance(outcome, TransientError):
        get_run_logger().warning("%s: not logged to MLflow (%s); `slmops sync` logs it later", result.name, outcome)
        return result.model_copy(update={"mlflow_error": str(outcome)})
    if isinstance(outcome, BaseException):
        raise outcome
    if outcome is None:  # the store was lost earlier: the null tracker logged nothing
        return result.model_copy(update={"mlflow_error": LOST})
    return result.model_copy(update={"mlflow_run_id": outcome})
