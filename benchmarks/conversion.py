"""Conversion only: the manual route's `olive run` calls against a cold `slmops sweep` that converts and measures
nothing else (evaluation, Foundry Local and promotion off), routes alternating, on the same four variants.

    python benchmarks/conversion.py --model qwen2.5-0.5b-shape --repetitions 3
    python benchmarks/conversion.py --model qwen2.5-0.5b-shape --code /tmp/before --label before   # another checkout

Reported per repetition: the manual route's seconds per `olive run` (each a fresh process, as by hand), the
sweep's conversion phase (report.json ``timings.convert``: the export and every variant, with their checks) and
its split by step (the manifests' ``steps``: build, check, load, publish). ``--code`` runs the sweep from another
checkout of the project (the same .venv), to compare a change against what came before in one run.
Writes benchmarks/results/<model>-conversion.json and prints a table.
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import sweep_vs_manual as bench  # noqa: E402

OFF = {"evaluation": {"enabled": False}, "foundry": {"enabled": False}, "promotion": {"enabled": False}}


def manual_conversion(source: Path, folder: Path) -> dict[str, float]:
    """One `olive run` per variant, each a fresh process; seconds per variant."""
    folder.mkdir(parents=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CI": "1"}  # CI: see bench.run_manual
    seconds = {}
    for variant in bench.DEMO_VARIANTS:
        name, out = variant["name"], folder / variant["name"]
        config_file = folder / f"{name}.json"
        config_file.write_text(json.dumps(bench.manual_config(variant, source, out, folder / "olive-cache")))
        started = time.perf_counter()
        bench._check_call([str(bench.BIN / "olive"), "run", "--config", str(config_file)], env,
                          folder / f"{name}.olive.log")
        if not (out / "genai_config.json").is_file():
            bench.olive.complete_from(folder / "fp32", out)
        bench.olive.restore_logits(out)  # by hand, as in bench.run_manual
        seconds[name] = round(time.perf_counter() - started, 2)
    return seconds


def sweep_conversion(source: Path, folder: Path, code: Path) -> dict:
    """A cold `slmops sweep` of the four variants with nothing but conversion on, from the checkout ``code``."""
    folder.mkdir(parents=True)
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump({"model": {"path": str(source), "name": "bench-conv"},
                                    "variants": bench.DEMO_VARIANTS, **OFF}, sort_keys=False))
    home, out = folder / "home", folder / "out"
    env = {**os.environ, "SLMOPS_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
           "SLMOPS_FOUNDRY_CACHE": str(home / "foundry"), "PYTHONPATH": str(code)}
    for var in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "slmops.cli", "sweep", str(spec), "--out", str(out)], env=env,
                          cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (folder / "sweep.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"sweep from {code} exited {proc.returncode}; see {folder}/sweep.log")
    report = json.loads((out / "report.json").read_text())
    steps = {}
    for manifest in [*(home / "exports").glob("*/slmops_variant.json"), *(out / "variants").glob("*/slmops_variant.json")]:
        doc = json.loads(manifest.read_text())
        name = "export" if doc["kind"] == "fp32-export" else manifest.parent.name
        steps[name] = {"seconds": doc["seconds"], **(doc.get("steps") or {})}
    return {"wall_s": round(wall, 2), "convert_s": report["timings"]["convert"], "steps": steps,
            "statuses": {v["name"]: v["status"] for v in report["variants"]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="conversion: manual `olive run` calls against a cold sweep")
    parser.add_argument("--model", choices=bench.MODELS, required=True)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--code", type=Path, action="append", default=[],
                        help="a checkout to sweep from (repeatable; default: this one)")
    parser.add_argument("--label", action="append", default=[], help="a name for each --code")
    parser.add_argument("--work", type=Path, default=ROOT / ".slmops" / "bench")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    codes = [c.resolve() for c in args.code] or [ROOT]
    labels = args.label or [f"sweep{i}" if len(codes) > 1 else "sweep" for i in range(len(codes))]
    source = bench.source_model(args.model, args.work, args.model_dir)
    run_dir = args.work / f"conversion-{time.strftime('%Y%m%d-%H%M%S')}"
    runs = []
    for rep in range(args.repetitions):
        routes = ["manual", *labels]
        routes = routes if rep % 2 == 0 else routes[::-1]  # alternate, so a drift in load falls on every route
        result = {}
        for route in routes:
            folder = run_dir / f"rep-{rep}" / route
            bench.log(f"repetition {rep + 1}/{args.repetitions}: {route}")
            if route == "manual":
                result[route] = manual_conversion(source, folder)
            else:
                result[route] = sweep_conversion(source, folder, codes[labels.index(route)])
            subprocess.run(["rm", "-rf", str(folder)], check=False)  # gigabytes a route
        bench.log("  " + json.dumps({k: v if k == "manual" else v["convert_s"] for k, v in result.items()}))
        runs.append(result)
    doc = {"model": args.model, "machine": bench.machine(), "runs": runs,
           "manual_convert_s": spread([sum(r["manual"].values()) for r in runs]),
           **{f"{label}_convert_s": spread([r[label]["convert_s"] for r in runs]) for label in labels}}
    for label in labels:
        doc[f"manual_over_{label}"] = round(doc["manual_convert_s"]["median"] / doc[f"{label}_convert_s"]["median"], 2)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.model}-conversion.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k not in ("runs", "machine")}, indent=2))
    return 0


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "runs": [round(v, 2) for v in values]}


if __name__ == "__main__":
    sys.exit(main())
