"""onnxruntime-genai 0.14.1 (the builder's runtime) and the ONNX graph: does a variant load, generate, and hold
the quantized operators it claims?

The only module that imports onnxruntime_genai; Foundry Local's runtime (genai-core 0.18) lives in the foundry
adapter.
"""

from __future__ import annotations

import json
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
    head = [node.op_type for node in model.graph.node if node.name.startswith(LM_HEAD_NODE)]
    return {"op_counts": {op: ops[op] for op in QUANT_OPS if ops[op]}, "matmul_nbits_bits": bits,
            "matmul_count": ops["MatMul"], "outputs": [o.name for o in model.graph.output],
            "lm_head": head[0] if head else None}


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
