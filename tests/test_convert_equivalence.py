"""ModelBuilder int4 from the source against block-wise RTN on the shared fp32 export, on the trained demo model:
real Olive, both graphs built and compared (docs/toolchain.md, "int4 from the export").

For the builder's `default` algorithm with the embedding unquantized and nothing excluded, a sweep makes the variant
with OnnxBlockWiseRtnQuantization on the export (``Variant.route`` says "onnx"). That is only right if the graph is
the builder's: the same operators, every MatMulNBits with the same attributes and the same packed weights, scales and
zero points, the LM head quantized on both, the embedding left alone on both, and the same logits. The tolerance on
logits is float rounding (1e-4, where the int4 error itself is ~1 logit); what is measured here is exactly 0.

Also here: the RTN pass quantizing from the mapped export (adapters/olive_speed.py) writes what Olive's own pass,
which loads every weight first, writes; and the logits-rename trap. OnnxBlockWiseRtnQuantization renames the graph
output `logits` when it quantizes the LM head; the adapter renames it back, and the variant loads and generates in
onnxruntime-genai 0.14.1.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from slmops import quantize as quantizing
from slmops.adapters import genai, olive
from slmops.adapters.ort import LogitModel
from slmops.config import VariantSpec
from slmops.evalset import load_eval_set

# the demo sweep's two int4 variants (configs/demo.yaml)
INT4 = {"int4-b32": {"block_size": 32, "symmetric": False}, "int4-b128": {"block_size": 128, "symmetric": True}}
LOGIT_TOLERANCE = 1e-4
KL_TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def built(demo_model, tmp_path_factory) -> Path:
    """The fp32 export, and each int4 variant by ModelBuilder from the source and by the sweep's route."""
    work = tmp_path_factory.mktemp("equivalence")
    logs = work / "logs"
    olive.run_workflow(olive.export_config(demo_model, work / "fp32", work / "cache"), "fp32", logs / "fp32.log")
    for name, knobs in INT4.items():
        variant = VariantSpec(name=name, precision="int4", **knobs).resolved()
        assert variant.method == "builder" and variant.route == "onnx"
        olive.run_workflow(olive.builder_int4_config(
            demo_model, work / f"builder-{name}", work / "cache", block_size=variant.block_size,
            symmetric=variant.symmetric, accuracy_level=variant.accuracy_level, algorithm=variant.algorithm,
            quantize_embeddings=False, nodes_to_exclude=[]), name, logs / f"builder-{name}.log")
        config = quantizing.olive_config(variant, demo_model, work / "fp32", work / f"export-{name}", work / "cache")
        assert [p["type"] for p in config["passes"].values()] == ["OnnxBlockWiseRtnQuantization"]
        olive.run_workflow(config, name, logs / f"export-{name}.log")
        olive.complete_from(work / "fp32", work / f"export-{name}")
    return work


def graphs(built: Path, name: str) -> tuple[onnx.GraphProto, onnx.GraphProto]:
    return (onnx.load(str(built / f"builder-{name}" / "model.onnx")).graph,
            onnx.load(str(built / f"export-{name}" / "model.onnx")).graph)


def nbits_nodes(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """MatMulNBits nodes by the MatMul they replaced (both quantizers append _Q4 to the node's name)."""
    return {n.name.removesuffix("_Q4"): n for n in graph.node if n.op_type == "MatMulNBits"}


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def array(graph: onnx.GraphProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in graph.initializer if t.name == name))


