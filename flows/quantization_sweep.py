"""The quantization sweep: one source model in, a checked ONNX variant folder per spec entry out, each registered
and smoke-tested in Foundry Local, all of it in MLflow.

    slmops sweep configs/demo.yaml --out out/demo        # or, from Python:
    quantization_sweep(spec=load_spec("configs/demo.yaml"), out_dir="out/demo")
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psutil
from prefect import flow, get_run_logger
from pydantic import BaseModel

from slmops import build, report
from slmops.adapters.tracking import default_tracking_uri
from slmops.config import SweepSpec
from slmops.dataset import load_eval_set, resolve_dataset
from slmops.errors import SlmopsError, TrackingLostError, TransientError, VariantError
from slmops.locks import file_lock
from slmops.source import validate_model_dir
from slmops.timing import Phases
from slmops.versions import tool_versions
from slmops.workspace import Workspace, default_work_dir
from tasks.convert import build_variant, export_fp32, fingerprint_source
from tasks.evaluate import evaluate_variant
from tasks.foundry import register_with_foundry, smoke_test
from tasks.present import present_sweep
from tasks.promote import decide_promotion, register_model_versions
from tasks.track import finish_sweep_run, log_variant_run, start_sweep_run


def new_sweep_id(model_name: str) -> str:
    return f"{model_name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _needs_fp32(variant: dict) -> bool:
    return variant["precision"] == "fp32" or variant["method"] != "builder"


def _outcome(state):
    """The task's return value, a VariantError to record, or re-raise anything else (a bug stops the sweep)."""
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException) and not isinstance(outcome, VariantError):
        raise outcome
    return outcome


class VariantJob(BaseModel):
    """What one variant's pipeline needs from its sweep (JSON-able, so a worker elsewhere can run it too)."""

    spec: SweepSpec
    work_dir: str
    out_dir: str
    sweep_id: str
    source_dir: str
    source_sha: str
    tool_versions: dict[str, str]
    tracking_uri: str
    parent_run_id: str
    fp32_dir: str | None
    fp32_error: str | None
    foundry_cache: str
    smoke_prompt: str
    total: int
    dataset: str | None = None
    baseline_dir: str | None = None
    baseline_key: str | None = None
    mlflow_down: bool = False


@flow(name="variant", flow_run_name="{variant[name]}")
def variant_pipeline(job: VariantJob, variant: dict, key: str, index: int) -> dict:
    """One variant: build (or reuse) and check it, register and smoke-test it in Foundry Local, log it to MLflow."""
    logger = get_run_logger()
    name = variant["name"]
    ws = Workspace(Path(job.work_dir), Path(job.out_dir))
    dest = ws.variants / name
    step = f"[{index}/{job.total}] {name}"
    logger.info("%s: building (%s, %s)", step, variant["precision"], variant["method"])
    entry = report.variant_entry(variant, dest)
    phases = Phases()
    if _needs_fp32(variant) and job.fp32_dir is None and not build.is_complete(dest, key):
        entry["error"] = f"variant {name}: needs the fp32 export, which failed: {job.fp32_error}"
    else:
        with phases("convert"):
            state = build_variant.with_options(refresh_cache=not build.is_complete(dest, key))(
                variant, key, job.source_dir, job.fp32_dir, str(dest), str(ws.logs),
                job.spec.model.trust_remote_code, {"source_sha256": job.source_sha}, return_state=True)
        outcome = _outcome(state)
        if isinstance(outcome, VariantError):
            entry["error"] = str(outcome)
        else:
            cached = state.name == "Cached" or outcome.get("reused", False)
            entry.update(status="cached" if cached else "succeeded", size_bytes=outcome["size_bytes"],
                         content_key=key, olive_config=outcome["olive_config"])
            entry["metrics"]["build_seconds"] = outcome["seconds"]
    if entry["status"] != "failed" and job.spec.foundry.enabled:
        with phases("foundry"):
            _hand_to_foundry(entry, job, ws, step, logger)
    if entry["status"] != "failed" and entry.get("foundry_model_id") and job.spec.evaluation.enabled \
            and job.dataset and job.baseline_dir:
        with phases("evaluate"):
            _evaluate(entry, job, ws, step, logger)
    logger.info("%s: %s%s", step, entry["status"],
                f" ({report.human_size(entry['size_bytes'])})" if entry["status"] != "failed"
                else f": {entry['error']}")
    # the orchestrating process's memory after each variant: a sweep of many variants must not grow it
    entry["metrics"]["orchestrator_rss_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
    entry["timings"] = phases.as_dict()
    if job.mlflow_down:
        entry["mlflow_error"] = "not logged: MLflow was unreachable earlier in this sweep"
        return entry
    with phases("tracking"):
        state = log_variant_run(
            job.tracking_uri, job.parent_run_id, job.sweep_id, name,
            **report.mlflow_payload(entry, job.source_sha, job.tool_versions), failed=entry["status"] == "failed",
            return_state=True,
        )
    entry["timings"] = phases.as_dict()
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, TransientError):  # retried already: the variant stays complete on disk
        entry["mlflow_error"] = str(outcome)
        logger.warning("%s: not logged to MLflow (%s); `slmops sync` logs it later", step, outcome)
    elif isinstance(outcome, BaseException):
        raise outcome
    else:
        entry["mlflow_run_id"] = outcome
    return entry


