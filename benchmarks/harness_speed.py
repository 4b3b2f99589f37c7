"""Decode speed of one registered variant through the project's harness: slmops.evaluate.speed over Foundry Local's
streaming API, as a sweep's evaluation measures it, on the speed prompts an evaluation.json recorded. The
counterpart of `manual_generate.py --speed-json` (a plain onnxruntime-genai loop on the same prompts).

    python benchmarks/harness_speed.py --model-id bench-demo-shop-int4-b32:1 --foundry-cache DIR \\
        --speed-json out/evaluations/int4-b32/evaluation.json

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--foundry-cache", type=Path, required=True)
    parser.add_argument("--speed-json", type=Path, required=True)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args(argv)

    from slmops.evaluate import speed
    from slmops.evaluate.worker import Variant

    evaluation = json.loads(args.speed_json.read_text())
    rows = evaluation["details"]["speed_by_length"]
    prompts = [speed.LengthPrompt(int(target), row["prompt"], row["prompt_tokens"], row["clipped"])
               for target, row in rows.items()]
    variant = Variant({"settings": evaluation["settings"], "variant_dir": evaluation["variant_dir"],
                       "model_id": args.model_id, "foundry_cache": str(args.foundry_cache)})
    started = time.perf_counter()
    with variant.loaded():
        runs = speed.measure_speed(variant.chat, prompts, evaluation["settings"]["max_new_tokens"], warmup=1,
                                   min_repetitions=args.repetitions, repetitions=args.repetitions, ci_target=0.0,
                                   progress=lambda done, total: None)
    metrics, per_length = speed.summarise_speed(runs)
    print(json.dumps({"model_id": args.model_id, "decode_tokens_per_s": metrics["decode_tokens_per_s"],
                      "by_length": {k: v["decode_tokens_per_s"]["p50"] for k, v in per_length.items()},
                      "seconds": round(time.perf_counter() - started, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
