"""report.json: what a sweep produced, with what produced it; and the table the CLI prints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def human_size(n: int | None) -> str:
    if not n:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def variant_entry(variant: dict, dest: Path) -> dict[str, Any]:
    return {"name": variant["name"], "status": "failed", "error": None, "config": variant, "onnx_dir": str(dest),
            "size_bytes": None, "mlflow_run_id": None, "content_key": None, "foundry_model_id": None,
            "smoke_test": None, "metrics": {}}


def mlflow_payload(entry: dict, source_sha: str, versions: dict) -> dict:
    """Params, metrics, tags and artifacts of a variant's MLflow run."""
    metrics = {k: v for k, v in entry["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if entry["size_bytes"]:
        metrics["size_bytes"] = entry["size_bytes"]
    tags = {"slmops.status": entry["status"], "slmops.source_sha256": source_sha,
            "slmops.onnx_dir": entry["onnx_dir"], **{f"version.{k}": v for k, v in versions.items()}}
    if entry["content_key"]:
        tags["slmops.content_key"] = entry["content_key"]
    if entry["error"]:
        tags["slmops.error"] = entry["error"][:5000]
    if entry.get("foundry_model_id"):
        tags["foundry_model_id"] = entry["foundry_model_id"]
    artifacts = {"variant_config.json": entry["config"]}
    tables = {}
    if entry.get("eval_items"):
        tables["eval_items.json"] = entry["eval_items"]
    smoke = entry.get("smoke_test")
    if smoke:
        metrics["smoke_test_passed"] = float(smoke["passed"])
        metrics["smoke_test_seconds"] = smoke["seconds"]
        tags["smoke_test.answer"] = smoke["answer"][:500]
        artifacts["smoke_test.json"] = smoke
    if entry.get("olive_config"):
        artifacts["olive_config.json"] = entry["olive_config"]
    return {"params": entry["config"], "metrics": metrics, "tags": tags, "artifacts": artifacts, "tables": tables}


def sweep_report(sweep_id: str, source_dir: Path, source_sha: str, versions: dict, tracking_uri: str,
                 parent_run_id: str, spec, variants: list[dict], seconds: float) -> dict:
    return {
        "sweep_id": sweep_id,
        "source_model": {"path": str(source_dir), "sha256": source_sha, "name": spec.model.name},
        "tool_versions": versions,
        "mlflow": {"tracking_uri": tracking_uri, "parent_run_id": parent_run_id},
        "spec": spec.model_dump(mode="json"),
        "seconds": seconds,
        "variants": [{k: v for k, v in entry.items() if k not in ("olive_config", "eval_items")}
                     for entry in variants],
    }


def read_report(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def write_report(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def table(doc: dict) -> str:
    """The variants as a plain-text table."""
    rows = [("variant", "precision", "method", "status", "size", "foundry id", "smoke answer / error")]
    for v in doc["variants"]:
        cfg = v["config"]
        smoke = v.get("smoke_test") or {}
        note = v["error"] or repr(smoke.get("answer", ""))[:60] if smoke or v["error"] else ""
        rows.append((v["name"], cfg["precision"], cfg["method"], v["status"], human_size(v["size_bytes"]),
                     v.get("foundry_model_id") or "-", (note or "")[:100]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report_markdown(doc: dict, plots: dict[str, str]) -> str:
    """DIR/report.md: the variants table, the decision and the Pareto plots."""
    from slmops.metrics import fmt

    cols = ["size_bytes", "exact_match", "kl_div_mean", "top1_agreement", "decode_tokens_per_s", "ttft_ms_p50",
            "peak_rss_mb"]
    shown = [c for c in cols if any(c in v["metrics"] or (c == "size_bytes" and v["size_bytes"])
                                    for v in doc["variants"])]
    lines = [f"# Sweep {doc['sweep_id']}", "",
             f"Source model: `{doc['source_model']['path']}` (sha256 `{doc['source_model']['sha256'][:16]}…`)", "",
             "| variant | status | Foundry Local id | " + " | ".join(shown) + " |",
             "|---|---|---|" + "---|" * len(shown)]
    for v in doc["variants"]:
        values = [fmt(c, v["size_bytes"] if c == "size_bytes" else v["metrics"].get(c)) for c in shown]
        lines.append(f"| {v['name']} | {v['status']} | {v.get('foundry_model_id') or '-'} | " + " | ".join(values)
                     + " |")
    decision = doc.get("decision")
    if decision:
        lines += ["", "## Decision", "", f"**{'Promoted' if decision['promoted'] else 'Not promoted'}.** "
                  f"{decision['reason']}", ""]
        if decision.get("champion"):
            c = decision["champion"]
            lines.append(f"Champion: **{c['name']}** (model version {c['model_version']}, Foundry Local id "
                         f"`{c['foundry_model_id']}`)")
    for title, path in plots.items():
        lines += ["", f"## {title}", "", f"![{title}]({path})"]
    failed = [v for v in doc["variants"] if v["status"] == "failed"]
    if failed:
        lines += ["", "## Failed variants", ""] + [f"- {v['name']}: {v['error']}" for v in failed]
    return "\n".join(lines) + "\n"
