"""Fidelity to the unquantized model, llama.cpp style: teacher-force each rendered (prompt + reference) through the
variant, and compare its next-token distributions with the fp32 baseline's at every position.

    store = BaselineStore.compute(LogitModel(export_dir), sequences)      # once per baseline content and eval set
    metrics, per_item = compare_to_baseline(LogitModel(variant_dir), store)

The baseline is computed once (slmops.evaluate.baseline caches it) and kept compactly: at every position the
top-``TOP_K`` log-probabilities of the baseline with their token ids, and the log-probability of the token that
follows. Everything but KL divergence is exact from that (the reference token's probability, the baseline's top
token, perplexity). KL is taken over the top-k tokens plus one bucket for the rest of the vocabulary: the KL of the
coarsened distributions, never above the true KL, and below it by the baseline tail's own divergence (measured:
docs/benchmarks.md, "What the stored baseline costs in KL").

Positions: every position of the rendered sequence that has a next token (prompt tokens included: the demo model
has memorised its answers with margins no quantization flips, so the answer tokens alone cannot tell int8 from
int4; the prompt positions can). Perplexity and its ratio are of the reference tokens (answer and end of turn)
only. The statistics and their names follow llama.cpp's `--kl-divergence` summary: KL mean with its standard error,
median, p90, p95, p99, p99.9, max; Δp (probability of the next token, variant minus baseline, as a fraction) mean
and RMS with errors; "same top p" with its error; mean ln(PPL(Q)/PPL(base)) with its error, and the correlation of
the per-token ln-probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slmops.adapters.ort import LogitModel
from slmops.errors import VariantError
from slmops.evaluate.stats import mean_with_error

TOP_K = 64


def log_probs(model: LogitModel, ids: list[int]) -> np.ndarray:
    """Log-probabilities (float64) at positions 0..n-2 of the sequence, each predicting the next token."""
    logits = model.logits(ids)[:-1]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def render_sequences(tokenizer_dir: Path, items: list[dict[str, str]], eos_token_id: int | None,
                     context_length: int | None) -> list[dict[str, Any]]:
    """Token ids of each item's chat-rendered prompt followed by its reference and end of turn, as trained."""
    from slmops.prompt_template import load_tokenizer, prompt_ids

    tokenizer = load_tokenizer(tokenizer_dir)
    sequences = []
    for index, item in enumerate(items):
        prompt = prompt_ids(tokenizer, item["prompt"])
        answer = tokenizer.encode(item["reference"], add_special_tokens=False)
        if eos_token_id is not None:
            answer.append(eos_token_id)
        ids = prompt + answer
        if context_length and len(ids) > context_length:
            continue  # longer than the model can see: not a question of quantization
        sequences.append({"index": index, "ids": ids, "answer_start": len(prompt)})
    if not sequences:
        raise VariantError("no eval item fits the model's context: nothing to teacher-force")
    return sequences