def signature(graph: onnx.GraphProto) -> Counter:
    """The graph up to names: each node by its operator, attributes and what feeds it (an initializer by its dtype,
    element count and bytes; a node output by its producer's signature). Element counts, not shapes: the builder's
    quantizer declares MatMulNBits scales and zero points 2-D ([N, blocks]), Olive's pass flat ([N * blocks]), both
    of which the operator accepts; the bytes are compared."""
    token = {i.name: f"input:{i.name}" for i in graph.input}
    for t in graph.initializer:
        a = numpy_helper.to_array(t)
        token[t.name] = f"{a.dtype}:{a.size}:{hashlib.sha256(a.tobytes()).hexdigest()}"
    nodes = Counter()
    for n in graph.node:  # both files are topologically sorted
        attrs = sorted((a.name, repr(onnx.helper.get_attribute_value(a))) for a in n.attribute)
        sig = hashlib.sha256(repr((n.op_type, n.domain, attrs, [token.get(i, "") for i in n.input])).encode())
        nodes[(n.op_type, sig.hexdigest())] += 1
        for k, out in enumerate(n.output):
            token[out] = f"{sig.hexdigest()}:{k}"
    nodes[("outputs", repr([(o.name, token[o.name]) for o in graph.output]))] += 1
    return nodes


@pytest.mark.parametrize("name", INT4)
def test_same_operators_and_outputs(built, name):
    builder, export = graphs(built, name)
    assert Counter(n.op_type for n in export.node) == Counter(n.op_type for n in builder.node)
    assert [o.name for o in export.output] == [o.name for o in builder.output]
    assert export.output[0].name == "logits"


@pytest.mark.parametrize("name", INT4)
def test_every_matmulnbits_has_the_builders_attributes_and_bytes(built, name):
    builder, export = graphs(built, name)
    b_nodes, e_nodes = nbits_nodes(builder), nbits_nodes(export)
    assert set(e_nodes) == set(b_nodes) and "/lm_head/MatMul" in b_nodes
    knobs = INT4[name]
    for key, b_node in b_nodes.items():
        e_node = e_nodes[key]
        assert attributes(e_node) == attributes(b_node), key
        assert attributes(b_node)["bits"] == 4 and attributes(b_node)["block_size"] == knobs["block_size"]
        assert attributes(b_node)["accuracy_level"] == 4
        # B, scales, and zero points exactly when asymmetric
        assert len(e_node.input) == len(b_node.input) == (3 if knobs["symmetric"] else 4), key
        for b_input, e_input in zip(b_node.input[1:], e_node.input[1:]):
            b_array, e_array = array(builder, b_input), array(export, e_input)
            assert b_array.dtype == e_array.dtype and b_array.tobytes() == e_array.tobytes(), (key, b_input)


@pytest.mark.parametrize("name", INT4)
def test_the_lm_head_is_quantized_and_the_embedding_left_alone_on_both(built, name):
    for graph in graphs(built, name):
        head = nbits_nodes(graph)["/lm_head/MatMul"]
        assert list(head.output) == ["logits"]
        (embedding,) = [n for n in graph.node if n.name.startswith("/model/embed_tokens/")]
        assert embedding.op_type == "Gather" and not any(n.op_type == "GatherBlockQuantized" for n in graph.node)
    builder, export = graphs(built, name)
    assert array(export, "model.embed_tokens.weight").tobytes() == array(builder, "model.embed_tokens.weight").tobytes()


@pytest.mark.parametrize("name", INT4)
def test_the_whole_graph_is_the_builders_up_to_names(built, name):
    builder, export = graphs(built, name)
    assert signature(export) == signature(builder)


@pytest.mark.parametrize("name", INT4)
def test_the_same_logits_on_every_eval_prompt(built, demo_model, name):
    from slmops.evaluate.fidelity import render_sequences

    builder, export = LogitModel(built / f"builder-{name}"), LogitModel(built / f"export-{name}")
    items = load_eval_set(demo_model / "eval.jsonl")
    sequences = render_sequences(built / "fp32", items, builder.eos_token_id, builder.context_length)
    assert len(sequences) == len(items) == 192
    worst_logit, kls = 0.0, []
    for seq in sequences:  # teacher-forced: every position of prompt + reference
        b, e = builder.logits(seq["ids"]), export.logits(seq["ids"])
        worst_logit = max(worst_logit, float(np.abs(b - e).max()))
        lb, le = (x - x.max(-1, keepdims=True) for x in (b, e))
        lb, le = (x - np.log(np.exp(x).sum(-1, keepdims=True)) for x in (lb, le))
        kls.append((np.exp(lb) * (lb - le)).sum(-1))
    kl = np.concatenate(kls)
    assert worst_logit <= LOGIT_TOLERANCE, worst_logit
    assert float(kl.max()) <= KL_TOLERANCE, float(kl.max())


