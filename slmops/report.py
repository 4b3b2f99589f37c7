"""report.json: what a sweep produced, with what produced it; and the table the CLI prints."""

from __future__ import annotations

from typing import Any

from slmops.calibration import Calibration
from slmops.config import SweepSpec
from slmops.lora import merge_record
from slmops.metrics import HEADLINE, PREFECT_TABLE, TIMED, fmt, fmt_measured
from slmops.promote import Decision, decision_markdown as _decision_markdown
from slmops.source import describe_weights
from slmops.variant import VariantResult


def human_size(n: int | None) -> str:
    if not n:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def sweep_report(sweep_id: str, spec: SweepSpec, source_sha: str, versions: dict[str, str], tracking_uri: str,
                 parent_run_id: str | None, results: list[VariantResult], seconds: float,
                 decision: dict[str, Any] | None = None, roofline: dict[str, Any] | None = None,
                 calibration: Calibration | None = None) -> dict[str, Any]:
    """report.json: what a sweep produced, with what produced it; roofline: this machine's roofs (slmops.roofline),
    with how they were measured; calibration: the rows the gptq variants calibrated on, and the eval set measured."""
    doc: dict[str, Any] = {
        "sweep_id": sweep_id,
        "source_model": {"path": str(spec.model.path), "sha256": source_sha, "name": spec.model.name,
                         "weights": describe_weights(spec.model.path),
                         "merged_from": merge_record(spec.model.path)},
        "tool_versions": versions,
        "mlflow": {"tracking_uri": tracking_uri, "parent_run_id": parent_run_id},
        "spec": spec.model_dump(mode="json"),
        "seconds": seconds,
        "variants": [r.report_entry() for r in results],
    }
    if decision:
        doc["decision"] = decision
    if roofline:
        doc["roofline"] = roofline
    if calibration:
        doc["calibration"] = {**calibration.model_dump(mode="json"), "note": calibration.describe()}
    return doc


def _weights_note(weights: dict | None) -> str:
    """The source's weights in a few words; for a 16-bit source, what fidelity is measured against."""
    if not weights:
        return ""
    files = "one file" if weights["files"] == 1 else f"{weights['files']} shards"
    note = f"; {weights['dtype']} weights, {human_size(weights['bytes'])} in {files}"
    if weights["dtype"] in ("bfloat16", "float16"):
        note += (f". Fidelity is measured against the fp32 export of this {weights['dtype']} source (the builder "
                 "widens its weights to fp32 exactly)")
    return note + "."


def _merge_note(merged: dict | None) -> list[str]:
    """For a LoRA adapter: what was merged into what (both content hashes, the adapter's rank, alpha, modules)."""
    if not merged:
        return []
    cfg = merged["adapter_config"]
    return ["", f"Merged from the LoRA adapter `{merged['adapter']}` (sha256 `{merged['adapter_sha256'][:16]}…`; "
            f"rank {cfg['r']}, alpha {cfg['lora_alpha']}, modules {', '.join(cfg['target_modules'])}) and its base "
            f"`{merged['base']}` (sha256 `{merged['base_sha256'][:16]}…`)."]


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
    shown = [c for c in HEADLINE if any(c in v["metrics"] or (c == "size_bytes" and v["size_bytes"])
                                    for v in doc["variants"])]
    lines = [f"# Sweep {doc['sweep_id']}", "",
             f"Source model: `{doc['source_model']['path']}` (sha256 `{doc['source_model']['sha256'][:16]}…`)"
             + _weights_note(doc["source_model"].get("weights")), *_merge_note(doc["source_model"].get("merged_from")),
             "",
             "| variant | status | Foundry Local id | " + " | ".join(shown) + " |",
             "|---|---|---|" + "---|" * len(shown)]
    for v in doc["variants"]:
        values = [fmt(c, v["size_bytes"]) if c == "size_bytes" else fmt_measured(c, v["metrics"]) for c in shown]
        lines.append(f"| {v['name']} | {v['status']} | {v.get('foundry_model_id') or '-'} | " + " | ".join(values)
                     + " |")
    if any(c in TIMED for c in shown):
        lines += ["", "Timed figures are medians over repetitions, with the 95 % interval of the median in brackets. "
                  "A decode speed the timer could not resolve (tokens faster than the stream delivers them) is "
                  "marked so, and left out of the speed plot."]
    decision = doc.get("decision")
    if decision:
        # the decision's own record: what happened, why, the objective's terms with their margins, the numbers
        body = decision_markdown(decision).split("\n", 1)[1].strip()
        lines += ["", "## Decision", "", f"**{'Promoted' if decision['promoted'] else 'Not promoted'}.**", "", body]
    lines += _calibration_section(doc)
    lines += _roofline_section(doc)
    for title, path in plots.items():
        lines += ["", f"## {title}", "", f"![{title}]({path})"]
    failed = [v for v in doc["variants"] if v["status"] == "failed"]
    if failed:
        lines += ["", "## Failed variants", ""] + [f"- {v['name']}: {v['error']}" for v in failed]
    return "\n".join(lines) + "\n"


