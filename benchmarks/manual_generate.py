"""The manual route's benchmark process: load one variant folder with onnxruntime-genai and measure what the
deployment tutorial's checklist names, as a tutorial user's own script would. One process per variant, by hand.

    python benchmarks/manual_generate.py VARIANT_DIR --eval eval.jsonl --items 16 --new-tokens 32 --repetitions 5
    python benchmarks/manual_generate.py VARIANT_DIR --speed-json out/evaluations/int4/evaluation.json

The first form measures what `evaluation: {profile: quick}` measures (benchmarks/sweep_vs_manual.py compares them):
greedy generations timed at three prompt lengths (one warm-up each, then the repetitions: time to first token and
decode tokens/s), the process's resident memory after load and at its peak, its CPU use while generating, the
answers to the first eval items (exact match, and whether each finished within the token budget) with the resident
memory followed after each one (the leak check), and the five edge cases (empty, whitespace only, longer than the
context, non-ASCII and emoji, control characters: answered or refused cleanly). The second times the prompts the
project's harness timed (same prompt tokens, same number of new tokens), for the harness-versus-plain-loop
comparison. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EDGE_INPUTS = {"empty": "", "whitespace": " \n\t  \n", "non_ascii": "Größe? 日本語で。Привет! 🤖🎉",
               "control_chars": "What colour\x07 is\x1b[31m the\r\n\t lamp?\x7f"}


def greedy_decode_rate(og, model, input_ids: list[int], new_tokens: int) -> dict:
    """One greedy generation: seconds to the first new token, and (n - 1) / (t_last - t_first) after it."""
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(input_ids) + new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    started = time.perf_counter()
    generator.append_tokens(input_ids)
    stamps = []
    while not generator.is_done() and len(stamps) < new_tokens:
        generator.generate_next_token()
        generator.get_next_tokens()
        stamps.append(time.perf_counter())
    return {"first_token_s": stamps[0] - started, "tokens": len(stamps),
            "decode_tokens_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None}


def _prompt_of_length(chat, tokenizer, text: str, tokens: int) -> str:
    """The eval prompt repeated until the chat-rendered prompt is about ``tokens`` long."""
    prompt = text
    while len(tokenizer.encode(_render(chat, prompt + " " + text))) <= tokens:
        prompt += " " + text
    return prompt


def _render(chat, prompt: str) -> str:
    return chat.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)


def _answer(og, model, tokenizer, chat, prompt: str, new_tokens: int) -> tuple[str, int]:
    from slmops.adapters.genai import greedy

    ids = greedy(og, model, list(tokenizer.encode(_render(chat, prompt))), new_tokens)
    return tokenizer.decode(ids), len(ids)


def _edge_cases(og, model, tokenizer, chat, context: int, new_tokens: int) -> dict[str, bool]:
    """Each edge input answered or refused with an error, and a normal request answered afterwards."""
    inputs = {**EDGE_INPUTS, "too_long": "Please read this sentence carefully. " * max(64, context)}
    passed = {}
    for case, text in inputs.items():
        try:
            _answer(og, model, tokenizer, chat, text, min(new_tokens, 16))
        except Exception:  # noqa: BLE001 (a clean refusal by the runtime, whatever its type)
            pass
        try:
            passed[case] = bool(_answer(og, model, tokenizer, chat, "Hello", 4)[1])
        except Exception:  # noqa: BLE001
            passed[case] = False
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--eval", type=Path, help="eval.jsonl of {prompt, reference}")
    parser.add_argument("--items", type=int, default=16, help="eval items answered (exact match, leak check)")
    parser.add_argument("--prompt-lengths", default="16,64,160", help="prompt lengths in tokens, comma-separated")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--speed-json", type=Path, help="an evaluation.json whose speed prompts are timed instead")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    process = psutil.Process()
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    chat = AutoTokenizer.from_pretrained(str(args.model_dir))
    model = og.Model(str(args.model_dir))
    tokenizer = og.Tokenizer(model)
    loaded_s = time.perf_counter() - started
    rss_after_load = process.memory_info().rss / 2**20
    cpu0, wall0 = sum(process.cpu_times()[:2]), time.perf_counter()
    if args.speed_json:
        rows = json.loads(args.speed_json.read_text())["details"]["speed_by_length"].values()
        jobs = [(row["prompt"], row["answer_tokens"], row["prompt_tokens"]) for row in rows]
    else:
        rows = [json.loads(line) for line in args.eval.read_text().splitlines() if line.strip()]
        jobs = [(_prompt_of_length(chat, tokenizer, rows[0]["prompt"], int(n)), args.new_tokens, None)
                for n in args.prompt_lengths.split(",")]
    runs = []
    for prompt, new_tokens, expected_tokens in jobs:
        input_ids = list(tokenizer.encode(_render(chat, prompt)))
        if expected_tokens is not None and len(input_ids) != expected_tokens:
            print(f"prompt is {len(input_ids)} tokens here, {expected_tokens} in the harness", file=sys.stderr)
            return 1
        greedy_decode_rate(og, model, input_ids, new_tokens)  # warm-up
        for _ in range(args.repetitions):
            runs.append({"prompt_tokens": len(input_ids), **greedy_decode_rate(og, model, input_ids, new_tokens)})
    quality = None
    if args.eval and not args.speed_json:
        items, followed, exact, finished = rows[:args.items], [], 0, 0
        for row in items:
            answer, tokens = _answer(og, model, tokenizer, chat, row["prompt"], args.new_tokens)
            exact += answer.strip() == row["reference"].strip()
            finished += tokens < args.new_tokens
            followed.append(process.memory_info().rss / 2**20)
        k = max(1, len(followed) // 10)
        from slmops.adapters.genai import context_length

        edge = _edge_cases(og, model, tokenizer, chat, context_length(args.model_dir) or 4096, args.new_tokens)
        quality = {"exact_match": exact / len(items), "format_ok": finished / len(items),
                   "rss_growth_mb": statistics.median(followed[-k:]) - statistics.median(followed[:k]),
                   "edge_cases_passed": sum(edge.values()) / len(edge)}
    cpu_percent = 100 * (sum(process.cpu_times()[:2]) - cpu0) / (time.perf_counter() - wall0)
    peak = next((int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")),
                None)
    rates = [r["decode_tokens_per_s"] for r in runs if r["decode_tokens_per_s"]]
    print(json.dumps({"model_dir": str(args.model_dir), "load_s": round(loaded_s, 3),
                      "decode_tokens_per_s": statistics.median(rates) if rates else None,
                      "first_token_s": statistics.median(r["first_token_s"] for r in runs),
                      "rss_after_load_mb": round(rss_after_load, 1), "peak_rss_mb": peak,
                      "cpu_percent": round(cpu_percent, 1), **(quality or {}), "runs": runs,
                      "seconds": round(time.perf_counter() - started, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
