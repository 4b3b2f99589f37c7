"""Where a decode step's time goes: onnxruntime's own profiler over a plain onnxruntime-genai greedy loop of one
variant folder, each decode step split into the weights' kernels (MatMulNBits, MatMul, Gather*), the rest of the
graph by operator, ONNX Runtime's time between nodes, and the loop outside the session.

    .venv/bin/python benchmarks/decode_profile.py VARIANT_DIR [VARIANT_DIR ...] --name qwen2.5-0.5b-shape --threads 1 2

Per variant: first a loop without the profiler (the wall time per token, as a user gets it), then the same loop with
the session's profiler on (genai_config.json's session option ``enable_profiling``, in a copy of the folder whose
weights are hard links). From the profile, per decode step (every `model_run` after the prompt's): the model run's
own time, the sum of its node times, and those node times by operator. Writes
benchmarks/results/decode-profile-<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
WEIGHT_OPS = ("MatMulNBits", "MatMul", "Gather", "GatherBlockQuantized", "MatMulInteger")


def _loop(model_dir: Path, prompt_tokens: int, steps: int) -> list[float]:
    """Seconds of each greedy decode step (generate_next_token) after a prompt of prompt_tokens tokens."""
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=prompt_tokens + steps + 1, min_length=prompt_tokens + steps)
    generator = og.Generator(model, params)
    generator.append_tokens([[(7 * i + 3) % 500 + 10 for i in range(prompt_tokens)]])
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        generator.generate_next_token()
        times.append(time.perf_counter() - started)
    del generator, model
    return times


def _copy(model_dir: Path, work: Path, name: str, threads: int | None, profile: bool) -> Path:
    """The folder with its weights hard-linked, its genai_config.json set to threads and, if asked, the profiler."""
    copy = work / name
    copy.mkdir()
    for f in model_dir.iterdir():
        if f.is_file():
            os.link(f, copy / f.name) if f.name.startswith("model.onnx") else shutil.copy2(f, copy / f.name)
    config_file = copy / "genai_config.json"
    config = json.loads(config_file.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    if threads:
        options["intra_op_num_threads"] = threads
    if profile:
        options["enable_profiling"] = str(work / "ort_profile")
    config_file.write_text(json.dumps(config, indent=2))
    return copy


def _weight_bytes(model_dir: Path) -> dict[str, int]:
    """Bytes of weights (with scales and zero points) each weight node reads, by node name; an embedding Gather reads
    one row, left out here."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(model_dir / "model.onnx"), load_external_data=False).graph
    sizes = {}
    for t in graph.initializer:
        count = 1
        for d in t.dims:
            count *= d
        sizes[t.name] = count * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return {n.name: sum(sizes.get(i, 0) for i in n.input[1:]) for n in graph.node
            if n.op_type in ("MatMulNBits", "MatMul", "MatMulInteger") and any(i in sizes for i in n.input[1:])}


