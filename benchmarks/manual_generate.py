"""The manual route's benchmark process: load one variant folder with onnxruntime-genai and time a fixed greedy
generation, as a tutorial user's own script would. One process per variant, like running it by hand.

    python benchmarks/manual_generate.py VARIANT_DIR --eval eval.jsonl --items 4 --new-tokens 32 --repetitions 3
    python benchmarks/manual_generate.py VARIANT_DIR --speed-json out/evaluations/int4/evaluation.json

The first form measures what the benchmark's sweep measures at the least (benchmarks/sweep_vs_manual.py): greedy
generations timed at three prompt lengths (one warm-up, then the repetitions), and the exact-match share of the
first eval items. The second times the prompts the project's harness timed (same prompt tokens, same number of
new tokens), for the harness-versus-plain-loop comparison. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def _answer(og, model, tokenizer, chat, prompt: str, new_tokens: int) -> str:
    from slmops.adapters.genai import greedy

    return tokenizer.decode(greedy(og, model, list(tokenizer.encode(_render(chat, prompt))), new_tokens))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--eval", type=Path, help="eval.jsonl of {prompt, reference}")
    parser.add_argument("--items", type=int, default=4, help="eval items answered for exact match")
    parser.add_argument("--prompt-lengths", default="16,64,160", help="prompt lengths in tokens, comma-separated")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--speed-json", type=Path, help="an evaluation.json whose speed prompts are timed instead")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    chat = AutoTokenizer.from_pretrained(str(args.model_dir))
    model = og.Model(str(args.model_dir))
    tokenizer = og.Tokenizer(model)
    loaded_s = time.perf_counter() - started
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
        greedy_decode_rate(og, model, input_ids, min(new_tokens, 4))  # warm-up
        for _ in range(args.repetitions):
            runs.append({"prompt_tokens": len(input_ids), **greedy_decode_rate(og, model, input_ids, new_tokens)})
    exact = None
    if args.eval:
        items = rows[:args.items]
        answers = [_answer(og, model, tokenizer, chat, row["prompt"], args.new_tokens) for row in items]
        exact = sum(a.strip() == row["reference"].strip() for a, row in zip(answers, items)) / len(items)
    rates = [r["decode_tokens_per_s"] for r in runs if r["decode_tokens_per_s"]]
    print(json.dumps({"model_dir": str(args.model_dir), "load_s": round(loaded_s, 3), "exact_match": exact,
                      "decode_tokens_per_s": statistics.median(rates) if rates else None,
                      "first_token_s": statistics.median(r["first_token_s"] for r in runs), "runs": runs,
                      "seconds": round(time.perf_counter() - started, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
