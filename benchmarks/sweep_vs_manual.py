"""The sweep against the tutorial's manual route, on the same machine, in one run, routes alternating.

    python benchmarks/sweep_vs_manual.py --model demo                 # the demo model (a few minutes)
    python benchmarks/sweep_vs_manual.py --model qwen2.5-0.5b-shape  # 494M parameters, random weights (~1 hour)

Routes, for the same four variants (fp32, int8, int4 block 32, int4 block 128 -- the demo sweep's):

* manual: what a user of the tutorial does by hand. One `olive run --config VARIANT.json` per variant (its own
  process, paying Olive's start-up and the fp32 export again each time), then one benchmark process per variant
  (benchmarks/manual_generate.py) measuring what `evaluation: {profile: quick}` measures, with onnxruntime-genai:
  speed at three prompt lengths, memory, CPU, the answers to 16 eval items with the memory followed across them,
  the five edge cases.
* cold: `slmops sweep` with empty caches (a new work folder, Prefect home, Foundry Local cache and output folder)
  and the default evaluation profile (standard): export once, derive the variants, check, register with Foundry
  Local, smoke-test, evaluate (speed, memory, quality, the leak check, edge cases, fidelity against the fp32
  baseline), log to MLflow, promote.
* cold-quick: the same with `evaluation: {profile: quick}`, the manual route's measurements.
* warm: the default sweep again, nothing changed.

Each repetition runs the three routes, the manual route first in even repetitions and last in odd ones, so a drift
in the machine's load falls on both. Reported: wall time per route (median, min, max), the ratios manual/cold and
warm/cold, and the cold sweep's time by phase (report.json's ``timings``): conversion, Foundry Local and
measurement are work; the rest of the wall time -- process start, Prefect, MLflow, the report -- is orchestration.
Then, for each variant of the last cold sweep: decode tokens/s through the project's harness next to a plain
onnxruntime-genai greedy loop on the same prompts (benchmarks/manual_generate.py --speed-json).

Writes benchmarks/results/<model>.json and .md (a table). Numbers are this machine's; rerun to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slmops.adapters import olive  # noqa: E402 (the workflow configs only: Olive itself is imported by `olive run`)
from slmops.demo import DEMO_SPEC  # noqa: E402
from slmops.timing import WORK_PHASES  # noqa: E402

BIN = Path(sys.executable).parent
_DEMO = yaml.safe_load(DEMO_SPEC.read_text())
DEMO_MODEL_NAME, DEMO_VARIANTS, DEMO_PROMOTION = _DEMO["model"]["name"], _DEMO["variants"], _DEMO["promotion"]
MODELS = ("demo", "qwen2.5-0.5b-shape")
# what the cached 494M model was made as (a folder made by an earlier version is made again)
BENCH_MODEL = {"shape": "qwen2.5-0.5b", "greedy_tokens": "whole characters"}
# Qwen2.5-0.5B's shape (494M parameters with the tied embedding); the weights are random
QWEN_SHAPE = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "max_position_embeddings": 32768, "vocab_size": 151936,
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
# The manual route's benchmark process measures what profile quick measures (slmops/evaluate/settings.py): the same
# three prompt lengths and new tokens, one warm-up per length then a fixed count of timed requests (quick repeats
# 3-5 times, until its interval is tight), the same 16 eval items, the five edge cases.
QUICK = {"profile": "quick"}
TUTORIAL_MAX_LENGTH = 2048  # ../shared/TUTORIAL.md's inference_model.json, ModelConfig
MANUAL = {"items": 16, "prompt_lengths": [16, 64, 160], "new_tokens": 32, "repetitions": 5}
# profile quick measures no fidelity: its policy names none
QUICK_PROMOTION = {"constraints": [{"metric": "exact_match", "min_ratio_to_baseline": 0.98},
                                   {"metric": "edge_cases_passed", "min": 1.0}],
                   "objective": [{"metric": "size_bytes", "goal": "minimize"},
                                 {"metric": "decode_tokens_per_s", "goal": "maximize"}]}
TARGETS = {"manual_over_cold_quick_min": 1.5, "manual_over_cold_min": 1.0, "manual_over_cold_conversion_min": 3.0,
           "evaluation_share_of_cold_max": 0.40, "warm_over_cold_max": 0.05, "harness_vs_loop_tolerance": 0.10,
           "int4_over_fp32_decode_min": 3.0}


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- source models -------------------------------------------------------------------------------------------

def make_qwen_shaped_model(target: Path, seed: int = 0) -> Path:
    """A Qwen2.5-0.5B-shaped model with random weights, the demo's tokenizer and eval set (made once, ~2 GB).

    The rows of the embedding (tied to the LM head) are zero past the tokenizer's tokens, and for the tokens that are
    no whole character of their own (the 128 single bytes of multi-byte characters) and the special ones: their
    logit is then 0 against the random positive maximum of the rest, so greedy decoding makes only tokens that
    stream a text piece each, as a trained model's English answers do. Random weights choosing byte tokens make
    answers whose pieces cannot be matched to tokens, and the harness then times decode by difference, a second
    request per timed one (docs/runtime-overhead.md). The matrices keep their full size, so the speed is the real
    shape's.
    """
    marker = target / "slmops-bench-model.json"
    if marker.is_file() and json.loads(marker.read_text()) == {**BENCH_MODEL, "seed": seed}:
        return target
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from slmops.demo.model import prepare_demo_assets

    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = prepare_demo_assets(partial, seed)
    config = json.loads((partial / "config.json").read_text())
    config.update(QWEN_SHAPE)
    config.pop("layer_types", None)  # recomputed by Qwen2Config for the new layer count
    config = Qwen2Config(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    no_text = [i for i, text in enumerate(texts) if i in tokenizer.all_special_ids or not text or "\ufffd" in text]
    with torch.no_grad():
        model.model.embed_tokens.weight[len(tokenizer):] = 0.0
        model.model.embed_tokens.weight[no_text] = 0.0
    model.save_pretrained(partial, safe_serialization=True)
    (partial / marker.name).write_text(json.dumps({**BENCH_MODEL, "seed": seed}))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def source_model(name: str, cache: Path, model_dir: Path | None) -> Path:
    if model_dir:
        return model_dir.resolve()
    if name == "demo":
        from slmops.demo import ensure_demo_model

        return ensure_demo_model(cache / "demo-model")[0].resolve()
    started = time.perf_counter()
    path = make_qwen_shaped_model(cache / "qwen2.5-0.5b-shape")
    log(f"source model {path} ready in {time.perf_counter() - started:.0f} s")
    return path.resolve()


# --- the manual route ------------------------------------------------------------------------------------------

def manual_config(variant: dict, source: Path, out: Path, cache: Path) -> dict:
    """The Olive workflow a user writes for one variant (the tutorial's second method, a JSON config): ModelBuilder
    for fp32 and int4 (always from the source); for int8 the fp32 build and the 8-bit quantization chained in one
    workflow."""
    from slmops.config import VariantSpec

    v = VariantSpec(**variant).resolved()
    if v.precision == "fp32":
        return olive.export_config(source, out, cache)
    if v.method == "builder":
        return olive.builder_int4_config(
            source, out, cache, block_size=v.block_size, symmetric=v.symmetric, accuracy_level=v.accuracy_level,
            algorithm=v.algorithm, quantize_embeddings=bool(v.quantize_embeddings),
            nodes_to_exclude=list(v.nodes_to_exclude or ()))
    derived = olive.onnx_quantize_config(Path("unused"), out, cache, method=v.method, bits=v.bits,
                                         block_size=v.block_size, symmetric=v.symmetric,
                                         accuracy_level=v.accuracy_level, nodes_to_exclude=list(v.nodes_to_exclude))
    config = olive.export_config(source, out, cache)
    config["passes"] = {"builder": config["passes"]["builder"], **derived["passes"]}
    return config


def run_manual(source: Path, folder: Path) -> dict:
    """One olive CLI call and one benchmark process per variant, each a fresh process."""
    folder.mkdir(parents=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           # Olive's CI path: no start-up telemetry, whose send to an unreachable endpoint adds ~20 s at exit here
           # and would not on a connected machine
           "CI": "1"}
    started = time.perf_counter()
    variants = {}
    for variant in DEMO_VARIANTS:
        name = variant["name"]
        out = folder / name
        config_file = folder / f"{name}.json"
        config_file.write_text(json.dumps(manual_config(variant, source, out, folder / "olive-cache"), indent=2))
        t0 = time.perf_counter()
        _check_call([str(BIN / "olive"), "run", "--config", str(config_file)], env, folder / f"{name}.olive.log")
        if not (out / "model.onnx").is_file():
            raise RuntimeError(f"manual route: olive run produced no model for {name}; see {folder}/{name}.olive.log")
        # what the user does by hand after an ONNX-level pass: copy the genai config and tokenizer when its folder
        # holds only the graph, and give the LM head's renamed output its name back (a no-op for the others)
        if not (out / "genai_config.json").is_file():
            olive.complete_from(folder / "fp32", out)
        olive.restore_logits(out)
        convert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        bench = json.loads(_check_call([sys.executable, str(ROOT / "benchmarks" / "manual_generate.py"), str(out),
                                        "--eval", str(source / "eval.jsonl"), "--items", str(MANUAL["items"]),
                                        "--prompt-lengths", ",".join(map(str, MANUAL["prompt_lengths"])),
                                        "--new-tokens", str(MANUAL["new_tokens"]),
                                        "--repetitions", str(MANUAL["repetitions"])], env,
                                       folder / f"{name}.bench.log"))
        variants[name] = {"convert_s": round(convert_s, 2), "benchmark_s": round(time.perf_counter() - t0, 2),
                          **{k: bench[k] for k in ("decode_tokens_per_s", "exact_match", "peak_rss_mb",
                                                   "cpu_percent", "rss_growth_mb", "edge_cases_passed")}}
    return {"wall_s": round(time.perf_counter() - started, 2), "variants": variants}


def _check_call(cmd: list[str], env: dict, log_file: Path) -> str:
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    log_file.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}; see {log_file}")
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


# --- the sweep routes ------------------------------------------------------------------------------------------

def write_spec(path: Path, source: Path, quick: bool = False) -> Path:
    """The sweep's spec: the demo's variants and policy, Foundry Local serving the tutorial's context (its
    inference_model.json says ``"max_length": 2048``), or the model's own where that is shorter."""
    own = json.loads((source / "config.json").read_text())["max_position_embeddings"]
    spec = {"model": {"path": str(source), "name": f"bench-{DEMO_MODEL_NAME}"}, "variants": DEMO_VARIANTS,
            "foundry": {"model_config_overrides": {"max_length": min(TUTORIAL_MAX_LENGTH, own)}},
            "evaluation": QUICK if quick else {}, "promotion": QUICK_PROMOTION if quick else DEMO_PROMOTION}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_sweep(spec: Path, home: Path, out: Path) -> dict:
    """`slmops sweep` in its own process, with its own work folder, Prefect home and Foundry Local cache."""
    env = {**os.environ, "SLMOPS_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
           "SLMOPS_FOUNDRY_CACHE": str(home / "foundry")}
    for var in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)  # the embedded defaults: what a first-time user gets
    started = time.perf_counter()
    _check_call([str(BIN / "slmops"), "sweep", str(spec), "--out", str(out)], env,
                out.with_name(f"{out.name}.{int(time.time())}.log"))
    wall = time.perf_counter() - started
    doc = json.loads((out / "report.json").read_text())
    timings = doc["timings"]
    work = sum(timings[p] for p in WORK_PHASES)
    return {"wall_s": round(wall, 2), "timings": timings, "work_s": round(work, 2),
            "orchestration_s": round(wall - work, 2), "orchestration_share": round((wall - work) / wall, 4),
            "statuses": {v["name"]: v["status"] for v in doc["variants"]},
            "speed_repetitions": {v["name"]: _repetitions(out, v["name"]) for v in doc["variants"]}}


