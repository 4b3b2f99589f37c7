"""The Olive workflow each route gets, and the graph check a variant passes: fast, from the mapping alone (the
sweep tests build them for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slmops.config import VariantSpec
from slmops.errors import VariantError
from slmops.quantize import check_graph, olive_config

SRC, FP32, OUT, CACHE = Path("/src"), Path("/fp32"), Path("/out"), Path("/cache")


def config_of(**spec) -> dict:
    return olive_config(VariantSpec(name="v", **spec).resolved(), SRC, FP32, OUT, CACHE)


def test_builder_int4_passes_every_knob_and_the_embedding_as_a_list():
    config = config_of(precision="int4", block_size=64, symmetric=False, accuracy_level=2, algorithm="k_quant",
                       quantize_embeddings=True, nodes_to_exclude=["/model/layers.0/mlp/down_proj/MatMul"])
    assert config["input_model"] == {"type": "HfModel", "model_path": "/src", "task": "text-generation"}
    assert config["passes"] == {"builder": {"type": "ModelBuilder", "precision": "int4", "extra_options": {
        "int4_block_size": 64, "int4_is_symmetric": False, "int4_accuracy_level": 2, "int4_algo_config": "k_quant",
        "int4_op_types_to_quantize": ["MatMul", "Gather"],
        "int4_nodes_to_exclude": ["/model/layers.0/mlp/down_proj/MatMul"]}}}
    assert (config["output_dir"], config["cache_dir"]) == ("/out", "/cache")


def test_int8_is_rtn_on_the_export_with_the_lm_head_quantized_too():
    config = config_of(precision="int8")
    assert config["input_model"] == {"type": "ONNXModel", "model_path": "/fp32", "onnx_file_name": "model.onnx"}
    assert config["passes"] == {"quantize": {
        "type": "OnnxBlockWiseRtnQuantization", "bits": 8, "block_size": 128, "is_symmetric": True,
        "accuracy_level": 4, "nodes_to_exclude": [], "save_as_external_data": True}}


def test_builder_int4_with_the_default_algorithm_is_rtn_on_the_export_with_the_embedding_left_alone():
    config = config_of(precision="int4", block_size=128, symmetric=True, accuracy_level=2)
    assert config["input_model"] == {"type": "ONNXModel", "model_path": "/fp32", "onnx_file_name": "model.onnx"}
    assert config["passes"] == {"quantize": {
        "type": "OnnxBlockWiseRtnQuantization", "bits": 4, "block_size": 128, "is_symmetric": True,
        "accuracy_level": 2, "nodes_to_exclude": ["/model/embed_tokens/Gather"], "save_as_external_data": True}}
    # the spec and the report still say what the user asked for
    assert VariantSpec(name="v", precision="int4").resolved().method == "builder"


@pytest.mark.parametrize(("spec", "expected"), [
    ({"precision": "int8", "method": "dynamic"}, {"type": "OnnxDynamicQuantization", "weight_type": "QInt8"}),
    ({"precision": "int8", "method": "dynamic", "symmetric": False},
     {"type": "OnnxDynamicQuantization", "weight_type": "QUInt8"}),
    ({"precision": "int4", "method": "k_quant", "block_size": 32},
     {"type": "OnnxKQuantQuantization", "bits": 4, "block_size": 32}),
    ({"precision": "int4", "method": "hqq", "block_size": 64, "nodes_to_exclude": ["n"]},
     {"type": "OnnxHqqQuantization", "block_size": 64, "nodes_to_exclude": ["n"]}),
])
def test_each_onnx_level_route_gets_its_pass(spec, expected):
    assert config_of(**spec)["passes"] == {"quantize": expected}


def test_a_derived_variant_without_the_export_is_a_bug_not_a_variant_failure():
    with pytest.raises(ValueError, match="derived from the fp32 export, which was not given"):
        olive_config(VariantSpec(name="v", precision="int8").resolved(), SRC, None, OUT, CACHE)


def summary(ops=None, bits=(), outputs=("logits",)) -> dict:
    return {"op_counts": ops or {}, "matmul_nbits_bits": list(bits), "outputs": list(outputs)}


def test_the_graph_check_names_every_problem_it_finds():
    variant = VariantSpec(name="v", precision="int4", quantize_embeddings=True).resolved()
    with pytest.raises(VariantError) as err:
        check_graph(variant, summary({"MatMulNBits": 3}, bits=[8], outputs=["logits_Q4"]), 100, 90)
    assert str(err.value) == (
        "variant v: graph output 'logits' is missing (outputs: logits_Q4); MatMulNBits has bits [8], expected 4; "
        "quantize_embeddings is set but the embedding has no GatherBlockQuantized node; size 100 bytes is not "
        "below the fp32 build's 90")


def test_the_graph_check_catches_an_int4_label_on_an_unquantized_graph():
    with pytest.raises(VariantError, match="no MatMulNBits node: nothing was quantized to int4"):
        check_graph(VariantSpec(name="v", precision="int4").resolved(), summary(), 50, 90)
    with pytest.raises(VariantError, match="no MatMulInteger node: dynamic int8 quantization did nothing"):
        check_graph(VariantSpec(name="v", precision="int8", method="dynamic").resolved(), summary(), 50, 90)


def test_the_graph_check_catches_a_builder_graph_from_the_export_that_differs_from_the_builders():
    variant = VariantSpec(name="v", precision="int4").resolved()
    with pytest.raises(VariantError) as err:
        check_graph(variant, summary({"MatMulNBits": 21, "GatherBlockQuantized": 1}, bits=[4]) | {"lm_head": "MatMul"},
                    40, 90)
    assert str(err.value) == (
        "variant v: the embedding is quantized (GatherBlockQuantized) but quantize_embeddings is not set; "
        "the LM head is a MatMul, not MatMulNBits: it was left unquantized")
    excluded = VariantSpec(name="v", precision="int8", nodes_to_exclude=["/lm_head/MatMul"]).resolved()
    check_graph(excluded, summary({"MatMulNBits": 20}, bits=[8]) | {"lm_head": "MatMul"}, 40, 90)


def test_the_graph_check_passes_a_graph_that_holds_what_it_claims():
    check_graph(VariantSpec(name="v", precision="int4").resolved(), summary({"MatMulNBits": 21}, bits=[4]), 40, 90)
    check_graph(VariantSpec(name="v", precision="fp32").resolved(), summary(), 90, 90)
