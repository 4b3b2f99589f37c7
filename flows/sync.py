"""Log a sweep that lost its tracking server to MLflow afterwards, from its report.json alone.

    slmops sync --out out/demo

Idempotent: runs are found by their sweep and variant tags and model versions by content, so syncing twice (or
syncing a sweep that was partly logged) creates nothing twice.
"""

from __future__ import annotations

from pathlib import Path

from slmops import report
from slmops.adapters.tracking import Tracker, default_tracking_uri
from slmops.config import parse_spec
from slmops.errors import InputError
from slmops.workspace import Workspace
from tasks.promote import decide_promotion, register_model_versions
from tasks.track import finish_sweep_run, log_variant_run, start_sweep_run


def sync_report(out_dir: Path, work_dir: Path) -> dict:
    """Fill MLflow with what report.json in out_dir records; return the updated report."""
    ws = Workspace(work_dir, out_dir)
    if not ws.report.is_file():
        raise InputError(f"{ws.report}: no report to sync; run the sweep first")
    doc = report.read_report(ws.report)
    spec = parse_spec(doc["spec"], f"{ws.report} (spec)")
    tracking_uri = default_tracking_uri(work_dir)
    Tracker(tracking_uri).check_reachable()
    versions, sweep_id, sha = doc["tool_versions"], doc["sweep_id"], doc["source_model"]["sha256"]
    parent = start_sweep_run.fn(
        tracking_uri, str(ws.mlartifacts), f"slmops-{spec.model.name}", sweep_id,
        tags={"slmops.model": spec.model.name, "slmops.source_sha256": sha,
              **{f"version.{k}": v for k, v in versions.items()}},
        params={"model.path": doc["source_model"]["path"], "model.name": spec.model.name,
                "variants": [v.name for v in spec.variants]},
        spec=doc["spec"])
    for entry in doc["variants"]:
        entry.setdefault("olive_config", None)
        entry["mlflow_run_id"] = log_variant_run.fn(tracking_uri, parent, sweep_id, entry["name"],
                                                    **report.mlflow_payload(entry, sha, versions),
                                                    failed=entry["status"] == "failed")
        entry.pop("mlflow_error", None)
        entry.pop("olive_config")
    ok = [v for v in doc["variants"] if v["status"] != "failed"]
    if spec.promotion.enabled and ok:
        name = spec.promotion.registered_model or spec.model.name
        model_versions = register_model_versions.fn(tracking_uri, name, sweep_id, doc["variants"],
                                                    spec.promotion.artifacts, str(work_dir))
        for entry in doc["variants"]:
            entry["model_version"] = model_versions.get(entry["name"])
        doc["decision"] = decide_promotion.fn(tracking_uri, sweep_id, name, spec.promotion.model_dump(mode="json"),
                                              lock_dir=str(work_dir))
    doc["mlflow"] = {"tracking_uri": tracking_uri, "parent_run_id": parent, "synced": True}
    finish_sweep_run.fn(tracking_uri, parent, {"variants_ok": len(ok), "variants_failed": len(doc["variants"]) -
                                               len(ok)}, doc, failed=not ok)
    report.write_report(ws.report, doc)
    ws.marker.unlink(missing_ok=True)
    return doc