def _repetitions(out: Path, name: str) -> dict:
    """How many timed requests each prompt length took, and what stopped them."""
    evaluation = out / "evaluations" / name / "evaluation.json"
    if not evaluation.is_file():
        return {}
    rows = json.loads(evaluation.read_text())["details"]["speed_by_length"]
    return {length: [row["repetitions"], row["stopped_by"]] for length, row in rows.items()}


# --- variant speed ---------------------------------------------------------------------------------------------

def variant_speed(out: Path, foundry_cache: Path, rounds: int = 2) -> dict:
    """Decode tokens/s through the project's harness (Foundry Local streaming, benchmarks/harness_speed.py) next to a
    plain onnxruntime-genai loop (benchmarks/manual_generate.py), on the prompts the sweep timed. They alternate --
    loop, harness, loop, ..., loop -- and each harness run is compared with the loops just before and after it, so
    that both see the same load on a shared machine."""
    doc = json.loads((out / "report.json").read_text())
    rows = {}
    for v in doc["variants"]:
        evaluation = out / "evaluations" / v["name"] / "evaluation.json"
        loop_cmd = [sys.executable, str(ROOT / "benchmarks" / "manual_generate.py"), v["onnx_dir"], "--speed-json",
                    str(evaluation), "--repetitions", "3"]
        harness_cmd = [sys.executable, str(ROOT / "benchmarks" / "harness_speed.py"), "--model-id",
                       v["foundry_model_id"], "--foundry-cache", str(foundry_cache), "--speed-json", str(evaluation)]
        logs = out.parent / f"speed-{v['name']}.log"
        loops = [json.loads(_check_call(loop_cmd, dict(os.environ), logs))["decode_tokens_per_s"]]
        harness, ratios = [], []
        for _ in range(rounds):
            harness.append(json.loads(_check_call(harness_cmd, dict(os.environ), logs))["decode_tokens_per_s"])
            loops.append(json.loads(_check_call(loop_cmd, dict(os.environ), logs))["decode_tokens_per_s"])
            ratios.append(harness[-1] / statistics.mean(loops[-2:]))
        rows[v["name"]] = {"harness_decode_tokens_per_s": round(statistics.median(harness), 2),
                           "plain_loop_decode_tokens_per_s": round(statistics.median(loops), 2),
                           "harness_over_loop": round(statistics.median(ratios), 3),
                           "sweep_decode_tokens_per_s": round(v["metrics"]["decode_tokens_per_s"], 2),
                           "harness_runs": [round(x, 2) for x in harness], "loop_runs": [round(x, 2) for x in loops],
                           "size_bytes": v["size_bytes"]}
        log(f"  {v['name']}: harness {harness}, loop {loops}")
    return rows