@flow(name="quantization-sweep")
def quantization_sweep(spec: SweepSpec, out_dir: str, work_dir: str | None = None,
                       sweep_id: str | None = None) -> dict:
    """Convert and quantize every variant of the spec, check and register each, log all to MLflow."""
    logger = get_run_logger()
    ws = Workspace(Path(work_dir).resolve() if work_dir else default_work_dir(), Path(out_dir).resolve())
    validate_model_dir(spec.model.path.resolve(), spec.model.allow_pickle_weights)  # before anything is written
    ws.out_dir.mkdir(parents=True, exist_ok=True)
    # one sweep at a time per output folder; a second one waits rather than clobbering folders
    with file_lock(ws.out_dir / ".slmops.lock",
                   on_wait=lambda: logger.info("waiting: another sweep is writing %s", ws.out_dir)):
        interrupted = read_marker(ws)
        if interrupted and not sweep_id:
            sweep_id = interrupted["sweep_id"]
            logger.info("resuming sweep %s, interrupted at %s", sweep_id, interrupted.get("updated_at"))
        sweep_id = sweep_id or new_sweep_id(spec.model.name)
        write_marker(ws, sweep_id)
        doc = _sweep(spec, ws, sweep_id, logger)
        ws.marker.unlink(missing_ok=True)
    if not any(v["status"] != "failed" for v in doc["variants"]):
        raise VariantError(f"no variant succeeded; see {ws.report}")
    return doc


