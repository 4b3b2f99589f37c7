"""The quantization sweep: one source model in; a checked ONNX variant folder per spec entry out, each registered
and smoke-tested in Foundry Local, measured, tracked in MLflow; then the champion decided and the report written.

    slmops sweep configs/demo.yaml --out out/demo        # or, from Python:
    quantization_sweep(spec=load_spec("configs/demo.yaml"), out_dir="out/demo")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.scaleout import run_variants
from flows.variant import VariantJob
from slmops import calibration, report, staging
from slmops.adapters.tracking import default_tracking_uri
from slmops.calibration import Calibration
from slmops.config import SweepSpec, with_model_path
from slmops.errors import TrackingLostError, TransientError, VariantError
from slmops.files import read_json, write_json
from slmops.keys import variant_key
from slmops.preflight import Checked, preflight
from slmops.promote.champion import ChampionMeasured, ChampionToMeasure, needs_measuring
from slmops.timing import Phases
from slmops.variant import Variant, VariantResult
from slmops.versions import tool_versions
from slmops.workspace import Workspace
from tasks.convert import convert, fingerprint, merge_adapter
from tasks.evaluate import baseline
from tasks.promote import find_champion, promote, register_versions
from tasks.report import report as report_sweep
from tasks.track import finish_sweep, track_sweep


@flow(name="quantization-sweep")
def quantization_sweep(spec: SweepSpec, out_dir: str, work_dir: str | None = None,
                       sweep_id: str | None = None) -> dict[str, Any]:
    """Convert and quantize every variant of the spec, register, measure and track each, promote, report."""
    logger = get_run_logger()
    ws = Workspace.of(out_dir, work_dir)
    checked = preflight(spec, ws)  # nothing is written before the input passes
    with ws.sweep_session(spec.model.name, sweep_id, logger.info) as sweep_id:
        started, phases, versions = time.perf_counter(), Phases(), tool_versions()
        _prepare_folders(ws, logger)
        spec = _merged(spec, checked, ws, versions, logger)
        source_sha = fingerprint(spec.model.path.resolve(), ws.hash_memo)
        tracking_uri = default_tracking_uri(ws.work_dir)
        with phases("tracking"):
            parent = track_sweep(tracking_uri, str(ws.mlartifacts), spec, sweep_id, str(spec.model.path.resolve()),
                                 source_sha, versions)
        variants, calib, dataset = _calibrated(spec, checked, ws)
        with phases("convert"):
            export = _export(spec, ws, checked, variants, source_sha, versions, logger)
        job = VariantJob(spec=spec, work_dir=ws.work_dir, out_dir=ws.out_dir, sweep_id=sweep_id,
                         source_sha=source_sha, tool_versions=versions, tracking_uri=tracking_uri,
                         parent_run_id=parent, export=export, foundry_cache=_foundry_cache(spec, ws),
                         smoke_prompt=checked.smoke_prompt, dataset=dataset, calibration=calib, total=len(variants))
        with phases("evaluate"):
            job = _with_baseline(job, logger)
        results, champion = run_variants(job, variants, _champion_to_measure(job, variants))
        for result in results:
            phases.add(result.timings)
        _stop_if_tracking_lost(job, results, started)
        with phases("tracking"):
            results, decision = promote_sweep(spec, tracking_uri, sweep_id, ws.work_dir, results, champion)
        doc = report.sweep_report(sweep_id, spec, source_sha, versions, tracking_uri, parent, results,
                                  round(time.perf_counter() - started, 3), decision, read_json(ws.roofline_file), calib)
        with phases("report"):
            report_sweep(doc, ws.out_dir, tracking_uri)
        doc["timings"] = {**phases.as_dict(), "sweep": round(time.perf_counter() - started, 3)}
        write_json(ws.report, doc)
        finish_sweep(tracking_uri, parent, doc)
    if not any(r.ok for r in results):
        raise VariantError(f"no variant succeeded; see {ws.report}")
    return doc


def promote_sweep(spec: SweepSpec, tracking_uri: str, sweep_id: str, work_dir: Path, results: list[VariantResult],
                  champion: ChampionMeasured | None = None) -> tuple[list[VariantResult], dict | None]:
    """Register each succeeded variant as a model version and decide by the spec's policy (the sweep's tracking tail,
    shared with `slmops sync`)."""
    policy = spec.promotion
    if not policy.enabled or not any(r.ok for r in results):
        return results, None
    registered_model = policy.registered_model or spec.model.name
    results = register_versions(tracking_uri, registered_model, sweep_id, results, policy.artifacts, str(work_dir))
    decision = promote(tracking_uri, sweep_id, registered_model, policy, lock_dir=str(work_dir),
                       champion_fresh=champion.fresh if champion else None,
                       champion_note=champion.note if champion else None)
    get_run_logger().info("decision: %s", decision["reason"])
    return results, decision


def _merged(spec: SweepSpec, checked: Checked, ws: Workspace, versions: dict[str, str], logger) -> SweepSpec:
    """The spec to sweep: for a LoRA adapter, its base with the adapter merged in (made once per content of both)."""
    if checked.adapter is None:
        return spec
    logger.info("merging the LoRA adapter %s into %s", checked.adapter, checked.base)
    merged = merge_adapter(checked.base, checked.adapter, ws.merged, ws.hash_memo, versions, checked.adapter_config)
    return with_model_path(spec, merged, "the merged adapter")


def _calibrated(spec: SweepSpec, checked: Checked, ws: Workspace) -> tuple[list[Variant], Calibration | None,
                                                                          Path | None]:
    """The resolved variants, and with a calibrated (gptq) one among them its calibration rows and the eval set every
    variant is measured on (the rows calibration did not see: slmops.calibration)."""
    variants = [v.resolved() for v in spec.variants]
    if not any(v.method == "gptq" for v in variants):
        return variants, None, checked.dataset
    calib = calibration.prepare(spec.calibration, checked.dataset, ws.calibration)
    get_run_logger().info(calib.describe())
    variants = [v.model_copy(update={"calibration": calib.sha256}) if v.method == "gptq" else v for v in variants]
    return variants, calib, calib.measured_file or checked.dataset


def _prepare_folders(ws: Workspace, logger) -> None:
    for folder in (ws.work_dir, ws.variants, ws.logs, ws.exports):
        folder.mkdir(parents=True, exist_ok=True)
    stale_folders = [staging.clean_stale_staging(f) for f in (ws.variants, ws.exports, ws.baselines, ws.merged)]
    for stale in (path for removed in stale_folders for path in removed):
        logger.info("removed %s, left by an interrupted run", stale.name)


def _foundry_cache(spec: SweepSpec, ws: Workspace) -> Path:
    return (spec.foundry.cache_dir or ws.foundry_cache).resolve()


def _measures_fidelity(spec: SweepSpec, checked: Checked) -> bool:
    return spec.evaluation.enabled and spec.evaluation.fidelity and spec.foundry.enabled and checked.dataset is not None


def _export(spec: SweepSpec, ws: Workspace, checked: Checked, variants: list[Variant], source_sha: str,
            versions: dict[str, str], logger):
    """The fp32 export, when a variant is derived from it or fidelity needs it as the baseline."""
    if not _measures_fidelity(spec, checked) and not any(v.needs_fp32_export for v in variants):
        return None
    logger.info("exporting %s to fp32 ONNX (shared by the derived variants)", spec.model.name)
    return convert(spec.model.path.resolve(), ws.exports, source_sha, versions, spec.model.trust_remote_code, ws.logs)


def _champion_to_measure(job: VariantJob, variants: list[Variant]) -> ChampionToMeasure | None:
    """The current champion, when the policy names a figure of the machine and the champion is none of this sweep's
    own variants: it is measured again beside them."""
    policy = job.spec.promotion
    if not (policy.enabled and job.evaluates and needs_measuring(policy)):
        return None
    keys = [variant_key(job.source_sha, v, job.tool_versions) for v in variants]
    outcome = find_champion(job.tracking_uri, policy.registered_model or job.spec.model.name, policy, keys,
                            job.work_dir, return_state=True).result(raise_on_failure=False)
    if isinstance(outcome, TransientError):  # the store is gone: the variants go on, and say so when tracked
        get_run_logger().warning("the champion is not measured again: %s", outcome)
        return None
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _with_baseline(job: VariantJob, logger) -> VariantJob:
    """The job with the stored fp32 baseline fidelity compares with (computed once, reused by later sweeps), or
    with why there is none."""
    if not (job.evaluates and job.spec.evaluation.fidelity):
        return job
    if job.export is None or job.export.dir is None:
        why = job.export.error if job.export else "it was not made"
        return job.model_copy(update={"baseline_error": f"fidelity needs the fp32 export, which failed: {why}"})
    state = baseline(job.export, job.dataset, job.spec.evaluation, job.ws.baselines, job.tool_versions,
                     return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, VariantError):
        return job.model_copy(update={"baseline_error": str(outcome)})
    if isinstance(outcome, BaseException):
        raise outcome
    logger.info("fp32 baseline for fidelity: %s (%d positions)", "reused" if outcome.reused else "computed",
                outcome.positions)
    return job.model_copy(update={"baseline": outcome})


def _stop_if_tracking_lost(job: VariantJob, results: list[VariantResult], started: float) -> None:
    """With the store lost, write the report of the complete variants and say how to log them later."""
    if not any(r.mlflow_error for r in results):
        return
    doc = report.sweep_report(job.sweep_id, job.spec, job.source_sha, job.tool_versions, job.tracking_uri,
                              job.parent_run_id, results, round(time.perf_counter() - started, 3))
    doc["mlflow"]["synced"] = False
    write_json(job.ws.report, doc)
    ok = sum(r.ok for r in results)
    raise TrackingLostError(
        f"MLflow at {job.tracking_uri} was lost during the sweep; {ok} variant(s) are complete in "
        f"{job.ws.variants}; when it is back, run `slmops sync --out {job.ws.out_dir}` to log them")
