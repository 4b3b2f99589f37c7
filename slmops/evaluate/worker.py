"""The measuring process: one fresh Python process per variant and kind of measurement, started by runner.py.

    python -m slmops.evaluate.worker serve|edge|fidelity REQUEST.json RESULT.json

* ``serve``: through Foundry Local, with the variant loaded once: speed at every prompt length, memory after load,
  CPU use while generating, the leak check, and the answers to the eval set.
* ``edge``: the edge cases, one by one, each announced before it runs so that the parent can name the case that
  killed the process.
* ``fidelity``: teacher-forcing with onnxruntime against the baseline (no Foundry Local in this process, so its
  memory never counts against the serving figures).

Progress and case events go to stdout as lines starting with ``@slmops-eval `` and a JSON object; anything else on
stdout is the runtime's own chatter. The result is written to RESULT.json atomically, only when the work is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EVENT_MARK = "@slmops-eval "


def emit(event: str, **fields: Any) -> None:
    """One event line for the parent process."""
    print(EVENT_MARK + json.dumps({"event": event, **fields}, ensure_ascii=True), flush=True)


def progress_of(phase: str):
    """A progress callback that reports (done, total) of one phase to the parent."""

    def report(done: int, total: int) -> None:
        emit("progress", phase=phase, done=done, total=total)

    return report


def context_length(model_dir: Path) -> int:
    """The model's context length from genai_config.json."""
    from slmops.adapters.genai import context_length as read

    value = read(model_dir)
    if value is None:
        raise ValueError(f"{model_dir}/genai_config.json gives no context_length")
    return value


@contextlib.contextmanager
def hold_loaded(foundry: Any, model_id: str) -> Iterator[float]:
    """Keep the model loaded for the block, so that no request pays for loading it; yields the load time in s.

    FoundryLocal.chat_stream loads and unloads a model that is not loaded, per request.
    """
    load_s = foundry.load(model_id)
    try:
        yield load_s
    finally:
        foundry.unload(model_id)


def _settings(request: dict[str, Any]):
    from slmops.evaluate.settings import EvaluationSpec

    return EvaluationSpec.model_validate(request["settings"])


def _foundry_chat(request: dict[str, Any]):
    """The Foundry Local adapter on the request's cache folder, and a greedy chat function for the model."""
    from slmops.adapters.foundry import FoundryLocal

    foundry = FoundryLocal(Path(request["foundry_cache"]))
    model_id = request["model_id"]

    def chat(prompt: str, max_tokens: int) -> Iterator[str]:
        return foundry.chat_stream(model_id, prompt, max_tokens=max_tokens, temperature=0.0)

    return foundry, chat


def serve(request: dict[str, Any]) -> dict[str, Any]:
    """Speed, memory, CPU, leak check and eval answers through Foundry Local."""
    from slmops.evalset import load_eval_set
    from slmops.evaluate import memory, quality, speed

    settings = _settings(request)
    items = load_eval_set(Path(request["dataset"]), settings.max_eval_items)
    variant_dir = Path(request["variant_dir"])
    context = context_length(variant_dir)
    foundry, chat = _foundry_chat(request)
    model_id = request["model_id"]
    timings: dict[str, float] = {}

    def count_tokens(prompt: str) -> int:
        result = foundry.smoke_test(model_id, prompt, max_tokens=1)
        # a prompt the runtime refuses is over the context: longer than any target
        return int(result["prompt_tokens"]) if result["passed"] else sys.maxsize

    rss_before = memory.rss_mb()
    emit("progress", phase="load", done=0, total=1)
    with hold_loaded(foundry, model_id) as load_s:
        rss_after_load = memory.rss_mb()
        emit("progress", phase="load", done=1, total=1)
        cpu = memory.CpuMeter()

        started = time.perf_counter()
        units = [item["prompt"] for item in items]
        prompts = speed.build_length_prompts(
            count_tokens, units, settings.prompt_lengths, context - settings.max_new_tokens
        )
        with cpu:
            samples = speed.measure_speed(
                chat, prompts, settings.max_new_tokens, settings.repetitions, settings.warmup, progress_of("speed")
            )
        speed_metrics, per_length = speed.summarise_speed(samples, prompts)
        timings["speed_s"] = time.perf_counter() - started

        started = time.perf_counter()

        def generate(i: int) -> None:
            list(chat(items[i % len(items)]["prompt"], settings.max_new_tokens))

        with cpu:
            leak = memory.leak_check(generate, settings.leak_generations, settings.leak_bound_mb, progress_of("leak"))
        timings["leak_s"] = time.perf_counter() - started

        started = time.perf_counter()
        with cpu:
            answers = quality.answer_items(chat, items, settings.max_new_tokens, progress_of("quality"))
        scored = quality.score_items(answers, quality.FormatCheck(settings))
        timings["quality_s"] = time.perf_counter() - started

    metrics = {
        **speed_metrics,
        **quality.summarise_quality(scored),
        "cpu_percent": cpu.percent,
        "rss_before_load_mb": rss_before,
        "rss_after_load_mb": rss_after_load,
        "load_s": load_s,
        "rss_growth_mb": leak["rss_growth_mb"],
        "leak_check_passed": float(leak["passed"]),
    }
    return {
        "metrics": metrics,
        "items": scored,
        "speed": {str(k): v for k, v in per_length.items()},
        "speed_samples": samples,
        "leak": leak,
        "context_length": context,
        "timings_s": timings,
    }


def edge(request: dict[str, Any]) -> dict[str, Any]:
    """The requested edge cases, each announced before it runs and reported when done."""
    from slmops.evalset import load_eval_set
    from slmops.evaluate.edge import run_edge_case

    settings = _settings(request)
    health_prompt = load_eval_set(Path(request["dataset"]), 1)[0]["prompt"]
    context = context_length(Path(request["variant_dir"]))
    foundry, chat = _foundry_chat(request)
    max_tokens = min(settings.max_new_tokens, 16)
    results = []
    with hold_loaded(foundry, request["model_id"]):
        for done, case in enumerate(request["cases"], start=1):
            emit("case", case=case)
            result = run_edge_case(chat, case, context, health_prompt, max_tokens)
            results.append(result)
            emit("case_done", result=result)
            emit("progress", phase="edge", done=done, total=len(request["cases"]))
    return {"cases": results}


def fidelity(request: dict[str, Any]) -> dict[str, Any]:
    """Teacher-forced fidelity of the variant to the baseline on the eval items."""
    from slmops.evalset import load_eval_set
    from slmops.evaluate.fidelity import fidelity as measure

    settings = _settings(request)
    items = load_eval_set(Path(request["dataset"]), settings.max_eval_items)
    started = time.perf_counter()
    metrics, per_item = measure(
        Path(request["variant_dir"]), Path(request["baseline_dir"]), items, progress_of("fidelity")
    )
    return {"metrics": metrics, "items": per_item, "timings_s": {"fidelity_s": time.perf_counter() - started}}


MODES = {"serve": serve, "edge": edge, "fidelity": fidelity}


def main(argv: list[str] | None = None) -> int:
    """Run one mode on a request file and write its result file."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in MODES:
        print(f"usage: python -m slmops.evaluate.worker {'|'.join(MODES)} REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    mode, request_path, result_path = args
    # nothing can be downloaded here, and a hub look-up only waits (transformers reads the tokenizer in fidelity)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from slmops.errors import SlmopsError
    from slmops.files import write_json

    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    try:
        result = MODES[mode](request)
    except SlmopsError as exc:
        # the parent puts the stderr tail into its VariantError: one clear line beats a traceback here
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    write_json(Path(result_path), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
