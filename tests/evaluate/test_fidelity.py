"""Fidelity to the baseline by teacher-forcing: exact against itself, and ordered by precision on the demo model.

    .venv/bin/python -m pytest tests/evaluate/test_fidelity.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmops.errors import VariantError
from slmops.evaluate.fidelity import fidelity
from slmops.evalset import load_eval_set


@pytest.fixture(scope="module")
def demo_fidelity(demo_variants: dict[str, Path], demo_eval_set: Path) -> dict[str, dict[str, float]]:
    """Fidelity of each demo variant to the fp32 variant on 100 eval items (the default max_eval_items)."""
    items = load_eval_set(demo_eval_set, 100)
    return {name: fidelity(folder, demo_variants["fp32"], items)[0] for name, folder in demo_variants.items()}


@pytest.mark.parametrize("name", ["int4-b32", "fp32"])
def test_fidelity_is_exact_when_a_variant_is_compared_with_itself(demo_variants, demo_eval_set, name):
    metrics, per_item = fidelity(demo_variants[name], demo_variants[name], load_eval_set(demo_eval_set, 24))
    assert metrics["kl_div_mean"] == 0.0
    assert metrics["kl_div_p99"] == 0.0
    assert metrics["top1_agreement"] == 1.0
    assert metrics["ppl_ratio"] == 1.0
    assert len(per_item) == 24 and all(row["kl_div_mean"] == 0.0 for row in per_item)


def test_fidelity_is_worse_for_int4_than_int8_than_fp32_on_the_demo_model(demo_fidelity):
    fp32, int8 = demo_fidelity["fp32"], demo_fidelity["int8"]
    assert fp32["kl_div_mean"] == 0.0 and fp32["top1_agreement"] == 1.0
    assert 0.0 < int8["kl_div_mean"] and int8["top1_agreement"] < 1.0
    for name in ("int4-b32", "int4-b128"):
        int4 = demo_fidelity[name]
        assert int4["kl_div_mean"] > int8["kl_div_mean"], (name, int4, int8)
        assert int4["kl_div_p99"] > int8["kl_div_p99"], (name, int4, int8)
        assert int4["top1_agreement"] < int8["top1_agreement"], (name, int4, int8)


def test_fidelity_perplexity_is_of_the_memorised_references(demo_fidelity):
    # the demo model recites its answers: perplexity near 1 for every variant, the ratio to fp32 near 1 too
    for metrics in demo_fidelity.values():
        assert 1.0 <= metrics["perplexity"] < 1.1
        assert metrics["ppl_ratio"] == pytest.approx(1.0, abs=0.01)


def test_fidelity_rejects_a_graph_without_logits_output(demo_variants, demo_eval_set, tmp_path):
    broken = tmp_path / "renamed-output"
    broken.mkdir()
    import onnx

    model = onnx.load(str(demo_variants["int8"] / "model.onnx"))
    model.graph.output[0].name = "logits_Q8"  # what OnnxBlockWiseRtnQuantization does to a quantized LM head
    for node in model.graph.node:
        node.output[:] = ["logits_Q8" if out == "logits" else out for out in node.output]
    onnx.save(model, str(broken / "model.onnx"))
    (broken / "genai_config.json").write_text(json.dumps(json.loads(
        (demo_variants["int8"] / "genai_config.json").read_text())))
    with pytest.raises(VariantError, match="no 'logits' output"):
        fidelity(broken, demo_variants["fp32"], load_eval_set(demo_eval_set, 2))