def _calibration_section(doc: dict) -> list[str]:
    """report.md's calibration: which rows the gptq variants saw, what was measured, and each int4 build's time."""
    calibration = doc.get("calibration")
    if not calibration:
        return []
    lines = ["", "## Calibration", "", calibration["note"] + ".", "",
             "| variant | method | block size | build time |", "|---|---|---|---|"]
    for v in doc["variants"]:
        if v["config"].get("precision") == "int4":
            lines.append(f"| {v['name']} | {v['config'].get('method')} | {v['config'].get('block_size')} | "
                         f"{fmt('build_seconds', v['metrics'].get('build_seconds'))} |")
    return lines


def _roofline_section(doc: dict) -> list[str]:
    """report.md's roofline: per variant the bytes a decode step reads and how close decode comes to the roofs."""
    rows = [v for v in doc["variants"] if "bytes_per_token" in v["metrics"]]
    roofs = doc.get("roofline")
    if not rows:
        return []
    lines = ["", "## Roofline", "",
             "| variant | bytes per token | decode tok/s | achieved | of the memory roof | of its kernel roof |",
             "|---|---|---|---|---|---|"]
    for v in rows:
        m = v["metrics"]
        cells = [fmt("bytes_per_token", m["bytes_per_token"]), fmt_measured("decode_tokens_per_s", m),
                 *(fmt(name, m.get(name)) for name in ("achieved_gb_per_s", "bandwidth_share", "kernel_share"))]
        lines.append(f"| {v['name']} | " + " | ".join(cells) + " |")
    if roofs:
        machine = roofs["machine"]
        lines += ["", f"Roofs of this machine ({machine['cpu']}, {machine['cores']} cores, onnxruntime "
                  f"{machine['onnxruntime']}), measured once and cached: memory {roofs['memory']['gb_per_s']:.1f} GB/s "
                  f"({roofs['memory']['how']})" + "".join(
                      f"; {key} {k['gb_per_s']:.1f} GB/s" for key, k in roofs.get("kernels", {}).items() if k) + "."]
    lines += ["", "Achieved = bytes per token x decode tok/s. A kernel roof is one large single-row MatMul of the "
              "variant's format on the threads it is served with (the key's `-Nt`); a share well under 1 is time the "
              "step spends beyond that pace: the rest of the graph, the runtime's loop, and the weights' kernels "
              "running slower over the graph's many smaller matrices (benchmarks/decode_profile.py splits them). A "
              "decode speed the timer could not resolve gets no share."]
    return lines


def prefect_table(doc: dict[str, Any]) -> list[dict[str, str]]:
    """The variants table of the Prefect UI."""
    return [{"variant": v["name"], "status": v["status"], "size": human_size(v["size_bytes"]),
             "foundry id": v.get("foundry_model_id") or "-",
             **{m: fmt_measured(m, v["metrics"]) for m in PREFECT_TABLE}, "error": (v["error"] or "")[:200]}
            for v in doc["variants"]]


def decision_markdown(decision: dict[str, Any]) -> str:
    """A decision as report.json holds it, for people (decision.md, the Prefect UI)."""
    fields = {k: decision[k] for k in Decision.__dataclass_fields__ if k in decision}  # older reports lack some
    return _decision_markdown(Decision(**fields), decision["registered_model"])
