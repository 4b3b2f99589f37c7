"""Memory and first-request time of one variant in Foundry Local, per genai_config.json setting: each registration
(the variant as built, and the tuned ones benchmarks/runtime_overhead.py registered) in a fresh process of its own,
so that nothing another model left behind is counted.

    .venv/bin/python benchmarks/foundry_memory.py --work .slmops/rt --variant int4-b128     # ~2 min

Per registration: RSS after load, then a few requests (one token, then --new-tokens, at each prompt length, as the
harness sends them), with the RSS after each and the process's peak (VmHWM); and the one-token request times.
Foundry Local 2.2.1 sizes each request's generator for genai_config.json's model.context_length, so the KV cache
(2 x layers x kv heads x context x head size x 4 bytes: 805 MB for Qwen2.5-0.5B's shape at 32768) is what the
default registration adds. Writes benchmarks/results/foundry-memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(x for x in status if x.startswith("VmHWM:")).split()[1]) / 1024


def measure(cache: Path, model_id: str, prompts: list[str], new_tokens: int, rounds: int) -> dict:
    """In this process: load the registration, send the requests, report memory and one-token request times."""
    from slmops.adapters.foundry import FoundryLocal
    from slmops.evaluate.speed import time_stream

    foundry = FoundryLocal(cache)
    before = rss_mb()
    foundry.load(model_id)
    loaded = rss_mb()
    after, one_ms = [], []
    for _ in range(rounds):
        for prompt in prompts:
            for n in (1, new_tokens):
                timing = time_stream(lambda p, k: foundry.chat_stream(model_id, p, max_tokens=k, temperature=0.0),
                                     prompt, n)
                if n == 1:
                    one_ms.append(timing.end_s * 1000)
                after.append(rss_mb())
    foundry.unload(model_id)
    return {"model_id": model_id, "rss_before_load_mb": round(before), "rss_after_load_mb": round(loaded),
            "rss_after_requests_mb": [round(x) for x in after], "peak_rss_mb": round(peak_mb()),
            "added_by_requests_mb": round(max(after) - loaded), "one_token_request_ms": [round(x) for x in one_ms],
            "one_token_request_ms_median": round(statistics.median(one_ms)),
            "one_token_request_ms_last_round": round(statistics.median(one_ms[-len(prompts):]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".slmops" / "rt")
    parser.add_argument("--variant", default="int4-b128")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the prompt lengths")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "foundry-memory.json")
    parser.add_argument("--one", nargs=2, metavar=("MODEL_ID", "PROMPTS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = args.work.resolve()
    cache = work / "home" / "foundry"
    if args.one:
        prompts = json.loads(Path(args.one[1]).read_text())
        print(json.dumps(measure(cache, args.one[0], prompts, args.new_tokens, args.rounds)))
        return 0

    # the registrations and prompts of the last runtime_overhead.py run
    overhead = json.loads((ROOT / "benchmarks" / "results" / "runtime-overhead.json").read_text())
    report = json.loads((work / "out" / "report.json").read_text())
    default = next(v["foundry_model_id"] for v in report["variants"] if v["name"] == args.variant)
    ids = {"as built (context_length 32768, shared buffer)": default,
           **{route.removeprefix("foundry stream "): model_id
              for route, model_id in overhead["tuned_registrations"][args.variant].items()}}
    prompts_file = work / f"memory-prompts-{args.variant}.json"
    prompts_file.write_text(json.dumps([p["text"] for p in overhead["prompts"][args.variant]]))
    results = {}
    for label, model_id in ids.items():
        proc = subprocess.run([sys.executable, __file__, "--work", str(work), "--new-tokens", str(args.new_tokens),
                               "--rounds", str(args.rounds), "--one", model_id, str(prompts_file)],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"{model_id}: {proc.stderr[-2000:]}")
        results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[label]
        print(f"{label:50} load {r['rss_after_load_mb'] - r['rss_before_load_mb']:>5} MB, requests add "
              f"{r['added_by_requests_mb']:>5} MB, peak {r['peak_rss_mb']:>5} MB, one-token request "
              f"{r['one_token_request_ms_median']} ms")
    doc = {"variant": args.variant, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "load_average": [round(x, 2) for x in os.getloadavg()], "new_tokens": args.new_tokens,
           "rounds": args.rounds, "prompt_lengths_tokens": [p["tokens_hf"] for p in overhead["prompts"][args.variant]],
           "registrations": results}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