def read_marker(ws: Workspace) -> dict | None:
    """The sweep a killed run left unfinished in this output folder, if any."""
    return read_json(ws.marker)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_marker(ws: Workspace, sweep_id: str) -> None:
    report.write_report(ws.marker, {"sweep_id": sweep_id, "pid": os.getpid(),
                                    "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def _sweep(spec: SweepSpec, ws: Workspace, sweep_id: str, logger) -> dict:
    started = time.perf_counter()
    phases = Phases()
    source_dir = spec.model.path.resolve()
    dataset = resolve_dataset(spec.evaluation.dataset, source_dir)
    smoke_prompt = spec.evaluation.smoke_prompt or (load_eval_set(dataset)[0]["prompt"] if dataset else "Hello")
    foundry_cache = (spec.foundry.cache_dir or ws.foundry_cache).resolve()
    for folder in (ws.work_dir, ws.variants, ws.logs, ws.exports):
        folder.mkdir(parents=True, exist_ok=True)
    for stale in build.clean_stale_staging(ws.variants) + build.clean_stale_staging(ws.exports):
        logger.info("removed %s, left by an interrupted run", stale.name)
    versions = tool_versions()

    source_sha = fingerprint_source(str(source_dir), str(ws.hash_memo))
    tracking_uri = default_tracking_uri(ws.work_dir)
    with phases("tracking"):
        parent_run_id = start_sweep_run(
            tracking_uri, str(ws.mlartifacts), f"slmops-{spec.model.name}", sweep_id,
            tags={"slmops.model": spec.model.name, "slmops.source_sha256": source_sha,
                  **{f"version.{k}": v for k, v in versions.items()}},
            params={"model.path": str(source_dir), "model.name": spec.model.name,
                    "variants": [v.name for v in spec.variants]},
            spec=spec.model_dump(mode="json"),
        )

    variants = [v.resolved() for v in spec.variants]
    keys = {v["name"]: build.content_key("variant", source_sha, {**v, "name": None}, versions) for v in variants}
    dests = {v["name"]: ws.variants / v["name"] for v in variants}

    fp32_dir, fp32_error = None, None
    export_key = build.content_key("fp32-export", source_sha, versions)
    evaluating = spec.evaluation.enabled and dataset is not None and spec.foundry.enabled
    if evaluating or any(_needs_fp32(v) and not build.is_complete(dests[v["name"]], keys[v["name"]])
                         for v in variants):
        logger.info("exporting %s to fp32 ONNX (shared by the derived variants)", spec.model.name)
        export_dest = ws.exports / export_key[:16]
        with phases("convert"):
            state = export_fp32.with_options(refresh_cache=not build.is_complete(export_dest, export_key))(
                str(source_dir), str(export_dest), export_key, spec.model.trust_remote_code, str(ws.logs),
                return_state=True)
        outcome = _outcome(state)
        if isinstance(outcome, VariantError):
            fp32_error = str(outcome)
        else:
            fp32_dir = export_dest

    job = VariantJob(spec=spec, work_dir=str(ws.work_dir), out_dir=str(ws.out_dir), sweep_id=sweep_id,
                     source_dir=str(source_dir), source_sha=source_sha, tool_versions=versions,
                     tracking_uri=tracking_uri, parent_run_id=parent_run_id,
                     fp32_dir=str(fp32_dir) if fp32_dir else None, fp32_error=fp32_error,
                     foundry_cache=str(foundry_cache), smoke_prompt=smoke_prompt, total=len(variants),
                     dataset=str(dataset) if dataset else None, baseline_dir=str(fp32_dir) if fp32_dir else None,
                     baseline_key=export_key)
    variants_with_keys = [(variant, keys[variant["name"]]) for variant in variants]
    if spec.execution.variants_on == "workers":
        from flows.scaleout import run_variants_on_workers  # it imports this module: not at the top

        results = run_variants_on_workers(job, variants_with_keys, spec.execution.deployment)
        if any(r.get("mlflow_error") for r in results):
            job = job.model_copy(update={"mlflow_down": True})
    else:
        results = []
        for i, (variant, key) in enumerate(variants_with_keys, 1):
            results.append(variant_pipeline(job, variant, key, i))
            if results[-1].get("mlflow_error") and not job.mlflow_down:
                job = job.model_copy(update={"mlflow_down": True})  # retry it once, not once per variant

    for entry in results:
        phases.add(entry.get("timings") or {})
    ok = [r for r in results if r["status"] != "failed"]
    decision = None
    if job.mlflow_down:
        doc = report.sweep_report(sweep_id, source_dir, source_sha, versions, tracking_uri, parent_run_id, spec,
                                  results, round(time.perf_counter() - started, 3))
        doc["mlflow"]["synced"] = False
        report.write_report(ws.report, doc)
        raise TrackingLostError(
            f"MLflow at {tracking_uri} was lost during the sweep; {len(ok)} variant(s) are complete in "
            f"{ws.variants}; when it is back, run `slmops sync --out {ws.out_dir}` to log them")
    if spec.promotion.enabled and ok:
        registered_model = spec.promotion.registered_model or spec.model.name
        with phases("tracking"):
            model_versions = register_model_versions(tracking_uri, registered_model, sweep_id, results,
                                                     spec.promotion.artifacts, str(ws.work_dir))
            for entry in results:
                entry["model_version"] = model_versions.get(entry["name"])
            decision = decide_promotion(tracking_uri, sweep_id, registered_model,
                                        spec.promotion.model_dump(mode="json"), lock_dir=str(ws.work_dir))
        logger.info("decision: %s", decision["reason"])

    doc = report.sweep_report(sweep_id, source_dir, source_sha, versions, tracking_uri, parent_run_id, spec,
                              results, round(time.perf_counter() - started, 3))
    if decision:
        doc["decision"] = decision
    with phases("report"):
        present_sweep(doc, str(ws.out_dir), tracking_uri)
    # the sweep's time by phase; finishing the MLflow run below is left out (it is orchestration either way)
    doc["timings"] = {**phases.as_dict(), "sweep": round(time.perf_counter() - started, 3)}
    report.write_report(ws.report, doc)
    finish_sweep_run(tracking_uri, parent_run_id, {"variants_ok": len(ok), "variants_failed": len(results) - len(ok),
                                                   "seconds": doc["seconds"]}, doc, failed=not ok)
    return doc


def _evaluate(entry: dict, job: VariantJob, ws: Workspace, step: str, logger) -> None:
    """Measure the variant (or reuse its measurements); a failed measurement marks the variant failed."""
    settings = job.spec.evaluation.model_dump(mode="json")
    dataset_sha = hashlib.sha256(Path(job.dataset).read_bytes()).hexdigest()
    key = build.content_key("evaluation", entry["content_key"], job.baseline_key, settings, dataset_sha,
                            job.tool_versions)
    out = ws.out_dir / "evaluations" / entry["name"]
    reusable = job.spec.evaluation.reuse and (out / "evaluation.json").is_file()
    logger.info("%s: evaluating in fresh processes", step)
    state = evaluate_variant.with_options(refresh_cache=not reusable)(
        entry["name"], key, entry["onnx_dir"], job.baseline_dir, entry["foundry_model_id"], job.foundry_cache,
        settings, job.dataset, str(out), return_state=True)
    outcome = _outcome(state)
    if isinstance(outcome, VariantError):
        entry.update(status="failed", error=f"variant {entry['name']}: evaluation failed: {outcome}")
        return
    entry["metrics"].update(outcome["metrics"])
    entry["evaluation"] = {"dir": str(out), "reused": state.name == "Cached", "items": len(outcome["items"])}
    entry["eval_items"] = outcome["items"]


def _hand_to_foundry(entry: dict, job: VariantJob, ws: Workspace, step: str, logger) -> None:
    """Register the variant with Foundry Local and smoke-test it; a failure marks the variant failed.

    A passed smoke test is reused while the variant's content, its Foundry Local id, the prompt, the limits and the
    tool versions are unchanged: loading the model again says nothing new (and takes seconds for a 0.5B model)."""
    spec, cache, prompt = job.spec, Path(job.foundry_cache), job.smoke_prompt
    variant = entry["config"]
    foundry_name = f"{spec.model.name}-{variant['name']}"
    metadata = {"display_name": f"{spec.model.name} {variant['name']}", "precision": variant["precision"],
                "quantization": {k: v for k, v in variant.items() if k not in ("name", "precision")},
                "source_model": spec.model.name}
    try:
        model_id = register_with_foundry(entry["onnx_dir"], foundry_name, entry["content_key"], metadata,
                                         str(cache), spec.foundry.model_config_overrides.model_dump())
    except SlmopsError as err:
        entry.update(status="failed", error=f"variant {variant['name']}: Foundry Local registration failed: {err}")
        return
    entry["foundry_model_id"] = model_id
    key = build.content_key("smoke-test", entry["content_key"], model_id, prompt, spec.foundry.smoke_max_tokens,
                            job.tool_versions)
    record = ws.out_dir / "smoke-tests" / f"{variant['name']}.json"
    previous = read_json(record)
    if previous and previous.get("key") == key and previous["result"]["passed"]:
        logger.info("%s: registered as %s; smoke test passed before with this content (reused)", step, model_id)
        result = {**previous["result"], "reused": True}
    else:
        logger.info("%s: registered as %s; smoke test", step, model_id)
        result = smoke_test(model_id, prompt, str(cache), spec.foundry.smoke_max_tokens, spec.foundry.smoke_timeout_s)
        report.write_report(record, {"key": key, "result": result})
    entry["smoke_test"] = {"passed": result["passed"], "answer": result["answer"], "seconds": result["seconds"],
                           "prompt": prompt, "error": result["error"], "reused": result.get("reused", False)}
    if not result["passed"]:
        entry.update(status="failed",
                     error=f"variant {variant['name']}: smoke test in Foundry Local failed: {result['error']}")