@dataclass
class BaselineStore:
    """The baseline's teacher-forced distributions over the eval sequences, kept compactly (float32)."""

    sequences: list[dict[str, Any]]  # index, ids, answer_start
    topk_ids: np.ndarray  # (positions, k) int32, most probable first
    topk_lp: np.ndarray  # (positions, k) float32
    next_lp: np.ndarray  # (positions,) float32: log p of the token that follows

    @classmethod
    def compute(cls, model: LogitModel, sequences: list[dict[str, Any]], top_k: int = TOP_K,
                progress: Callable[[int, int], None] = lambda done, total: None) -> BaselineStore:
        ids_rows, lp_rows, next_rows = [], [], []
        for done, seq in enumerate(sequences, start=1):
            lp = _f32(log_probs(model, seq["ids"]))
            k = min(top_k, lp.shape[1])
            top = np.argsort(-lp, axis=1, kind="stable")[:, :k]
            ids_rows.append(top.astype(np.int32))
            lp_rows.append(np.take_along_axis(lp, top, axis=1).astype(np.float32))
            next_rows.append(lp[np.arange(len(lp)), seq["ids"][1:]].astype(np.float32))
            progress(done, len(sequences))
        return cls(sequences, np.concatenate(ids_rows), np.concatenate(lp_rows), np.concatenate(next_rows))

    def save(self, path: Path) -> None:
        lengths = np.asarray([len(s["ids"]) for s in self.sequences], dtype=np.int64)
        np.savez(path, ids=np.concatenate([s["ids"] for s in self.sequences]).astype(np.int32), lengths=lengths,
                 index=np.asarray([s["index"] for s in self.sequences], dtype=np.int64),
                 answer_start=np.asarray([s["answer_start"] for s in self.sequences], dtype=np.int64),
                 topk_ids=self.topk_ids, topk_lp=self.topk_lp, next_lp=self.next_lp)

    @classmethod
    def load(cls, path: Path) -> BaselineStore:
        with np.load(path) as data:
            bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
            sequences = [{"index": int(i), "ids": data["ids"][a:b].tolist(), "answer_start": int(s)}
                         for i, s, a, b in zip(data["index"], data["answer_start"], bounds[:-1], bounds[1:])]
            return cls(sequences, data["topk_ids"], data["topk_lp"], data["next_lp"])

    def rows(self) -> list[slice]:
        """The rows (positions) of each sequence."""
        bounds = np.concatenate([[0], np.cumsum([len(s["ids"]) - 1 for s in self.sequences])])
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _f32(values: np.ndarray) -> np.ndarray:
    """float64 through float32 and back: the variant's numbers rounded as the stored baseline's were, so that the
    baseline compared with itself gives exactly zero."""
    return values.astype(np.float32).astype(np.float64)


