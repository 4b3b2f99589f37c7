"""GPTQ against RTN at the same block size and symmetry, on the demo model: fidelity to fp32 (llama.cpp's KL and
same-top-p statistics over every eval row not held out for calibration) and build time, side by side in one sweep
per calibration seed (the seeds change which rows calibrate and which are measured).

    .venv/bin/python benchmarks/gptq.py --seeds 0 1 2          # ~3 min on 2 cores

Writes benchmarks/results/gptq-demo.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from runtime_variants import sweep_in  # noqa: E402

from slmops.demo.model import make_demo_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PAIRS = [(32, False), (32, True), (64, True)]  # (block size, symmetric): every size GPTQ takes on hidden size 192
VARIANTS = [{"name": "fp32", "precision": "fp32"}] + [
    {"name": f"{method}-b{block}-{'sym' if sym else 'asym'}", "precision": "int4", "block_size": block,
     "symmetric": sym, **({"method": "gptq"} if method == "gptq" else {})}
    for block, sym in PAIRS for method in ("rtn", "gptq")]
COLUMNS = ("kl_div_mean", "kl_div_mean_err", "kl_div_p99", "same_top_p", "same_top_p_err", "exact_match",
           "build_seconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".slmops" / "gptq-bench")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    work = args.work.resolve()
    model = work / "demo-model"
    if not (model / "config.json").is_file():
        make_demo_model(model)
    runs = {}
    for seed in args.seeds:
        run = work / f"seed-{seed}"
        shutil.rmtree(run / "out", ignore_errors=True)
        run.mkdir(parents=True, exist_ok=True)
        report = sweep_in(run, {"model": {"path": str(model), "name": "gptq-bench"}, "variants": VARIANTS,
                                "calibration": {"seed": seed},
                                "evaluation": {"profile": "quick", "fidelity": True, "max_eval_items": None,
                                               "reuse": False},
                                "promotion": {"enabled": False}})
        runs[seed] = {"calibration": report["calibration"],
                      "variants": {v["name"]: {c: v["metrics"].get(c) for c in COLUMNS} for v in report["variants"]}}
    result = {"model": "the demo model (4 layers, hidden size 192; slmops.demo.model)", "seeds": args.seeds,
              "runs": runs, "gptq_over_rtn_kl": {}}
    lines = [f"Calibration: {runs[args.seeds[0]]['calibration']['note']} (seeds {', '.join(map(str, args.seeds))}).",
             "", "| pair | seed | RTN KL mean ± err | GPTQ KL mean ± err | GPTQ/RTN | RTN same top p | "
             "GPTQ same top p | RTN build s | GPTQ build s |", "|---|---|---|---|---|---|---|---|---|"]
    for block, sym in PAIRS:
        pair = f"b{block}-{'sym' if sym else 'asym'}"
        ratios = []
        for seed, run in runs.items():
            rtn, gptq = run["variants"][f"rtn-{pair}"], run["variants"][f"gptq-{pair}"]
            ratios.append(gptq["kl_div_mean"] / rtn["kl_div_mean"])
            lines.append(f"| {pair} | {seed} | {rtn['kl_div_mean']:.5f} ± {rtn['kl_div_mean_err']:.5f} | "
                         f"{gptq['kl_div_mean']:.5f} ± {gptq['kl_div_mean_err']:.5f} | {ratios[-1]:.2f} | "
                         f"{rtn['same_top_p']:.4f} | {gptq['same_top_p']:.4f} | {rtn['build_seconds']:.2f} | "
                         f"{gptq['build_seconds']:.2f} |")
        result["gptq_over_rtn_kl"][pair] = {"median": round(statistics.median(ratios), 3),
                                            "max": round(max(ratios), 3)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gptq-demo.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "gptq-demo.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
