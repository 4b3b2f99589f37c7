"""evaluate_variant end to end: a fresh measuring process, Foundry Local serving the demo model, every metric.

    .venv/bin/python -m pytest tests/evaluate/test_runner.py -q
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

from slmops.errors import InputError, VariantError
from slmops.evaluate import runner
from slmops.evaluate.runner import RESULT_NAME, WorkerRun, evaluate_variant
from slmops.evaluate.settings import EvaluationSpec
from slmops.evaluate.worker import phase_file
from slmops.metrics import FIDELITY_METRICS, SERVING_METRICS

# a quick evaluation for the tests that check one behaviour, not the figures
QUICK = {"repetitions": 2, "warmup": 1, "leak_generations": 8, "max_eval_items": 4, "edge_cases": ["empty"]}


@pytest.fixture(scope="module")
def int4_evaluation(demo_variants, registered_demo, eval_foundry, demo_eval_set, demo_baseline, tmp_path_factory):
    """The demo int4-b32 variant evaluated with the default settings, and the progress reported on the way."""
    seen: list[tuple[str, int, int]] = []
    out = tmp_path_factory.mktemp("eval-int4-b32")
    result = evaluate_variant(
        demo_variants["int4-b32"], registered_demo["int4-b32"], eval_foundry.cache_dir, EvaluationSpec(),
        demo_eval_set, out, baseline=demo_baseline,
        progress=lambda phase, done, total: seen.append((phase, done, total)),
    )
    return result, out, seen


def test_evaluate_variant_reports_every_metric_finite(int4_evaluation):
    result, _, _ = int4_evaluation
    metrics = result["metrics"]
    assert set(SERVING_METRICS + FIDELITY_METRICS) <= set(metrics)
    assert [name for name in SERVING_METRICS + FIDELITY_METRICS if not math.isfinite(metrics[name])] == []
    assert 0 < metrics["ttft_ms_p50"] <= metrics["ttft_ms_p95"]
    assert metrics["peak_rss_mb"] >= metrics["rss_after_load_mb"] > 0
    assert metrics["exact_match"] >= 0.95 and metrics["format_ok"] >= 0.95
    assert 0 < metrics["kl_div_mean"] and metrics["top1_agreement"] < 1
    assert metrics["leak_check_passed"] == 1.0


def test_evaluate_variant_answers_or_rejects_every_edge_case_cleanly(int4_evaluation):
    result, _, _ = int4_evaluation
    cases = {case["case"]: case for case in result["details"]["edge_cases"]}
    assert result["metrics"]["edge_cases_passed"] == 1.0
    assert cases["empty"]["outcome"] == "rejected" and "nothing to generate" in cases["empty"]["detail"]
    assert cases["too_long"]["outcome"] == "rejected" and "context length" in cases["too_long"]["detail"]
    assert cases["non_ascii"]["outcome"] == "answered"
    assert cases["control_chars"]["outcome"] == "answered"


def test_evaluate_variant_measures_speed_at_every_prompt_length(int4_evaluation):
    result, _, _ = int4_evaluation
    by_length = result["details"]["speed_by_length"]
    assert list(by_length) == [str(n) for n in EvaluationSpec().prompt_lengths]
    lengths = [row["prompt_tokens"] for row in by_length.values()]
    assert lengths == sorted(lengths) and len(set(lengths)) == 3
    assert math.isfinite(result["metrics"]["speed_consistency"])


def test_evaluate_variant_writes_items_and_result_file(int4_evaluation):
    result, out, seen = int4_evaluation
    assert len(result["items"]) == 32
    item = result["items"][0]
    expected = {"prompt", "reference", "answer", "exact_match", "token_f1", "format_ok", "fidelity_kl_div_mean"}
    assert expected <= set(item)
    written = json.loads((out / RESULT_NAME).read_text())
    assert written["metrics"] == pytest.approx(result["metrics"])
    assert {"measure-serve.json", "measure-edge.json", "measure-fidelity.json"} <= {p.name for p in out.iterdir()}
    # the eval answers are the leak check's generations: no generation made only to watch memory
    assert {phase for phase, _, _ in seen} == {"load", "speed", "quality", "edge", "fidelity"}
    assert result["details"]["leak"]["extra_generations"] == 0 and len(result["details"]["leak"]["rss_mb"]) == 32
    assert [p["mode"] for p in result["details"]["processes"]] == ["measure"], "one process loads the variant once"


def test_leak_check_fails_when_the_bound_is_below_the_measured_growth(
    demo_variants, registered_demo, eval_foundry, demo_eval_set, tmp_path
):
    settings = EvaluationSpec(**QUICK, leak_bound_mb=-1000.0)
    result = evaluate_variant(demo_variants["fp32"], registered_demo["fp32"], eval_foundry.cache_dir, settings,
                              demo_eval_set, tmp_path)
    assert result["metrics"]["rss_growth_mb"] > -1000.0
    assert result["metrics"]["leak_check_passed"] == 0.0
    assert result["details"]["leak"]["passed"] is False


def test_the_smoke_test_is_the_measuring_processs_first_request(
    demo_variants, registered_demo, eval_foundry, demo_eval_set, tmp_path
):
    smoke = {"prompt": "What colour is the lamp?", "max_tokens": 8, "timeout_s": 60.0}
    result = evaluate_variant(demo_variants["int4-b32"], registered_demo["int4-b32"], eval_foundry.cache_dir,
                              EvaluationSpec(**QUICK), demo_eval_set, tmp_path, smoke=smoke)
    assert result["smoke"]["passed"] is True and result["smoke"]["completion_tokens"] > 0
    assert result["smoke"]["load_seconds"] < 0.05, "asked of the model loaded for the measurements, not loaded again"
    assert [p["mode"] for p in result["details"]["processes"]] == ["measure"]
    assert math.isfinite(result["metrics"]["decode_tokens_per_s"])


def test_a_variant_that_fails_its_smoke_test_is_measured_no_further(
    demo_variants, registered_demo, eval_foundry, demo_eval_set, tmp_path
):
    smoke = {"prompt": "What colour is the lamp?", "max_tokens": 64, "timeout_s": 1e-6}  # the watchdog cancels it
    with pytest.raises(runner.SmokeTestFailed, match=r"^smoke test in Foundry Local failed: timed out after 1e-06 s$"):
        evaluate_variant(demo_variants["int4-b32"], registered_demo["int4-b32"], eval_foundry.cache_dir,
                         EvaluationSpec(**QUICK), demo_eval_set, tmp_path, smoke=smoke)
    assert phase_file(tmp_path, "smoke").is_file()
    assert not phase_file(tmp_path, "serve").exists() and not phase_file(tmp_path, "edge").exists()


def test_worker_crash_raises_variant_error_with_its_stderr(demo_variants, eval_foundry, demo_eval_set, tmp_path):
    broken = tmp_path / "broken-int8"
    shutil.copytree(demo_variants["int8"], broken)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    model_id = eval_foundry.register(broken, "evaltest-broken", "broken-content", {"precision": "int8"})
    with pytest.raises(VariantError, match=r"(?s)broken-int8: the measure evaluation process failed.*stderr ends with"):
        evaluate_variant(broken, model_id, eval_foundry.cache_dir, EvaluationSpec(**QUICK), demo_eval_set,
                         tmp_path / "out")
    eval_foundry.remove(model_id)


def test_worker_past_its_time_limit_is_stopped_and_raises_variant_error(
    demo_variants, registered_demo, eval_foundry, demo_eval_set, tmp_path
):
    settings = EvaluationSpec(**QUICK, worker_timeout_s=0.5)
    with pytest.raises(VariantError, match="ran past its limit"):
        evaluate_variant(demo_variants["fp32"], registered_demo["fp32"], eval_foundry.cache_dir, settings,
                         demo_eval_set, tmp_path)


def test_evaluate_variant_rejects_a_bad_eval_set_before_starting_a_process(demo_variants, tmp_path):
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"question": "a"}\n')
    with pytest.raises(InputError, match="prompt"):
        evaluate_variant(demo_variants["fp32"], "evaltest-fp32:1", tmp_path, EvaluationSpec(), bad, tmp_path / "out")
    assert not list((tmp_path / "out").glob("measure-*"))


def test_edge_case_that_kills_its_process_fails_and_the_rest_still_run(monkeypatch, tmp_path):
    calls = []

    def fake_run_worker(mode, request, out_dir, timeout_s, on_event, name=None):
        """Same signature as run_worker: the first process serves, then dies during too_long; the second finishes."""
        calls.append((list(request["phases"]), list(request["cases"])))
        if len(calls) == 1:
            phase_file(out_dir, "serve").write_text("{}")
            on_event({"event": "case", "case": "empty"})
            on_event({"event": "case_done", "result": {"case": "empty", "passed": True, "outcome": "rejected"}})
            on_event({"event": "case", "case": "too_long"})
            return WorkerRun(mode, -11, False, 1.0, 100.0, None, "Segmentation fault")
        phase_file(out_dir, "edge").write_text(json.dumps({"cases": [
            {"case": c, "passed": True, "outcome": "answered"} for c in request["cases"]]}))
        phase_file(out_dir, "fidelity").write_text("{}")
        return WorkerRun(mode, 0, False, 1.0, 90.0, {"phases": request["phases"]}, "", serving_peak_mb=80.0)

    monkeypatch.setattr(runner, "run_worker", fake_run_worker)
    settings = EvaluationSpec(edge_cases=["empty", "too_long", "non_ascii"])
    measurement = runner._Measurement({}, settings, tmp_path, "v", None)
    measurement.run(["serve", "edge", "fidelity"])
    assert calls == [(["serve", "edge", "fidelity"], ["empty", "too_long", "non_ascii"]),
                     (["edge", "fidelity"], ["non_ascii"])]
    cases = measurement.edge_cases()
    assert [(c["case"], c["passed"]) for c in cases] == [("empty", True), ("too_long", False), ("non_ascii", True)]
    assert cases[1]["outcome"] == "crashed the process" and "Segmentation fault" in cases[1]["detail"]
    assert measurement.serving_peak_mb == 100.0, "the serving peak is the first process's"


def test_a_case_that_kills_the_real_process_fails_and_every_other_phase_is_measured(
    demo_variants, registered_demo, eval_foundry, demo_eval_set, demo_baseline, tmp_path, monkeypatch
):
    # a fault injected for real: the measuring process SIGKILLs itself when it reaches the case
    monkeypatch.setenv("SLMOPS_TEST_KILL_AT_EDGE_CASE", "whitespace")
    settings = EvaluationSpec(**{**QUICK, "edge_cases": ["empty", "whitespace", "non_ascii"]})
    result = evaluate_variant(demo_variants["int8"], registered_demo["int8"], eval_foundry.cache_dir, settings,
                              demo_eval_set, tmp_path, baseline=demo_baseline)
    cases = {c["case"]: c for c in result["details"]["edge_cases"]}
    assert (cases["empty"]["passed"], cases["whitespace"]["passed"], cases["non_ascii"]["passed"]) == (
        True, False, True)
    assert cases["whitespace"]["outcome"] == "crashed the process"
    assert result["metrics"]["edge_cases_passed"] == pytest.approx(2 / 3)
    assert [p["returncode"] for p in result["details"]["processes"]] == [-9, 0]
    metrics = result["metrics"]
    assert metrics["exact_match"] >= 0.95 and math.isfinite(metrics["decode_tokens_per_s"])
    assert 0 < metrics["kl_div_mean"] and math.isfinite(metrics["same_top_p"]), "fidelity ran in the new process"
