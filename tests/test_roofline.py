"""The roofline (slmops.roofline): bytes per token counted by hand on a tiny graph, the roofs measured with
onnxruntime and cached per machine, and the metrics a policy may use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, save

from slmops import roofline
from slmops.metrics import known


def _tiny_graph(folder: Path) -> Path:
    """An embedding Gather (10x4 fp32), an fp32 MatMul (4x6), an attention-like MatMul of two activations, and a
    4-bit MatMulNBits LM head (N=6, K=16, block 16: 6x1x8 packed bytes, 6 fp32 scales, 6 zero-point bytes)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((10, 4), dtype=np.float32), "embed"),
        numpy_helper.from_array(rng.standard_normal((4, 6), dtype=np.float32), "w1"),
        numpy_helper.from_array(rng.integers(0, 256, (6, 1, 8), dtype=np.uint8), "head_q"),
        numpy_helper.from_array(rng.random(6, dtype=np.float32), "head_scales"),
        numpy_helper.from_array(rng.integers(0, 256, 6, dtype=np.uint8), "head_zp"),
    ]
    nodes = [
        helper.make_node("Gather", ["embed", "ids"], ["h0"], name="/model/embed_tokens/Gather"),
        helper.make_node("MatMul", ["h0", "w1"], ["h1"], name="/model/layers.0/mlp/MatMul"),
        helper.make_node("MatMul", ["h1", "h1t"], ["scores"], name="/model/layers.0/attn/MatMul"),
        helper.make_node("MatMulNBits", ["x16", "head_q", "head_scales", "head_zp"], ["logits"],
                         name="/lm_head/MatMul_Q4", domain="com.microsoft", K=16, N=6, bits=4, block_size=16,
                         accuracy_level=4),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 1]),
         helper.make_tensor_value_info("h1t", TensorProto.FLOAT, [6, 1]),
         helper.make_tensor_value_info("x16", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 6]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 1])], inits)
    folder.mkdir(parents=True, exist_ok=True)
    save(helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17),
                                                               helper.make_opsetid("com.microsoft", 1)]),
         str(folder / "model.onnx"))
    return folder


def test_bytes_per_token_matches_a_hand_count_on_a_tiny_graph(tmp_path):
    folder = _tiny_graph(tmp_path / "tiny")
    ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])  # a graph that loads
    weights = roofline.bytes_per_token(folder)
    embedding_row = 4 * 4           # one 4-float row of the 10x4 table, not the table
    matmul = 4 * 6 * 4              # the fp32 weight; the MatMul of two activations reads no weight
    head = 6 * 1 * 8 + 6 * 4 + 6    # packed 4-bit weight, scales, zero points
    assert (weights.embedding, weights.lm_head, weights.matmul) == (embedding_row, head, matmul + head)
    assert weights.total == 16 + 96 + 78 == 190
    assert weights.format == roofline.WeightFormat("MatMul", 32)  # 96 fp32 bytes outweigh the head's 78


def test_bytes_per_token_of_a_built_variant_counts_every_weight_once(tiny_model, session_dir):
    """The fp32 export of the tiny model reads (almost) all its parameters' bytes per token: every weight but the
    embedding table, of which one row."""
    import onnx

    from slmops.convert import convert

    work = session_dir / "roofline-work"
    convert(tiny_model, work / "export", "roofline-test", False, work / "logs")
    weights = roofline.bytes_per_token(work / "export")
    model = onnx.load(str(work / "export" / "model.onnx"))
    everything = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    embed = next(t for t in model.graph.initializer if list(t.dims)[0] > 200 and len(t.dims) == 2
                 and any(n.op_type == "Gather" and n.input[0] == t.name for n in model.graph.node))
    table = numpy_helper.to_array(embed).nbytes
    assert weights.embedding == table // embed.dims[0]
    # the rest of the initializers (norms, biases, rotary caches) are read too, but are not MatMul weights
    assert 0.9 * (everything - table) < weights.matmul <= everything - table


