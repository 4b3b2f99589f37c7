"""int4 with the embedding sharing the LM head's quantized weight: a route of its own that calls ModelBuilder
directly (Olive's ModelBuilder pass drops `shared_embeddings`), checked by its graph, loaded and run; and the spec
options that 0.14.1 cannot honour refused in one line before any work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slmops import quantize as quantizing
from slmops.adapters import genai
from slmops.config import VariantSpec
from slmops.roofline import bytes_per_token

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("algorithm", "head_bits"), [("rtn_last", 8), ("rtn", 4)])
def test_a_shared_embedding_variant_reads_the_heads_weight_and_loads_and_generates(demo_model, tmp_path,
                                                                                   algorithm, head_bits):
    shared = VariantSpec(name="shared", precision="int4", block_size=32, algorithm=algorithm,
                         shared_embeddings=True).resolved()
    manifest = quantizing.quantize(shared, "key", demo_model, None, tmp_path / "shared", tmp_path / "logs")
    graph = genai.graph_summary(tmp_path / "shared")
    assert graph["embedding_shares_lm_head"] is True
    assert graph["op_counts"]["GatherBlockQuantized"] == 1 and graph["lm_head"] == "MatMulNBits"
    assert head_bits in graph["matmul_nbits_bits"]
    assert manifest["built_by"]["route"] == "builder" and "called directly" in manifest["built_by"]["passes"][0]
    assert genai.load_and_generate(tmp_path / "shared", "hello", max_new_tokens=3)
    for name in ("genai_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (tmp_path / "shared" / name).is_file(), f"{name}: the folder is a complete model"

    # the same variant without sharing, through Olive: an fp32 table of its own, so a bigger folder
    apart = VariantSpec(name="apart", precision="int4", block_size=32, algorithm=algorithm).resolved()
    quantizing.quantize(apart, "key", demo_model, None, tmp_path / "apart", tmp_path / "logs")
    assert genai.graph_summary(tmp_path / "apart")["embedding_shares_lm_head"] is False
    assert manifest["size_bytes"] < quantizing.folder_size(tmp_path / "apart")
    # a token reads one row of the shared table: its packed bytes and scales, not fp32 floats
    assert bytes_per_token(tmp_path / "shared").embedding < bytes_per_token(tmp_path / "apart").embedding
    shutil.rmtree(tmp_path / "shared")


def test_the_graph_check_refuses_a_shared_variant_whose_embedding_reads_its_own_table():
    variant = VariantSpec(name="v", precision="int4", algorithm="rtn_last", shared_embeddings=True).resolved()
    graph = {"op_counts": {"MatMulNBits": 3, "GatherBlockQuantized": 1}, "matmul_nbits_bits": [4, 8],
             "outputs": ["logits"], "lm_head": "MatMulNBits", "embedding_shares_lm_head": False}
    with pytest.raises(Exception, match="shared_embeddings is set but the embedding does not read the LM head's"):
        quantizing.check_graph(variant, graph, 10, 100)


def _sweep(tmp_path: Path, model: Path, variant: dict) -> subprocess.CompletedProcess:
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"model": {"path": str(model), "name": "m"}, "variants": [variant]}))
    return subprocess.run([sys.executable, "-m", "slmops.cli", "sweep", str(spec), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize(("variant", "message"), [
    ({"name": "v", "precision": "int4", "shared_embeddings": True},
     "shared_embeddings needs algorithm rtn, rtn_last, k_quant_mixed, k_quant_last: with 'default' "
     "ModelBuilder 0.14.1 builds the embedding apart without saying so"),
    ({"name": "v", "precision": "int8", "shared_embeddings": True},
     "shared_embeddings does not apply to int8 with method 'rtn'"),
    ({"name": "v", "precision": "int4", "algorithm": "rtn_last", "shared_embeddings": True,
      "nodes_to_exclude": ["/lm_head/MatMul"]}, "shared_embeddings needs the LM head quantized"),
])
def test_a_sharing_the_builder_cannot_do_is_a_one_line_error_before_any_work(tmp_path, tiny_model, variant,
                                                                             message):
    done = _sweep(tmp_path, tiny_model, variant)
    assert done.returncode == 2, done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert message in line
    assert not (tmp_path / "out").exists()


def test_sharing_on_a_model_whose_embedding_is_not_tied_is_refused_before_any_work(tmp_path, tiny_model):
    untied = tmp_path / "untied"
    shutil.copytree(tiny_model, untied)
    config = json.loads((untied / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (untied / "config.json").write_text(json.dumps(config))
    done = _sweep(tmp_path, untied, {"name": "v", "precision": "int4", "algorithm": "rtn",
                                     "shared_embeddings": True})
    assert done.returncode == 2, done.stderr
    assert (f"variant v: shared_embeddings needs a model whose embedding and LM head are tied, and "
            f"{untied / 'config.json'} does not say tie_word_embeddings: true") in done.stderr
    assert not (tmp_path / "out").exists()


def test_sharing_with_a_block_size_that_does_not_divide_the_hidden_size_is_refused_before_any_work(tmp_path,
                                                                                                   demo_model):
    """ModelBuilder 0.14.1 builds it, and its embedding's Reshape fails on the first token."""
    done = _sweep(tmp_path, demo_model, {"name": "v", "precision": "int4", "block_size": 128, "algorithm": "rtn",
                                         "shared_embeddings": True})
    assert done.returncode == 2, done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert (f"variant v: shared_embeddings reads the embedding from the LM head's blocks, and block_size 128 does not "
            f"divide hidden_size 192 ({demo_model / 'config.json'}); allowed block sizes for this model: 16, 32, 64"
            in line)
    assert not (tmp_path / "out").exists()
