"""The measuring process: one fresh Python process per variant, started by runner.py, that loads the variant once
in Foundry Local and measures everything in turn.

    python -m slmops.evaluate.worker measure|baseline REQUEST.json RESULT.json

* ``measure``, phase ``smoke`` (when asked): with the variant loaded, the smoke test's prompt as its first request
  (a variant that does not answer is measured no further). Phase ``serve``: speed at every prompt length, memory
  after load, CPU use while generating, the eval answers (each followed by the process's resident memory: they are
  the leak check's generations, with more only if the settings ask for more). Phase ``edge``: the edge cases, each
  announced before it runs so that the parent can name a case that kills the process. Then the model is unloaded,
  the parent takes the serving peak of resident memory (it waits for the parent's go on stdin), and phase
  ``fidelity`` teacher-forces the eval rows through the variant with onnxruntime against the stored baseline.
* ``baseline``: the fp32 baseline teacher-forced once, stored compactly for every variant and later sweep.

Each phase writes ``measure-<phase>.json`` into the request's out_dir as soon as it is done, so a process that dies
later loses nothing before it. Events go to stdout as lines starting with ``@slmops-eval `` and a JSON object;
anything else on stdout is the runtime's own chatter.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
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


def phase_file(out_dir: Path, phase: str) -> Path:
    return Path(out_dir) / f"measure-{phase}.json"


class Variant:
    """The variant under measurement: Foundry Local to chat with, its tokenizer to count prompt tokens."""

    def __init__(self, request: dict[str, Any]) -> None:
        from slmops.adapters.foundry import FoundryLocal
        from slmops.adapters.genai import context_length
        from slmops.evaluate.settings import EvaluationSpec

        self.request = request
        self.settings = EvaluationSpec.model_validate(request["settings"])
        self.folder = Path(request["variant_dir"])
        self.model_id = request["model_id"]
        self.context = context_length(self.folder)
        if self.context is None:
            raise ValueError(f"{self.folder}/genai_config.json gives no context_length")
        self.foundry = FoundryLocal(Path(request["foundry_cache"]))

    def chat(self, prompt: str, max_tokens: int) -> Iterator[str]:
        return self.foundry.chat_stream(self.model_id, prompt, max_tokens=max_tokens, temperature=0.0)

    def token_counter(self):
        return prompt_token_counter(self.folder)

    @contextlib.contextmanager
    def loaded(self) -> Iterator[float]:
        """The model loaded for the block, so that no request pays for loading it; yields the load time in s."""
        load_s = self.foundry.load(self.model_id)
        try:
            yield load_s
        finally:
            self.foundry.unload(self.model_id)


def prompt_token_counter(folder: Path):
    """Prompt tokens as the runtime counts them: the model's chat template rendered, then its tokenizer (read as the
    runtime reads it: slmops.prompt_template.load_tokenizer)."""
    from slmops.prompt_template import load_tokenizer, prompt_ids

    tokenizer = load_tokenizer(folder)
    return lambda prompt: len(prompt_ids(tokenizer, prompt))


def serve(variant: Variant, items: list[dict[str, str]], loaded: dict[str, float],
          decode_primed: bool = False) -> dict[str, Any]:
    """Speed, CPU, the eval answers and the leak check, with the model loaded (``loaded``: the load's seconds and
    resident memory before and after it). ``decode_primed``: a whole answer was made already (the smoke test)."""
    from slmops.evaluate import memory, quality, speed

    settings, timings = variant.settings, {}
    cpu = memory.CpuMeter()
    started = time.perf_counter()
    prompts = speed.build_length_prompts(variant.token_counter(), [item["prompt"] for item in items],
                                         settings.prompt_lengths, variant.context - settings.max_new_tokens)
    with cpu:
        runs = speed.measure_speed(variant.chat, prompts, settings.max_new_tokens, settings.warmup,
                                   settings.min_repetitions, settings.repetitions, settings.ci_target,
                                   progress_of("speed"), decode_primed=decode_primed)
    speed_metrics, per_length = speed.summarise_speed(runs)
    timings["speed_s"] = time.perf_counter() - started

    started, followed = time.perf_counter(), []
    with cpu:
        answers = quality.answer_items(variant.chat, items, settings.max_new_tokens, progress_of("quality"),
                                       after_each=lambda: followed.append(round(memory.rss_mb(), 3)))
        leak = memory.leak_check(lambda i: list(variant.chat(items[i % len(items)]["prompt"], settings.max_new_tokens)),
                                 settings.leak_generations, settings.leak_bound_mb, progress_of("leak"), followed)
    scored = quality.score_items(answers, quality.FormatCheck(settings))
    timings["quality_s"] = time.perf_counter() - started
    metrics = {**speed_metrics, **quality.summarise_quality(scored), "cpu_percent": cpu.percent, **loaded,
               "rss_growth_mb": leak["rss_growth_mb"], "leak_check_passed": float(leak["passed"])}
    return {"metrics": metrics, "items": scored, "speed": {str(k): v for k, v in per_length.items()},
            "speed_samples": {str(r.prompt.target): r.samples for r in runs}, "leak": leak,
            "context_length": variant.context, "timings_s": timings}


def edge(variant: Variant, items: list[dict[str, str]], cases: list[str]) -> dict[str, Any]:
    """The requested edge cases, each announced before it runs and reported when done."""
    from slmops.evaluate.edge import run_edge_case

    results = []
    for done, case in enumerate(cases, start=1):
        emit("case", case=case)
        if os.environ.get("SLMOPS_TEST_KILL_AT_EDGE_CASE") == case:  # fault injection for the tests
            os.kill(os.getpid(), signal.SIGKILL)
        result = run_edge_case(variant.chat, case, variant.context, items[0]["prompt"],
                               min(variant.settings.max_new_tokens, 16))
        results.append(result)
        emit("case_done", result=result)
        emit("progress", phase="edge", done=done, total=len(cases))
    return {"cases": results}


def fidelity(request: dict[str, Any]) -> dict[str, Any]:
    """The variant teacher-forced against the stored baseline (by definition when it is the baseline)."""
    from slmops.adapters.ort import LogitModel
    from slmops.evaluate.fidelity import BaselineStore, compare_to_baseline, identical_to_baseline

    started = time.perf_counter()
    store = BaselineStore.load(Path(request["baseline"]))
    if request["identical_to_baseline"]:
        metrics, per_item = identical_to_baseline(store)
    else:
        metrics, per_item = compare_to_baseline(LogitModel(Path(request["variant_dir"])), store,
                                                progress_of("fidelity"))
    return {"metrics": metrics, "items": per_item, "timings_s": {"fidelity_s": time.perf_counter() - started}}


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """The phases the request names, in order, each written down as soon as it is done."""
    from slmops.evalset import load_eval_set
    from slmops.evaluate.memory import rss_mb
    from slmops.files import write_json

    phases, out = request["phases"], Path(request["out_dir"])
    variant = Variant(request)
    items = load_eval_set(Path(request["dataset"]), variant.settings.max_eval_items)
    if {"smoke", "serve", "edge"} & set(phases):
        rss_before = rss_mb()
        emit("progress", phase="load", done=0, total=1)
        with variant.loaded() as load_s:
            loaded = {"rss_before_load_mb": rss_before, "rss_after_load_mb": rss_mb(), "load_s": load_s}
            emit("progress", phase="load", done=1, total=1)
            primed = False  # whether a whole answer was made already: the smoke test's, of several tokens
            if "smoke" in phases:
                answered = variant.foundry.smoke_test(variant.model_id, **request["smoke"])  # loaded: asked only
                write_json(phase_file(out, "smoke"), answered)
                if not answered["passed"]:
                    return {"phases": ["smoke"]}
                primed = answered["completion_tokens"] > 1
            if "serve" in phases:
                write_json(phase_file(out, "serve"), serve(variant, items, loaded, decode_primed=primed))
            if "edge" in phases:
                write_json(phase_file(out, "edge"), edge(variant, items, request["cases"]))
    if "fidelity" in phases:
        emit("serving_done")  # the parent reads the serving peak now: what comes next is not serving
        sys.stdin.readline()
        write_json(phase_file(out, "fidelity"), fidelity(request))
    return {"phases": phases}


def baseline(request: dict[str, Any]) -> dict[str, Any]:
    """The fp32 baseline teacher-forced over the eval rows, stored compactly at request["store"]."""
    from slmops.adapters.ort import LogitModel
    from slmops.evalset import load_eval_set
    from slmops.evaluate.fidelity import BaselineStore, render_sequences
    from slmops.evaluate.settings import EvaluationSpec

    started = time.perf_counter()
    settings = EvaluationSpec.model_validate(request["settings"])
    model = LogitModel(Path(request["baseline_dir"]))
    items = load_eval_set(Path(request["dataset"]), settings.max_eval_items)
    sequences = render_sequences(model.model_dir, items, model.eos_token_id, model.context_length)
    store = BaselineStore.compute(model, sequences, progress=progress_of("baseline"))
    store.save(Path(request["store"]))
    return {"sequences": len(sequences), "positions": int(store.next_lp.size),
            "seconds": time.perf_counter() - started}


MODES = {"measure": measure, "baseline": baseline}


def main(argv: list[str] | None = None) -> int:
    """Run one mode on a request file and write its result file."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in MODES:
        print(f"usage: python -m slmops.evaluate.worker {'|'.join(MODES)} REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    mode, request_path, result_path = args
    # nothing can be downloaded here, and a hub look-up only waits (transformers reads the tokenizer)
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
    code = main()
    if "foundry_local_sdk" in sys.modules:  # its shutdown at exit costs ~1 s a process, and the work is written
        from slmops.adapters.foundry import exit_now

        exit_now(code)
    sys.exit(code)
