"""Each variant's distance to the machine's limits, on the 494M-parameter Qwen2.5-0.5B-shaped model: one sweep
(fp32, int8, int8 with its LM head in fp32, int4 block 32, int4 block 128, and int4 block 128 with the embedding
sharing its 4-bit or 8-bit LM head; profile quick, no fidelity, nothing promoted), once per thread count Foundry
Local decodes with (`foundry.intra_op_threads`; the second sweep reuses the builds and measures again), and from
its reports the bytes of weights a decode step reads, the decode speed, the bandwidth achieved and its shares of this
machine's memory roof and of each variant's kernel roof on those threads (slmops.roofline, measured once per machine
by the sweep).

    .venv/bin/python benchmarks/roofline.py --threads 1 2    # ~12 min on 2 cores, ~9 GB on disk

Writes benchmarks/results/roofline-qwen2.5-0.5b-shape.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from runtime_variants import sweep_in  # noqa: E402
from sweep_vs_manual import DEMO_VARIANTS, make_qwen_shaped_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# the demo's variants; int8 with its LM head left in fp32 (what int8 was before the head was quantized); and int4
# whose embedding reads the LM head's quantized weight (4-bit head, 8-bit head)
VARIANTS = [*DEMO_VARIANTS,
            {"name": "int8-fp32-head", "precision": "int8", "nodes_to_exclude": ["/lm_head/MatMul"]},
            {"name": "int4-b128-shared", "precision": "int4", "block_size": 128, "symmetric": True,
             "algorithm": "rtn", "shared_embeddings": True},
            {"name": "int4-b128-shared8", "precision": "int4", "block_size": 128, "symmetric": True,
             "algorithm": "rtn_last", "shared_embeddings": True}]
COLUMNS = ("bytes_per_token", "decode_tokens_per_s", "decode_tokens_per_s_ci95_low", "decode_tokens_per_s_ci95_high",
           "achieved_gb_per_s", "bandwidth_share", "kernel_share")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".slmops" / "roofline-bench")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="foundry.intra_op_threads of each sweep (default: 1 2)")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    source = make_qwen_shaped_model(work / "qwen2.5-0.5b-shape")
    result: dict = {"model": "qwen2.5-0.5b-shape (494M parameters, random weights)", "sweeps": {}}
    for threads in args.threads:
        started = time.monotonic()
        report = sweep_in(work, {"model": {"path": str(source), "name": "roofline-qwen-shape"}, "variants": VARIANTS,
                                 "foundry": {"intra_op_threads": threads},
                                 "evaluation": {"profile": "quick", "fidelity": False, "reuse": False},
                                 "promotion": {"enabled": False}})
        result["roofline"] = report.get("roofline")
        result["sweeps"][threads] = {
            "sweep_s": round(time.monotonic() - started, 1),
            "variants": {v["name"]: {"size_bytes": v["size_bytes"], **{c: v["metrics"].get(c) for c in COLUMNS}}
                         for v in report["variants"]}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "roofline-qwen2.5-0.5b-shape.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["| variant | threads | size MB (of fp32) | bytes per token (MB) | decode tok/s [95 % interval] | "
             "achieved GB/s | memory roof share | kernel roof share |", "|---|---|---|---|---|---|---|---|"]
    for threads, sweep in result["sweeps"].items():
        fp32_size = sweep["variants"]["fp32"]["size_bytes"]
        for name, v in sweep["variants"].items():
            lines.append(f"| {name} | {threads} | {v['size_bytes'] / 1e6:.1f} ({v['size_bytes'] / fp32_size:.3f}x) | "
                         f"{v['bytes_per_token'] / 1e6:.1f} | {_speed(v)} | {_fmt(v['achieved_gb_per_s'], 2)} | "
                         f"{_fmt(v['bandwidth_share'], 3)} | {_fmt(v['kernel_share'], 3)} |")
    roofs = result["roofline"] or {}
    memory = roofs.get("memory", {})
    lines += ["", f"Memory roof: {memory.get('gb_per_s')} GB/s ({memory.get('how')})."]
    lines += [f"Kernel roof {key}: {k['gb_per_s']} GB/s ({k['how']})."
              for key, k in roofs.get("kernels", {}).items() if k]
    (RESULTS / "roofline-qwen2.5-0.5b-shape.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _speed(v: dict) -> str:
    if v["decode_tokens_per_s"] is None:
        return "-"
    return (f"{v['decode_tokens_per_s']:.2f} [{v['decode_tokens_per_s_ci95_low']:.2f}, "
            f"{v['decode_tokens_per_s_ci95_high']:.2f}]")


if __name__ == "__main__":
    sys.exit(main())