# --- summary ---------------------------------------------------------------------------------------------------

def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "runs": [round(v, 2) for v in values]}


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "os": platform.platform()}


def summarise(model: str, source: Path, reps: list[dict], speed: dict, started: str) -> dict:
    from slmops.versions import tool_versions

    routes = [r for r in ("manual", "cold", "cold_quick", "warm") if r in reps[0]]
    wall = {route: spread([r[route]["wall_s"] for r in reps]) for route in routes}
    cold = [r["cold"] for r in reps]
    phases = {p: statistics.median(c["timings"][p] for c in cold) for p in cold[0]["timings"]}
    quick = [r["cold_quick"] for r in reps]
    ratios = {"manual_over_cold": round(wall["manual"]["median"] / wall["cold"]["median"], 2),
              "manual_over_cold_quick": round(wall["manual"]["median"] / wall["cold_quick"]["median"], 2),
              "warm_over_cold": round(wall["warm"]["median"] / wall["cold"]["median"], 3),
              "evaluation_share_of_cold": round(statistics.median(c["timings"]["evaluate"] / c["wall_s"]
                                                                  for c in cold), 3),
              "orchestration_share": round(statistics.median(c["orchestration_share"] for c in cold), 3)}
    # the like-for-like parts: conversion (manual: every olive call; sweep: the export and the variant builds, with
    # their checks) and measurement (manual: the benchmark processes; the sweeps: Foundry Local registration, smoke
    # test and evaluation)
    parts = {
        "manual_convert_s": statistics.median(sum(v["convert_s"] for v in r["manual"]["variants"].values())
                                              for r in reps),
        "manual_measure_s": statistics.median(sum(v["benchmark_s"] for v in r["manual"]["variants"].values())
                                              for r in reps),
        "cold_convert_s": statistics.median(c["timings"]["convert"] for c in cold),
        "cold_measure_s": statistics.median(c["timings"]["foundry"] + c["timings"]["evaluate"] for c in cold),
        "cold_quick_convert_s": statistics.median(c["timings"]["convert"] for c in quick),
        "cold_quick_measure_s": statistics.median(c["timings"]["foundry"] + c["timings"]["evaluate"] for c in quick),
    }
    parts = {k: round(v, 2) for k, v in parts.items()}
    ratios["manual_over_cold_conversion"] = round(parts["manual_convert_s"] / parts["cold_convert_s"], 2)
    ratios["manual_over_cold_measurement"] = round(parts["manual_measure_s"] / parts["cold_measure_s"], 2)
    ratios["manual_over_cold_quick_measurement"] = round(parts["manual_measure_s"] / parts["cold_quick_measure_s"], 2)
    fp32 = speed.get("fp32", {})
    int4 = {k: v for k, v in speed.items() if k.startswith("int4")}
    if fp32 and int4:
        ratios["int4_over_fp32_decode"] = {k: round(v["harness_decode_tokens_per_s"]
                                                    / fp32["harness_decode_tokens_per_s"], 2) for k, v in int4.items()}
    met = {
        "cold_quick_at_least_1_5x_faster_than_manual": ratios["manual_over_cold_quick"] >= TARGETS[
            "manual_over_cold_quick_min"],
        "cold_no_slower_than_manual": ratios["manual_over_cold"] >= TARGETS["manual_over_cold_min"],
        "conversion_at_least_3x_faster": ratios["manual_over_cold_conversion"] >= TARGETS[
            "manual_over_cold_conversion_min"],
        "evaluation_at_most_40pct_of_cold": ratios["evaluation_share_of_cold"] <= TARGETS[
            "evaluation_share_of_cold_max"],
        "warm_at_most_5pct_of_cold": ratios["warm_over_cold"] <= TARGETS["warm_over_cold_max"],
        "harness_within_10pct_of_plain_loop": all(abs(v["harness_over_loop"] - 1) <= TARGETS[
            "harness_vs_loop_tolerance"] for v in speed.values()),
        "int4_decode_at_least_3x_fp32": all(r >= TARGETS["int4_over_fp32_decode_min"]
                                            for r in ratios.get("int4_over_fp32_decode", {"-": 0}).values()),
    }
    return {"model": model, "source": str(source), "started": started, "machine": machine(),
            "tool_versions": tool_versions(), "repetitions": len(reps), "variants": [v["name"] for v in DEMO_VARIANTS],
            "manual_measures": MANUAL, "wall_s": wall, "ratios": ratios, "parts_median_s": parts,
            "cold_phases_median_s": phases,
            "variant_speed": speed, "targets": TARGETS, "targets_met": met, "runs": reps}