def test_the_metrics_follow_from_the_bytes_the_speed_and_the_roofs():
    weights = roofline.WeightBytes(total=2_000_000_000, matmul=2_000_000_000, embedding=0, lm_head=0,
                                   format=roofline.WeightFormat("MatMulNBits", 4, 32, 4, True))
    roofs = {"memory": {"gb_per_s": 40.0}, "kernels": {roofline.kernel_key(weights.format, 1): {"gb_per_s": 25.0},
                                                        roofline.kernel_key(weights.format, 2): {"gb_per_s": 40.0}}}
    metrics = roofline.roofline_metrics(weights, 10.0, roofs, 1)
    assert metrics == {"bytes_per_token": 2e9, "achieved_gb_per_s": 20.0, "bandwidth_share": 0.5,
                       "kernel_share": 0.8}
    assert roofline.roofline_metrics(weights, 10.0, roofs, 2)["kernel_share"] == 0.5, "the roof on its threads"
    assert all(known(name) for name in metrics), "each one a metric a policy may name"
    assert roofline.roofline_metrics(weights, None, roofs) == {"bytes_per_token": 2e9}


def test_the_roofs_are_measured_once_per_machine_and_cached(tmp_path):
    fmt = roofline.WeightFormat("MatMulNBits", 4, 32, 4, True)
    first = roofline.machine_roofs(tmp_path, [fmt], 1)
    assert first["machine"] == roofline.machine_id()
    assert first["memory"]["gb_per_s"] > 0 and "single-row fp32 MatMul" in first["memory"]["how"]
    assert "default threads" in first["memory"]["how"], "the memory roof is the machine's: every core"
    kernel = first["kernels"][roofline.kernel_key(fmt, 1)]
    assert kernel["gb_per_s"] > 0 and "MatMulNBits (4 bits, block 32, accuracy level 4" in kernel["how"]
    assert kernel["how"].endswith(", 1 threads"), "measured on the variant's threads"
    again = roofline.machine_roofs(tmp_path, [fmt], 1)
    assert again == first, "a second sweep on this machine measures nothing again"
    stored = json.loads((tmp_path / "roofs.json").read_text())
    stored["machine"]["cpu"] = "another machine"
    (tmp_path / "roofs.json").write_text(json.dumps(stored))
    moved = roofline.machine_roofs(tmp_path, [], 1)
    assert moved["machine"] == roofline.machine_id() and moved["kernels"] == {}, "another machine's roofs dropped"
    assert roofline.measure_roof(roofline.WeightFormat("MatMulInteger", 8)) is None
    cores = roofline.machine_id()["cores"]
    fp32 = roofline.machine_roofs(tmp_path, [roofline.WeightFormat("MatMul", 32)], cores)
    assert fp32["kernels"][f"MatMul-32bit-{cores}t"] == fp32["memory"], "on every core, it is the memory roof"
    if cores > 1:
        fewer = roofline.machine_roofs(tmp_path, [roofline.WeightFormat("MatMul", 32)], 1)["kernels"]["MatMul-32bit-1t"]
        assert fewer["how"].startswith("single-row fp32 MatMul") and fewer["how"].endswith(", 1 threads")


@pytest.mark.parametrize("fmt", [roofline.WeightFormat("MatMulNBits", 8, 128, 4, False),
                                 roofline.WeightFormat("MatMulNBits", 4, 128, 0, False)])
def test_the_kernel_roof_runs_the_formats_the_variants_use(fmt, monkeypatch):
    monkeypatch.setattr(roofline, "KERNEL_ROOF_SHAPE", (1024, 2048))
    measured = roofline.measure_roof(fmt)
    assert measured["gb_per_s"] > 0
    assert measured["weight_bytes"] == 2048 * 1024 * fmt.bits // 8 + 2048 * (1024 // 128) * 4
