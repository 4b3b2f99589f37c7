"""The variants that benchmarks/runtime_overhead.py and benchmarks/yardstick.py time: the 494M-parameter
Qwen2.5-0.5B-shaped model (random weights) swept into fp32, int8, int4 block 32 and int4 block 128, registered with
Foundry Local, nothing measured or promoted.

    .venv/bin/python benchmarks/runtime_variants.py --work .slmops/rt      # ~15 min on 2 cores, ~9 GB on disk

Writes, under --work: the source model (qwen2.5-0.5b-shape/, 2 GB, made once), spec.yaml, the sweep's output
(out/report.json: each variant's onnx_dir and foundry_model_id) and its Foundry Local cache (home/foundry). Run it
again and the sweep finds everything cached. The model is the one benchmarks/sweep_vs_manual.py makes (same shape,
same recipe: the demo's tokenizer and eval set, embedding rows zeroed past the tokenizer's tokens and for the tokens
that are no whole character, so that every greedy token streams a text piece), made by that script's function.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from sweep_vs_manual import DEMO_VARIANTS, make_qwen_shaped_model  # noqa: E402

# the variants of the project's benchmarks (configs/demo.yaml)
VARIANTS = DEMO_VARIANTS
MODEL_NAME = "rt-qwen-shape"


make_model = make_qwen_shaped_model


def sweep_in(work: Path, spec: dict) -> dict:
    """`slmops sweep` of spec in a work folder of its own (work/home: its MLflow store, Prefect home and Foundry Local
    cache; work/out: its output), never the caller's servers; returns its report.json."""
    (work / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    home = work / "home"
    env = {**os.environ, "SLMOPS_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
           "SLMOPS_FOUNDRY_CACHE": str(home / "foundry")}
    for var in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    subprocess.run([str(BIN / "slmops"), "sweep", str(work / "spec.yaml"), "--out", str(work / "out")], env=env,
                   check=True)
    return json.loads((work / "out" / "report.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".slmops" / "rt",
                        help="scratch folder (default .slmops/rt)")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    source = make_model(work / "qwen2.5-0.5b-shape")
    report = sweep_in(work, {"model": {"path": str(source), "name": MODEL_NAME}, "variants": VARIANTS,
                             "evaluation": {"enabled": False}, "promotion": {"enabled": False}})
    for v in report["variants"]:
        print(f"{v['name']}: {v['status']} {v.get('foundry_model_id')} {v.get('onnx_dir')}")
    return 0 if all(v["status"] == "succeeded" for v in report["variants"]) else 1


if __name__ == "__main__":
    sys.exit(main())