def markdown(doc: dict) -> str:
    m, w, r = doc["machine"], doc["wall_s"], doc["ratios"]
    lines = [f"### {doc['model']} ({doc['started']}, {doc['repetitions']} repetitions)", "",
             f"{m['cpus']} cores ({m['cpu']}), {m['memory_gb']} GB; "
             + ", ".join(f"{k} {v}" for k, v in doc["tool_versions"].items()), "",
             "| route | median s | min s | max s |", "|---|---|---|---|"]
    lines += [f"| {route} | {w[route]['median']} | {w[route]['min']} | {w[route]['max']} |" for route in w]
    p = doc["parts_median_s"]
    lines += ["", f"manual/cold **{r['manual_over_cold']}x**, manual/cold-quick **{r['manual_over_cold_quick']}x**, "
                  f"warm/cold **{r['warm_over_cold']:.1%}**; evaluation **{r['evaluation_share_of_cold']:.1%}** and "
                  f"orchestration **{r['orchestration_share']:.1%}** of the cold wall time", "",
              "| part (median s) | manual | cold sweep | manual/cold | cold-quick sweep | manual/cold-quick |",
              "|---|---|---|---|---|---|",
              f"| conversion | {p['manual_convert_s']} | {p['cold_convert_s']} | {r['manual_over_cold_conversion']}x | "
              f"{p['cold_quick_convert_s']} | |",
              f"| measurement | {p['manual_measure_s']} | {p['cold_measure_s']} | "
              f"{r['manual_over_cold_measurement']}x | {p['cold_quick_measure_s']} | "
              f"{r['manual_over_cold_quick_measurement']}x |", "",
              "| cold sweep phase (median s) | " + " | ".join(doc["cold_phases_median_s"]) + " |",
              "|---|" + "---|" * len(doc["cold_phases_median_s"]),
              "| | " + " | ".join(f"{v:.1f}" for v in doc["cold_phases_median_s"].values()) + " |", "",
              "| variant | size MB | harness decode tok/s | plain loop tok/s | harness/loop | in the sweep tok/s |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v['size_bytes'] / 1e6:.1f} | {v['harness_decode_tokens_per_s']} | "
              f"{v['plain_loop_decode_tokens_per_s']} | {v['harness_over_loop']} | "
              f"{v.get('sweep_decode_tokens_per_s', '-')} |" for k, v in doc["variant_speed"].items()]
    if "int4_over_fp32_decode" in r:
        lines += ["", "int4/fp32 decode (harness): " + ", ".join(f"{k} {v}x" for k, v in
                                                             r["int4_over_fp32_decode"].items())]
    lines += ["", "targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in doc["targets_met"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="slmops sweep against the manual route, routes alternating")
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--model-dir", type=Path, help="use this folder as the source model instead of making one")
    parser.add_argument("--repetitions", type=int, default=3, help="repetitions of every route (default 3)")
    parser.add_argument("--work", type=Path, default=ROOT / ".slmops" / "bench",
                        help="scratch folder: models, route outputs (default .slmops/bench)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results",
                        help="where <model>.json and <model>.md are written")
    parser.add_argument("--summarise-again", action="store_true",
                        help="no runs: recompute <model>.json's summary and table from the runs it holds")
    args = parser.parse_args(argv)
    if args.repetitions < 1:
        parser.error("--repetitions must be 1 or more")
    if args.summarise_again:
        old = json.loads((args.results / f"{args.model}.json").read_text())
        doc = summarise(args.model, Path(old["source"]), old["runs"], old["variant_speed"], old["started"])
        return _write(doc, args.results)

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    args.work.mkdir(parents=True, exist_ok=True)
    source = source_model(args.model, args.work, args.model_dir)
    run_dir = args.work / f"{args.model}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True)
    spec = write_spec(run_dir / "spec.yaml", source)
    quick_spec = write_spec(run_dir / "spec-quick.yaml", source, quick=True)
    reps = []
    for i in range(args.repetitions):
        rep_dir, result = run_dir / f"rep-{i}", {}
        order = ("manual", "sweeps") if i % 2 == 0 else ("sweeps", "manual")
        for route in order:
            if route == "manual":
                log(f"repetition {i + 1}/{args.repetitions}: manual route")
                result["manual"] = run_manual(source, rep_dir / "manual")
            else:
                log(f"repetition {i + 1}/{args.repetitions}: cold sweep, profile quick")
                result["cold_quick"] = run_sweep(quick_spec, rep_dir / "home-quick", rep_dir / "out-quick")
                shutil.rmtree(rep_dir / "out-quick", ignore_errors=True)
                shutil.rmtree(rep_dir / "home-quick", ignore_errors=True)
                log(f"repetition {i + 1}/{args.repetitions}: cold sweep")
                result["cold"] = run_sweep(spec, rep_dir / "home", rep_dir / "out")
                log(f"repetition {i + 1}/{args.repetitions}: warm sweep")
                result["warm"] = run_sweep(spec, rep_dir / "home", rep_dir / "out")
            log(f"  {route}: " + ", ".join(f"{k} {v['wall_s']} s" for k, v in result.items()))
        reps.append(result)
        # a repetition of the big model leaves ~15 GB; the last cold sweep's variants stay for the speed comparison
        shutil.rmtree(rep_dir / "manual", ignore_errors=True)
        if i < args.repetitions - 1:
            shutil.rmtree(rep_dir, ignore_errors=True)
    log("variant speed: harness against a plain onnxruntime-genai loop")
    last = run_dir / f"rep-{args.repetitions - 1}"
    speed = variant_speed(last / "out", last / "home" / "foundry")
    return _write(summarise(args.model, source, reps, speed, started), args.results)


def _write(doc: dict, results: Path) -> int:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{doc['model']}.json").write_text(json.dumps(doc, indent=2) + "\n")
    table = markdown(doc)
    (results / f"{doc['model']}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
