"""Log a sweep that lost its tracking server to MLflow afterwards, from its report.json alone.

    slmops sync --out out/demo

Idempotent: runs are found by their sweep and variant tags and model versions by content, so syncing twice (or
syncing a sweep that was partly logged) creates nothing twice. The same tasks as the sweep's own tracking tail.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.quantization_sweep import promote_sweep
from slmops.adapters.tracking import check_reachable, default_tracking_uri
from slmops.config import parse_spec
from slmops.errors import InputError
from slmops.files import read_json, write_json
from slmops.variant import VariantResult
from slmops.workspace import Workspace
from tasks.track import finish_sweep, track_sweep, track_variant


@flow(name="sync-sweep")
def sync_sweep(out_dir: str, work_dir: str | None = None) -> dict[str, Any]:
    """Fill MLflow with what report.json in out_dir records; return the updated report."""
    ws = Workspace.of(out_dir, work_dir)
    doc = read_json(ws.report)
    if not doc:
        raise InputError(f"{ws.report}: no report to sync; run the sweep first")
    spec = parse_spec(doc["spec"], f"{ws.report} (spec)")
    tracking_uri = default_tracking_uri(ws.work_dir)
    check_reachable(tracking_uri)
    versions, sweep_id, sha = doc["tool_versions"], doc["sweep_id"], doc["source_model"]["sha256"]
    parent = track_sweep(tracking_uri, str(ws.mlartifacts), spec, sweep_id, doc["source_model"]["path"], sha,
                         versions)
    results = []
    for entry in doc["variants"]:
        result = VariantResult.from_report_entry(entry).model_copy(update={"mlflow_error": None})
        run_id = track_variant(tracking_uri, None, parent, sweep_id, result, sha, versions)
        results.append(result.model_copy(update={"mlflow_run_id": run_id}))
    results, decision = promote_sweep(spec, tracking_uri, sweep_id, ws.work_dir, results)
    doc = {**doc, "variants": [r.report_entry() for r in results],
           "mlflow": {"tracking_uri": tracking_uri, "parent_run_id": parent, "synced": True}}
    if decision:
        doc["decision"] = decision
    finish_sweep(tracking_uri, parent, doc)
    write_json(ws.report, doc)
    ws.marker.unlink(missing_ok=True)
    return doc
