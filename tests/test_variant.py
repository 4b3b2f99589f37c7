"""The typed journey: what a resolved variant needs, and a result's round trip through report.json (what
`slmops sync` reads back)."""

from __future__ import annotations

from slmops.config import VariantSpec
from slmops.variant import SmokeTest, VariantResult


def test_each_variant_knows_its_route_and_whether_it_needs_the_export():
    routes = {spec["name"]: (v.route, v.needs_fp32_export) for spec in (
        {"name": "fp32", "precision": "fp32"}, {"name": "int8", "precision": "int8"},
        {"name": "int4", "precision": "int4"}, {"name": "int4-rtn", "precision": "int4", "method": "rtn"},
        {"name": "int8-dyn", "precision": "int8", "method": "dynamic"},
        {"name": "int4-kq", "precision": "int4", "algorithm": "k_quant"},
        {"name": "int4-emb", "precision": "int4", "quantize_embeddings": True},
        {"name": "int4-ex", "precision": "int4", "nodes_to_exclude": ["/lm_head/MatMul"]})
        for v in [VariantSpec(**spec).resolved()]}
    # ModelBuilder int4 with the default algorithm is the graph block-wise RTN makes from the export; the builder's
    # own options stay on the builder
    assert routes == {"fp32": ("export", True), "int8": ("onnx", True), "int4": ("onnx", True),
                      "int4-rtn": ("onnx", True), "int8-dyn": ("onnx", True), "int4-kq": ("builder", False),
                      "int4-emb": ("builder", False), "int4-ex": ("builder", False)}


def test_a_result_comes_back_from_its_report_entry_whole_but_for_what_the_report_leaves_out():
    variant = VariantSpec(name="int4", precision="int4", block_size=64).resolved()
    result = VariantResult.planned(variant, "/out/variants/int4").with_metrics(
        {"decode_tokens_per_s": 51.5, "kl_div_mean": 0.002}, status="succeeded", size_bytes=1234, content_key="k",
        foundry_model_id="m-int4:1", smoke_test=SmokeTest(passed=True, answer="red", seconds=0.1, prompt="p"),
        olive_config={"passes": {}}, eval_items=[{"index": 0}], mlflow_run_id="r", timings={"convert": 1.5})
    entry = result.report_entry()
    assert "olive_config" not in entry and "eval_items" not in entry
    assert entry["config"] == {"name": "int4", "precision": "int4", "method": "builder", "block_size": 64,
                               "symmetric": True, "accuracy_level": 4, "algorithm": "default",
                               "quantize_embeddings": False, "nodes_to_exclude": []}
    back = VariantResult.from_report_entry(entry)
    assert back == result.model_copy(update={"olive_config": None, "eval_items": []})
    assert back.config == variant


def test_a_failed_step_keeps_what_came_before():
    result = VariantResult.planned(VariantSpec(name="fp32", precision="fp32").resolved(), "/v")
    done = result.with_metrics({"build_seconds": 2.0}, status="succeeded", size_bytes=10)
    failed = done.failed("variant fp32: smoke test in Foundry Local failed: timed out")
    assert (failed.ok, failed.status, failed.size_bytes, failed.metrics) == (False, "failed", 10,
                                                                             {"build_seconds": 2.0})
    assert done.ok and done.error is None
