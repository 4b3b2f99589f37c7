"""What a variant's MLflow run holds, from its result alone (the sweep and sync tests log them for real)."""

from __future__ import annotations

import math

from slmops.config import VariantSpec
from slmops.track import variant_payload
from slmops.variant import SmokeTest, VariantResult

VERSIONS = {"olive-ai": "0.13.0", "python": "3.11.7"}


def result(**update) -> VariantResult:
    variant = VariantSpec(name="int8", precision="int8").resolved()
    return VariantResult.planned(variant, "/out/variants/int8").model_copy(update=update)


def test_a_succeeded_variants_run_holds_knobs_metrics_tags_and_artifacts():
    payload = variant_payload(result(
        status="succeeded", size_bytes=500, content_key="ck", foundry_model_id="m-int8:2",
        metrics={"exact_match": 1.0, "decode_tokens_per_s": math.nan},
        smoke_test=SmokeTest(passed=True, answer="The lamp is red.", seconds=0.25, prompt="p"),
        olive_config={"passes": {"quantize": {}}}, eval_items=[{"index": 0, "answer": "a"}]), "sha", VERSIONS)
    assert payload.params == {"name": "int8", "precision": "int8", "method": "rtn", "block_size": 128,
                              "symmetric": True, "accuracy_level": 4, "nodes_to_exclude": []}
    # NaN is left out, not logged as a value; the size and the smoke test become metrics
    assert payload.metrics == {"exact_match": 1.0, "size_bytes": 500.0, "smoke_test_passed": 1.0,
                               "smoke_test_seconds": 0.25}
    assert payload.tags == {"slmops.status": "succeeded", "slmops.source_sha256": "sha",
                            "slmops.onnx_dir": "/out/variants/int8", "version.olive-ai": "0.13.0",
                            "version.python": "3.11.7", "slmops.content_key": "ck", "foundry_model_id": "m-int8:2",
                            "smoke_test.answer": "The lamp is red."}
    assert set(payload.artifacts) == {"variant_config.json", "smoke_test.json", "olive_config.json"}
    assert payload.tables == {"eval_items.json": [{"index": 0, "answer": "a"}]}


def test_a_failed_variants_run_holds_its_error_and_no_size():
    payload = variant_payload(result(error="variant int8: Olive produced no model.onnx"), "sha", VERSIONS)
    assert payload.tags["slmops.status"] == "failed"
    assert payload.tags["slmops.error"] == "variant int8: Olive produced no model.onnx"
    assert payload.metrics == {} and "slmops.content_key" not in payload.tags
    assert set(payload.artifacts) == {"variant_config.json"} and payload.tables == {}
