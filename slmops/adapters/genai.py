"""onnxruntime-genai 0.14.1 (the builder's runtime) and the ONNX graph: does a variant load, generate, and hold
the quantized operators it claims?

The only module that imports onnxruntime_genai; Foundry Local's runtime (genai-core 0.18) lives in the foundry
adapter.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from slmops.errors import VariantError

QUANT_OPS = ("MatMulNBits", "GatherBlockQuantized", "MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul")
# ModelBuilder's name for the LM head; a quantizing pass keeps it as a prefix (/lm_head/MatMul_Q4)
LM_HEAD_NODE = "/lm_head/MatMul"


def preload_runtime() -> None:
    """Load onnxruntime-genai 0.14.1's native library (must happen before Foundry Local's genai-core loads)."""
    import onnxruntime_genai  # noqa: F401


def genai_config(model_dir: Path) -> dict[str, Any]:
    """The folder's genai_config.json (what onnxruntime-genai and Foundry Local read to run it)."""
    path = Path(model_dir) / "genai_config.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VariantError(f"{path} is unreadable ({exc}); rebuild the variant") from None
    if not isinstance(document, dict) or not isinstance(document.get("model"), dict):
        raise VariantError(f"{path} has no 'model' section; rebuild the variant")
    return document


def context_length(model_dir: Path) -> int | None:
    """The longest sequence the model takes (genai_config.json), or None when it does not say."""
    return context_of(genai_config(model_dir))


def intra_op_threads(model_dir: Path) -> int:
    """The intra-op threads onnxruntime-genai (and Foundry Local, which runs it) decodes the folder with: the
    decoder's ``session_options.intra_op_num_threads`` when genai_config.json sets it, else genai's own default, half
    the logical cores (at least 1, at most 16: ``src/models/model.cpp`` at v0.14.0; 1 on a 2-core machine)."""
    options = (genai_config(model_dir)["model"].get("decoder") or {}).get("session_options") or {}
    configured = options.get("intra_op_num_threads")
    if isinstance(configured, int) and configured > 0:
        return configured
    return max(1, min(16, (os.cpu_count() or 2) // 2))


def context_of(document: dict[str, Any]) -> int | None:
    """The longest sequence a genai_config.json document gives: ``model.context_length``, else
    ``search.max_length``; None when it says neither."""
    value = (document.get("model") or {}).get("context_length") or (document.get("search") or {}).get("max_length")
    return value if isinstance(value, int) and value > 0 else None


def graph_summary(model_dir: Path) -> dict:
    """Operator counts of the model's graph (weights are not loaded), the bit width of its MatMulNBits and the
    operator of its LM head."""
    import onnx

    model = onnx.load(str(Path(model_dir) / "model.onnx"), load_external_data=False)
    ops = Counter(node.op_type for node in model.graph.node)
    bits = sorted(
        {attr.i for node in model.graph.node if node.op_type == "MatMulNBits" for attr in node.attribute
         if attr.name == "bits"}
    )
    head = [node for node in model.graph.node if node.name.startswith(LM_HEAD_NODE)]
    return {"op_counts": {op: ops[op] for op in QUANT_OPS if ops[op]}, "matmul_nbits_bits": bits,
            "matmul_count": ops["MatMul"], "outputs": [o.name for o in model.graph.output],
            "lm_head": head[0].op_type if head else None,
            "embedding_shares_lm_head": bool(head) and _embedding_reads(model.graph, head[0])}


def _embedding_reads(graph, head) -> bool:
    """Whether the embedding lookup reads the LM head's own quantized weight (through a Reshape), not a table of
    its own: what ModelBuilder's shared_embeddings makes."""
    initializers = {t.name for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    head_weights = {name for name in head.input[1:] if name in initializers}
    for node in graph.node:
        if node.name.startswith("/model/embed_tokens/") and node.op_type in ("Gather", "GatherBlockQuantized"):
            source = producers.get(node.input[0])
            read = set(source.input) if source is not None and source.op_type in ("Reshape", "Transpose") \
                else {node.input[0]}
            return bool(read & head_weights)
    return False


def builder_options(block_size: int, symmetric: bool, accuracy_level: int, algorithm: str,
                    nodes_to_exclude: list[str], shared_embeddings: bool) -> dict[str, Any]:
    """ModelBuilder 0.14.1's extra options of an int4 build (the same names Olive's pass passes on)."""
    options: dict[str, Any] = {"int4_block_size": block_size, "int4_is_symmetric": symmetric,
                               "int4_accuracy_level": accuracy_level, "int4_algo_config": algorithm,
                               "shared_embeddings": shared_embeddings}
    if nodes_to_exclude:
        options["int4_nodes_to_exclude"] = list(nodes_to_exclude)
    return options


def build(source_dir: Path, output_dir: Path, cache_dir: Path, precision: str, options: dict[str, Any],
          log: Path) -> Path:
    """ModelBuilder called directly, through its own command in a fresh process: the route for what Olive's
    ModelBuilder pass would silently drop (shared_embeddings). A process per build, because two builds in one
    process are not independent (the second of two int4 builds with shared_embeddings left its embedding apart).
    Writes a complete folder (model.onnx, its data, genai_config.json, tokenizer, chat template) and the command's
    output to log; raises VariantError with the builder's last words when it fails."""
    import subprocess
    import sys

    values = {k: str(v).lower() if isinstance(v, bool) else ",".join(v) if isinstance(v, list) else str(v)
              for k, v in options.items()}
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", "model", "-i", str(source_dir),
           "-o", str(output_dir), "-p", precision, "-e", "cpu", "-c", str(cache_dir), "--extra_options",
           "hf_remote=false", *(f"{k}={v}" for k, v in values.items())]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0 or not (Path(output_dir) / "model.onnx").is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise VariantError(f"ModelBuilder ({precision}, {values}) failed (exit {done.returncode}): "
                           f"{' / '.join(tail)}; see {log}")
    return Path(output_dir)


def load_and_generate(model_dir: Path, prompt: str = "Hello", max_new_tokens: int = 1) -> list[int]:
    """Load the folder as onnxruntime-genai does and greedily generate; return the new token ids."""
    import onnxruntime_genai as og

    try:
        model = og.Model(str(model_dir))
        tokenizer = og.Tokenizer(model)
        new = greedy(og, model, tokenizer.encode(prompt), max_new_tokens)
    except Exception as err:  # onnxruntime-genai raises plain RuntimeError for every load/run failure
        raise VariantError(f"{model_dir.name}: onnxruntime-genai could not load and generate: {err}") from err
    if not new:
        raise VariantError(f"{model_dir.name}: onnxruntime-genai loaded the model but generated no token")
    return new


def answer_prompts(model_dir: Path, prompts: list[str], max_new_tokens: int = 32) -> list[str]:
    """Greedy answers of the model to each prompt, rendered with its chat template (loaded once)."""
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = og.Model(str(model_dir))
    tokenizer = og.Tokenizer(model)
    answers = []
    for prompt in prompts:
        text = hf_tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                tokenize=False)
        answers.append(tokenizer.decode(greedy(og, model, tokenizer.encode(text), max_new_tokens)).strip())
    return answers


def greedy(og, model, input_ids, max_new_tokens: int) -> list[int]:
    """Greedy decoding of up to max_new_tokens after input_ids; the new token ids."""
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(input_ids) + max_new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(input_ids)
    new: list[int] = []
    while not generator.is_done() and len(new) < max_new_tokens:
        generator.generate_next_token()
        new.append(int(generator.get_next_tokens()[0]))
    return new