def _kl_top_k(base_lp: np.ndarray, base_ids: np.ndarray, lp: np.ndarray) -> np.ndarray:
    """KL(baseline || variant) per position over the baseline's top-k tokens and one bucket for the rest."""
    p_top = np.exp(base_lp.astype(np.float64))
    q_lp = np.take_along_axis(lp, base_ids.astype(np.int64), axis=1)
    q_top = np.exp(q_lp)
    head = (p_top * (base_lp - q_lp)).sum(axis=1)
    p_rest = np.clip(1.0 - p_top.sum(axis=1), 0.0, 1.0)
    q_rest = np.clip(1.0 - q_top.sum(axis=1), 1e-300, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.where(p_rest > 0, p_rest * (np.log(np.maximum(p_rest, 1e-300)) - np.log(q_rest)), 0.0)
    return np.maximum(head + tail, 0.0)  # tiny negatives are float rounding: a KL is never below zero


def compare_to_baseline(model: LogitModel, store: BaselineStore,
                        progress: Callable[[int, int], None] = lambda done, total: None
                        ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The variant teacher-forced over the stored sequences, against the stored baseline."""
    kl, same, dp, nll_q, nll_b, answer = [], [], [], [], [], []
    per_item = []
    for done, (seq, rows) in enumerate(zip(store.sequences, store.rows()), start=1):
        lp = _f32(log_probs(model, seq["ids"]))
        if lp.shape[0] != rows.stop - rows.start or lp.shape[1] <= int(store.topk_ids[rows].max()):
            raise VariantError(f"{model.model_dir.name}: logits of shape {lp.shape} do not match the baseline's")
        nxt = np.asarray(seq["ids"][1:])
        lp_next = lp[np.arange(len(nxt)), nxt]
        base_next = store.next_lp[rows].astype(np.float64)
        item_kl = _kl_top_k(store.topk_lp[rows], store.topk_ids[rows], lp)
        item_same = lp.argmax(axis=1) == store.topk_ids[rows][:, 0]
        kl.append(item_kl), same.append(item_same), nll_q.append(-lp_next), nll_b.append(-base_next)
        dp.append(np.exp(lp_next) - np.exp(base_next))
        in_answer = np.arange(len(nxt)) >= seq["answer_start"] - 1
        answer.append(in_answer)
        per_item.append({"index": seq["index"], "kl_div_mean": float(item_kl.mean()),
                         "top1_agreement": float(item_same.mean()),
                         "perplexity": math.exp(float(-lp_next[in_answer].mean()))})
        progress(done, len(store.sequences))
    return statistics(*(np.concatenate(a) for a in (kl, same, dp, nll_q, nll_b, answer))), per_item


def identical_to_baseline(store: BaselineStore) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The figures of a variant that is the baseline (the fp32 variant is a copy of the export), by definition."""
    nll = -store.next_lp.astype(np.float64)
    zero = np.zeros_like(nll)
    answer = np.concatenate([np.arange(r.stop - r.start) >= s["answer_start"] - 1
                             for s, r in zip(store.sequences, store.rows())])
    per_item = [{"index": s["index"], "kl_div_mean": 0.0, "top1_agreement": 1.0,
                 "perplexity": math.exp(float(nll[r][np.arange(r.stop - r.start) >= s["answer_start"] - 1].mean()))}
                for s, r in zip(store.sequences, store.rows())]
    return statistics(zero, np.ones_like(nll, dtype=bool), zero, nll, nll, answer), per_item


def statistics(kl: np.ndarray, same: np.ndarray, dp: np.ndarray, nll_q: np.ndarray, nll_b: np.ndarray,
               answer: np.ndarray) -> dict[str, float]:
    """llama.cpp's --kl-divergence summary over every position, and the reference tokens' perplexity."""
    n = kl.size
    kl_mean, kl_err = mean_with_error(kl)
    dp_mean, dp_err = mean_with_error(dp)
    rms = math.sqrt(float(np.mean(dp**2)))
    rms_err = 0.5 / rms * float(np.std(dp**2)) / math.sqrt(n - 1) if rms > 0 and n > 1 else 0.0
    same_p = float(same.mean())
    ln_ratio, ln_ratio_err = mean_with_error(nll_q - nll_b)
    ppl, ppl_base = math.exp(float(nll_q[answer].mean())), math.exp(float(nll_b[answer].mean()))
    return {
        "kl_div_mean": kl_mean, "kl_div_mean_err": kl_err, "kl_div_median": float(np.median(kl)),
        **{f"kl_div_p{name}": float(np.percentile(kl, q)) for name, q in (("90", 90), ("95", 95), ("99", 99),
                                                                         ("999", 99.9))},
        "kl_div_max": float(kl.max()),
        "delta_p_mean": dp_mean, "delta_p_mean_err": dp_err, "delta_p_rms": rms, "delta_p_rms_err": rms_err,
        "same_top_p": same_p, "same_top_p_err": math.sqrt(same_p * (1 - same_p) / (n - 1)) if n > 1 else math.nan,
        "top1_agreement": same_p,
        "ln_ppl_ratio_mean": ln_ratio, "ln_ppl_ratio_err": ln_ratio_err,
        "ln_ppl_correlation": _correlation(nll_q, nll_b),
        "perplexity": ppl, "baseline_perplexity": ppl_base, "ppl_ratio": ppl / ppl_base,
        "fidelity_positions": float(n),
    }


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if np.array_equal(a, b):
        return 1.0
    if a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.clip(np.corrcoef(a, b)[0, 1], -1.0, 1.0))


def fidelity(variant_dir: Path, baseline_dir: Path, items: list[dict[str, str]], top_k: int = TOP_K,
             progress: Callable[[int, int], None] = lambda done, total: None) -> tuple[dict[str, float], list[dict]]:
    """Fidelity of variant_dir to baseline_dir on the eval items, the baseline teacher-forced here and now."""
    variant, baseline = LogitModel(variant_dir), LogitModel(baseline_dir)
    context = min(c for c in (variant.context_length, baseline.context_length, 10**9) if c)
    sequences = render_sequences(baseline_dir, items, baseline.eos_token_id, context)
    return compare_to_baseline(variant, BaselineStore.compute(baseline, sequences, top_k), progress)