def _split(trace: list[dict]) -> list[dict]:
    """Per model run of the trace: its duration, its nodes' durations by operator, and by node for the weight
    operators (microseconds)."""
    runs = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    nodes = sorted((e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    out, i = [], 0
    for run in runs:
        by_op: dict[str, float] = defaultdict(float)
        by_node: dict[str, float] = defaultdict(float)
        end = run["ts"] + run["dur"]
        while i < len(nodes) and nodes[i]["ts"] < run["ts"]:
            i += 1
        while i < len(nodes) and nodes[i]["ts"] < end:
            op = nodes[i]["args"].get("op_name", "?")
            by_op[op] += nodes[i]["dur"]
            if op in WEIGHT_OPS:
                by_node[nodes[i]["name"].removesuffix("_kernel_time")] += nodes[i]["dur"]
            i += 1
        out.append({"run_us": run["dur"], "by_op": dict(by_op), "by_node": dict(by_node)})
    return out


def profile(model_dir: Path, prompt_tokens: int, steps: int, threads: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # the first steps warm the caches and the thread pool
        plain = _loop(_copy(model_dir, work, "plain", threads, False), prompt_tokens, steps)[2:]
        _loop(_copy(model_dir, work, "profiled", threads, True), prompt_tokens, steps)
        [trace_file] = list(work.glob("ort_profile*.json"))
        runs = _split(json.loads(trace_file.read_text()))
    decode = runs[1:][2:]  # after the prompt's run, and the same warm-up steps dropped
    ops = sorted({op for r in decode for op in r["by_op"]})
    per_op = {op: statistics.median(r["by_op"].get(op, 0.0) for r in decode) / 1e3 for op in ops}
    run_ms = statistics.median(r["run_us"] for r in decode) / 1e3
    nodes_ms = statistics.median(sum(r["by_op"].values()) for r in decode) / 1e3
    step_ms = statistics.median(plain) * 1e3
    weights_ms = sum(ms for op, ms in per_op.items() if op in WEIGHT_OPS)
    # the weight kernels in the graph, as bandwidth: the LM head (one large matrix) apart from the layers' matrices
    sizes = _weight_bytes(model_dir)
    node_ms = {n: statistics.median(r["by_node"].get(n, 0.0) for r in decode) / 1e3 for n in sizes}
    parts = {}
    for part, names in (("lm_head", [n for n in sizes if n.startswith("/lm_head/")]),
                        ("layers", [n for n in sizes if not n.startswith("/lm_head/")])):
        ms, read = sum(node_ms[n] for n in names), sum(sizes[n] for n in names)
        parts[part] = {"nodes": len(names), "ms": round(ms, 3), "mb": round(read / 1e6, 1),
                       "gb_per_s": round(read / ms / 1e6, 2) if ms else None}
    return {"variant_dir": str(model_dir), "threads": threads or "genai's default", "prompt_tokens": prompt_tokens,
            "decode_steps": len(decode),
            "step_ms_unprofiled": round(step_ms, 3), "tokens_per_s_unprofiled": round(1e3 / step_ms, 2),
            "model_run_ms": round(run_ms, 3), "nodes_ms": round(nodes_ms, 3), "weight_kernels_ms": round(weights_ms, 3),
            "between_nodes_ms": round(run_ms - nodes_ms, 3), "weight_kernels": parts,
            "by_op_ms": {op: round(ms, 3) for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", type=Path, nargs="+")
    parser.add_argument("--name", required=True, help="results file name: decode-profile-NAME.json")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--steps", type=int, default=66)
    parser.add_argument("--threads", type=int, nargs="+", default=[0],
                        help="intra_op_num_threads of each pass (0: onnxruntime-genai's default)")
    args = parser.parse_args(argv)
    results = {f"{d.name}{f' ({t} threads)' if t else ''}": profile(d.resolve(), args.prompt_tokens, args.steps, t)
               for t in args.threads for d in args.variants}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"decode-profile-{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["| variant | step ms (no profiler) | model run ms | in nodes | weight kernels | other ops | "
             "between nodes | top other ops (ms) | LM head ms (GB/s) | layers' matrices ms (GB/s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        others = {op: ms for op, ms in r["by_op_ms"].items() if op not in WEIGHT_OPS}
        top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(others.items())[:4])
        lines.append(f"| {name} | {r['step_ms_unprofiled']:.2f} | {r['model_run_ms']:.2f} | {r['nodes_ms']:.2f} | "
                     f"{r['weight_kernels_ms']:.2f} | {sum(others.values()):.2f} | {r['between_nodes_ms']:.2f} | "
                     f"{top} | " + " | ".join(f"{r['weight_kernels'][part]['ms']:.2f} "
                                              f"({r['weight_kernels'][part]['gb_per_s']})" for part in ("lm_head", "layers"))
                     + " |")
    (RESULTS / f"decode-profile-{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
