"""A long sweep: twenty variants of the demo model, and the orchestrating process's memory from variant to variant.

Measured (docs/reliability.md): every ModelBuilder run leaves its graph, holding the model's weights, in reference
cycles that Python's collector did not reach in twenty variants; the orchestrator grew 128-160 MB over variants 6-20
(about 10 MB a builder variant). With build.release_olive_garbage after each Olive run it grows 6-9 MB over them.
"""

from __future__ import annotations

from flows.quantization_sweep import quantization_sweep
from slmops.config import parse_spec

# over variants 6-20 (the first five import and warm up Olive's passes). Measured with the fix: 6-9 MB (noise of
# the allocator around a ~860 MB process); without it: 128-160 MB. 40 MB catches a leak of about 3 MB a variant.
GROWTH_BOUND_MB = 40


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
    print(f"orchestrator RSS (MB) after each variant: {rss}; growth over variants 6-20: {growth:.1f} MB")
    assert growth < GROWTH_BOUND_MB, f"orchestrator RSS grew {growth:.0f} MB over variants 6-20 (bound " \
                                     f"{GROWTH_BOUND_MB}): {rss}"
