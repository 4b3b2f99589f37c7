"""Track: what a sweep puts into MLflow. A parent run per sweep (the spec, the source's hash, the tool versions), a
child run per variant (its knobs as params, every metric, the Olive config and the per-item answers as artifacts),
found again by tags so that a retry or a later `slmops sync` never makes a second one.

    parent = start_sweep(tracker, spec, sweep_id, source_path, source_sha, versions)
    run_id = log_variant(tracker, parent, sweep_id, result, source_sha, versions)

The same functions serve the sweep (through tasks/track.py, retried while the store is unreachable) and
`slmops sync`, which logs a sweep afterwards from its report.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmops.adapters.tracking import NullTracker, Tracker
from slmops.config import SweepSpec
from slmops.lora import merge_record
from slmops.metrics import finite
from slmops.variant import VariantResult

AnyTracker = Tracker | NullTracker


def experiment_name(spec: SweepSpec) -> str:
    return f"slmops-{spec.model.name}"


@dataclass
class VariantPayload:
    """Everything a variant's MLflow run holds."""

    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def variant_payload(result: VariantResult, source_sha: str, versions: dict[str, str]) -> VariantPayload:
    """Params, metrics, tags and artifacts of a variant's MLflow run."""
    metrics = finite(result.metrics)
    if result.size_bytes:
        metrics["size_bytes"] = result.size_bytes
    tags = {"slmops.status": result.status, "slmops.source_sha256": source_sha, "slmops.onnx_dir": result.onnx_dir,
            **{f"version.{k}": v for k, v in versions.items()}}
    if result.content_key:
        tags["slmops.content_key"] = result.content_key
    if result.error:
        tags["slmops.error"] = result.error[:5000]
    if result.foundry_model_id:
        tags["foundry_model_id"] = result.foundry_model_id
    knobs = result.config.knobs()
    artifacts: dict[str, Any] = {"variant_config.json": knobs}
    if result.smoke_test:
        smoke = result.smoke_test.model_dump(mode="json")
        metrics["smoke_test_passed"] = float(result.smoke_test.passed)
        metrics["smoke_test_seconds"] = result.smoke_test.seconds
        tags["smoke_test.answer"] = result.smoke_test.answer[:500]
        artifacts["smoke_test.json"] = smoke
    if result.olive_config:
        artifacts["olive_config.json"] = result.olive_config
    tables = {"eval_items.json": result.eval_items} if result.eval_items else {}
    return VariantPayload(knobs, metrics, tags, artifacts, tables)


def start_sweep(tracker: AnyTracker, spec: SweepSpec, sweep_id: str, source_path: Path, source_sha: str,
                versions: dict[str, str]) -> str | None:
    """Find or create the sweep's parent run and log the resolved spec; its run id."""
    run_id = tracker.sweep_run(experiment_name(spec), sweep_id, {
        "slmops.model": spec.model.name, "slmops.source_sha256": source_sha,
        **{f"version.{k}": v for k, v in versions.items()}})
    params = {"model.path": str(source_path), "model.name": spec.model.name,
              "variants": [v.name for v in spec.variants]}
    merged = merge_record(source_path)
    if merged:  # a LoRA adapter merged into its base: both folders, both hashes, the adapter's config
        params |= {"model.base": merged["base"], "model.adapter": merged["adapter"],
                   **{f"adapter.{k}": v for k, v in merged["adapter_config"].items()}}
        tracker.log(run_id, tags={"slmops.base_sha256": merged["base_sha256"],
                                  "slmops.adapter_sha256": merged["adapter_sha256"]})
    tracker.log(run_id, params=params)
    tracker.log_dict(run_id, spec.model_dump(mode="json"), "sweep_spec.json")
    return run_id


def log_variant(tracker: AnyTracker, parent_run_id: str | None, sweep_id: str, result: VariantResult,
                source_sha: str, versions: dict[str, str]) -> str | None:
    """Find or create the variant's child run and log its config, metrics, tags and artifacts; its run id."""
    payload = variant_payload(result, source_sha, versions)
    run_id = tracker.variant_run(parent_run_id, sweep_id, result.name)
    tracker.log(run_id, params=payload.params, metrics=payload.metrics, tags=payload.tags)
    for name, data in payload.artifacts.items():
        tracker.log_dict(run_id, data, name)
    for name, rows in payload.tables.items():
        tracker.log_table(run_id, rows, name)
    tracker.finish(run_id, "FINISHED" if result.ok else "FAILED")
    return run_id


def finish_sweep(tracker: AnyTracker, parent_run_id: str | None, report: dict[str, Any]) -> None:
    """Log the sweep's totals and report, and close its parent run."""
    ok = sum(v["status"] != "failed" for v in report["variants"])
    metrics = {"variants_ok": ok, "variants_failed": len(report["variants"]) - ok}
    if "seconds" in report:
        metrics["seconds"] = report["seconds"]
    tracker.log(parent_run_id, metrics=metrics)
    tracker.log_dict(parent_run_id, report, "report.json")
    tracker.finish(parent_run_id, "FINISHED" if ok else "FAILED")
