"""Fidelity to the unquantized model, llama.cpp-perplexity style: teacher-force each rendered (prompt + reference)
through the variant and the fp32 baseline, and compare their next-token distributions at every position.

    .venv/bin/python -m pytest tests/evaluate/test_fidelity.py -q

Plain onnxruntime (slmops.adapters.ort) runs ``model.onnx`` once per sequence and returns the logits of every
position.

KL and top-1 agreement are taken over *all* positions of the rendered sequence, prompt tokens included: the demo
model has memorised its answers with margins no quantization flips, so the answer tokens alone cannot tell int8
from int4; the prompt positions, where the model is unsure, can. Perplexity is of the reference tokens (answer and
end of turn) only: how well the variant still predicts what it should say.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from slmops.adapters.ort import LogitModel
from slmops.errors import VariantError


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def render_sequences(tokenizer_dir: Path, items: list[dict[str, str]], eos_token_id: int | None,
                     context_length: int | None) -> list[dict[str, Any]]:
    """Token ids of each item's chat-rendered prompt followed by its reference and end of turn, as trained."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    sequences = []
    for index, item in enumerate(items):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": item["prompt"]}], add_generation_prompt=True, tokenize=False
        )
        prompt_ids = tokenizer.encode(text, add_special_tokens=False)
        answer_ids = tokenizer.encode(item["reference"], add_special_tokens=False)
        if eos_token_id is not None:
            answer_ids.append(eos_token_id)
        ids = prompt_ids + answer_ids
        if context_length and len(ids) > context_length:
            continue  # longer than the model can see: not a question of quantization
        sequences.append({"index": index, "ids": ids, "answer_start": len(prompt_ids)})
    return sequences


def compare(variant: LogitModel, baseline: LogitModel, sequences: list[dict[str, Any]],
            progress: Callable[[int, int], None]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """KL(baseline || variant) and top-1 agreement at every position; perplexity of the reference tokens."""
    all_kl: list[np.ndarray] = []
    agree = positions = 0
    nll = {"variant": 0.0, "baseline": 0.0}
    answer_tokens = 0
    per_item = []
    for done, seq in enumerate(sequences, start=1):
        ids, start = seq["ids"], seq["answer_start"]
        lp_base = _log_softmax(baseline.logits(ids))
        lp_var = _log_softmax(variant.logits(ids))
        if lp_base.shape != lp_var.shape:
            raise VariantError(
                f"{variant.model_dir.name}: logits shape {lp_var.shape} differs from the baseline's {lp_base.shape}"
            )
        # identical logits give exactly 0 here (no rounding in lp_base - lp_var); tiny negatives are rounding
        kl = np.maximum((np.exp(lp_base) * (lp_base - lp_var)).sum(axis=-1), 0.0)
        same = lp_base.argmax(axis=-1) == lp_var.argmax(axis=-1)
        targets = np.asarray(ids[start:])
        rows = np.arange(start - 1, len(ids) - 1)
        item_nll_var = float(-lp_var[rows, targets].sum())
        item_nll_base = float(-lp_base[rows, targets].sum())
        all_kl.append(kl)
        agree += int(same.sum())
        positions += len(ids)
        nll["variant"] += item_nll_var
        nll["baseline"] += item_nll_base
        answer_tokens += len(targets)
        per_item.append({
            "index": seq["index"],
            "kl_div_mean": float(kl.mean()),
            "top1_agreement": float(same.mean()),
            "perplexity": math.exp(item_nll_var / len(targets)),
        })
        progress(done, len(sequences))
    if not per_item:
        raise VariantError("no eval item fits the model's context: nothing to teacher-force")
    kl_all = np.concatenate(all_kl)
    ppl = math.exp(nll["variant"] / answer_tokens)
    ppl_base = math.exp(nll["baseline"] / answer_tokens)
    metrics = {
        "perplexity": ppl,
        "kl_div_mean": float(kl_all.mean()),
        "kl_div_p99": float(np.percentile(kl_all, 99)),
        "top1_agreement": agree / positions,
        "ppl_ratio": ppl / ppl_base,
        "baseline_perplexity": ppl_base,
        "fidelity_positions": float(positions),
    }
    return metrics, per_item


def fidelity(variant_dir: Path, baseline_dir: Path, items: list[dict[str, str]],
             progress: Callable[[int, int], None] = lambda done, total: None) -> tuple[dict[str, float], list[dict]]:
    """Fidelity metrics of variant_dir against baseline_dir on the eval items, and the per-item figures."""
    variant, baseline = LogitModel(variant_dir), LogitModel(baseline_dir)
    context = min(c for c in (variant.context_length, baseline.context_length, 10**9) if c)
    sequences = render_sequences(variant_dir, items, variant.eos_token_id, context)
    return compare(variant, baseline, sequences, progress)