# --- the RTN pass on the mapped export ------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [{"precision": "int8"}, {"precision": "int4", "block_size": 32, "symmetric": False}])
def test_the_rtn_pass_on_the_mapped_export_writes_olives_own_bytes(built, demo_model, tmp_path, monkeypatch, spec):
    import onnx_ir
    from olive.passes.onnx import rtn_quantization

    variant = VariantSpec(name="v", **spec).resolved()
    outputs = {}
    for how in ("mapped", "loaded"):
        if how == "loaded":  # Olive's pass as it ships: every weight read into memory before quantizing
            monkeypatch.setattr(rtn_quantization, "ir", onnx_ir)
        else:
            assert rtn_quantization.ir is not onnx_ir  # the adapter's install() replaced it
        config = quantizing.olive_config(variant, demo_model, built / "fp32", tmp_path / how, tmp_path / f"cache-{how}")
        olive.run_workflow(config, how, tmp_path / f"{how}.log")
        outputs[how] = {p.name: p.read_bytes() for p in (tmp_path / how).iterdir()}
    assert sorted(outputs["mapped"]) == ["model.onnx", "model.onnx.data"]
    assert outputs["mapped"] == outputs["loaded"]
    assert (built / "fp32" / "model.onnx.data").stat().st_nlink == 1  # the export is left as it was


# --- the logits-rename trap -----------------------------------------------------------------------------------

def test_olive_still_renames_the_logits_and_the_adapter_puts_the_name_back(built, tmp_path):
    from olive.workflows import run as olive_run

    config = olive.onnx_quantize_config(built / "fp32", tmp_path / "raw", tmp_path / "cache", method="rtn", bits=8,
                                        block_size=128, symmetric=True, accuracy_level=4, nodes_to_exclude=[])
    olive_run(config)  # Olive alone, as `olive run` would
    raw = tmp_path / "raw"
    assert onnx.load(str(raw / "model.onnx"), load_external_data=False).graph.output[0].name == "logits_Q8"
    data = raw / "model.onnx.data"
    before = (data.stat().st_ino, data.stat().st_mtime_ns, data.stat().st_size)
    assert olive.restore_logits(raw) is True
    assert (data.stat().st_ino, data.stat().st_mtime_ns, data.stat().st_size) == before  # the weights untouched
    assert olive.restore_logits(raw) is False  # nothing left to rename
    olive.complete_from(built / "fp32", raw)
    assert genai.graph_summary(raw)["outputs"][0] == "logits"
    assert genai.load_and_generate(raw, "hello", max_new_tokens=3)


@pytest.mark.parametrize("spec", [{"precision": "int8"}, {"precision": "int4", "method": "rtn", "block_size": 32}])
def test_an_rtn_variant_with_its_lm_head_quantized_loads_and_generates(built, demo_model, tmp_path, spec):
    variant = VariantSpec(name="v", **spec).resolved()
    dest = tmp_path / "variant"
    manifest = quantizing.quantize(variant, "key", demo_model, built / "fp32", dest, tmp_path / "logs")
    graph = genai.graph_summary(dest)
    assert graph["outputs"][0] == "logits" and graph["lm_head"] == "MatMulNBits"
    assert graph["matmul_count"] == 0  # every MatMul, the head included, is a MatMulNBits
    assert manifest["built_by"] == {"route": "onnx", "from": "the fp32 export",
                                    "passes": ["OnnxBlockWiseRtnQuantization"]}
    assert genai.load_and_generate(dest, "hello", max_new_tokens=3)
    assert LogitModel(dest).logits([1, 2, 3]).shape[0] == 3  # plain onnxruntime finds `logits` too
    shutil.rmtree(dest)
