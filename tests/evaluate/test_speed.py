"""Honest numbers: the decode speed the harness reports through Foundry Local is close to a plain onnxruntime-genai
greedy loop timed on the same variant, prompts and number of tokens, and it is timed from the stream.

    .venv/bin/python -m pytest tests/evaluate/test_speed.py -q

The 10 % target is a speed target, so it is measured in benchmarks/, on the 494M model, side by side in one run:
harness/loop 0.99-1.09 (benchmarks/sweep_vs_manual.py) and harness/benchmark_e2e.py 1.01-1.08
(benchmarks/yardstick.py); docs/benchmarks.md. Here, on a random 8-layer model of width 1024 (about 12-15 ms a
token), the median ratio must be within 25 % of 1: that catches a harness wrong by a quarter or more (decode timed
over the wrong span, set-up or prefill counted in it) without failing on what this model and machine add. In
full test runs the harness has measured 0.82-0.87 of the loop here, in a test alone 0.93-0.98; the loop's own speed
differs by up to 20 % from one load of a model to the next. Loop and harness are interleaved (loop, harness, loop,
..., loop) and each harness run is compared with the loops just before and after it. The demo model makes a token
in 0.15 ms, too fast for either.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from slmops.evaluate.runner import evaluate_variant
from slmops.evaluate.settings import EvaluationSpec

ROUNDS = 4
LOOP_REPEATS = 3
SETTINGS = EvaluationSpec(
    max_new_tokens=64, repetitions=3, warmup=1, prompt_lengths=(16, 64, 160), leak_generations=4, max_eval_items=1,
    edge_cases=("empty",), fidelity=False,
)


def plain_genai_decode_rates(model_dir: Path, by_length: dict[str, dict], repeats: int) -> list[float]:
    """(n - 1) / (t_last - t_first) of an onnxruntime-genai greedy loop, for each prompt the harness timed."""
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    chat_template = AutoTokenizer.from_pretrained(str(model_dir))
    model = og.Model(str(model_dir))
    tokenizer = og.Tokenizer(model)
    rates = []
    for row in by_length.values():
        text = chat_template.apply_chat_template([{"role": "user", "content": row["prompt"]}],
                                                 add_generation_prompt=True, tokenize=False)
        input_ids = tokenizer.encode(text)
        # the same prompt tokens as Foundry Local counted, and the same number of new tokens
        assert len(input_ids) == row["prompt_tokens"]
        n = row["answer_tokens"]
        for _ in range(repeats):
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=len(input_ids) + n, do_sample=False)
            generator = og.Generator(model, params)
            generator.append_tokens(input_ids)
            stamps = []
            while not generator.is_done() and len(stamps) < n:
                generator.generate_next_token()
                generator.get_next_tokens()
                stamps.append(time.perf_counter())
            rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    return rates


def test_harness_decode_speed_is_close_to_a_plain_genai_loop_and_timed_from_the_stream(speed_variant, eval_foundry, tmp_path):
    folder, model_id = speed_variant
    dataset = tmp_path / "eval.jsonl"
    dataset.write_text('{"prompt": "hello world, the quick brown fox", "reference": "jumps over the lazy dog"}\n')
    harness, loops, ratios = [], [], []
    for round_ in range(ROUNDS):
        result = evaluate_variant(folder, model_id, eval_foundry.cache_dir, SETTINGS, dataset,
                                  tmp_path / f"round-{round_}")
        by_length = result["details"]["speed_by_length"]
        # every prompt got its full budget, so both sides time the same 64 tokens
        assert [row["answer_tokens"] for row in by_length.values()] == [SETTINGS.max_new_tokens] * 3
        if not loops:
            loops.append(statistics.median(plain_genai_decode_rates(folder, by_length, LOOP_REPEATS)))
        assert result["metrics"]["decode_timing_resolved"] == 1.0
        assert result["metrics"]["decode_timed_by_stream"] == 1.0, "a few ms a token: timed from the stream"
        harness.append(result["metrics"]["decode_tokens_per_s"])
        loops.append(statistics.median(plain_genai_decode_rates(folder, by_length, LOOP_REPEATS)))
        # each harness run against the loops timed just before and after it: the machine's load then was alike
        ratios.append(harness[-1] / statistics.mean(loops[-2:]))
    assert statistics.median(ratios) == pytest.approx(1.0, abs=0.25), (
        f"harness {harness} tokens/s, plain loop {loops}, ratios {ratios}"
    )


def test_the_tokenizers_prompt_length_is_the_runtimes_count(speed_variant, demo_variants, registered_demo,
                                                             eval_foundry, demo_eval_set):
    """Speed prompts are sized with the model's tokenizer and chat template, not by asking the runtime: the count
    must be the one Foundry Local reports for the same prompt."""
    from slmops.evalset import load_eval_set
    from slmops.evaluate.speed import build_length_prompts
    from slmops.evaluate.worker import Variant

    prompts = [item["prompt"] for item in load_eval_set(demo_eval_set, 20)]
    for folder, model_id in ((demo_variants["int4-b32"], registered_demo["int4-b32"]), speed_variant):
        variant = Variant({"settings": SETTINGS.model_dump(mode="json"), "variant_dir": str(folder),
                           "model_id": model_id, "foundry_cache": str(eval_foundry.cache_dir)})
        count = variant.token_counter()
        for length in build_length_prompts(count, prompts, (16, 64, 160), variant.context - 32):
            reported = eval_foundry.smoke_test(model_id, length.prompt, max_tokens=1)["prompt_tokens"]
            assert length.prompt_tokens == reported, (folder.name, length.target)
