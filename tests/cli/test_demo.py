"""`slmops demo` end to end on the trained demo model, as `make demo` runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slmops.adapters import genai
from slmops.metrics import FIDELITY_METRICS, SERVING_METRICS
from slmops.demo import DEMO_SPEC
from slmops.config import load_spec


@pytest.fixture(scope="module")
def demo_run(demo_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("demo-work")
    (work / "demo-model").symlink_to(demo_model, target_is_directory=True)
    out = work / "out"

    def run():
        return subprocess.run([sys.executable, "-m", "slmops.cli", "demo", "--out", str(out), "--work-dir",
                               str(work)], capture_output=True, text=True, timeout=900, env=dict(os.environ))

    first = run()
    return out, first, run


def test_demo_builds_fp32_int8_and_two_int4_variants(demo_run):
    out, result, _ = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    # nothing left for Prefect to send once its server is gone (it retried for over a minute at exit, printing this)
    assert "Error logging to API" not in result.stderr and "Traceback" not in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert [(v["name"], v["status"]) for v in report["variants"]] == [
        (v.name, "succeeded") for v in load_spec(DEMO_SPEC).variants]
    for v in report["variants"]:
        assert f"{v['name']:<9}  {v['config']['precision']:<9}" in result.stdout  # the printed table
        assert v["size_bytes"] > 0 and Path(v["onnx_dir"]).is_dir()


def test_demo_fp32_export_answers_the_eval_set(demo_run, demo_model):
    out, _, _ = demo_run
    rows = [json.loads(line) for line in (demo_model / "eval.jsonl").read_text().splitlines() if line.strip()]
    answers = genai.answer_prompts(out / "variants" / "fp32", [r["prompt"] for r in rows], max_new_tokens=24)
    exact = sum(a == r["reference"].strip() for a, r in zip(answers, rows)) / len(rows)
    assert exact >= 0.9, f"fp32 ONNX export answered {exact:.0%} of {len(rows)} eval prompts exactly"


# every metric, spread and fidelity statistic, for every variant
METRICS = (*SERVING_METRICS, *FIDELITY_METRICS)


def test_demo_measures_every_variant_and_fidelity_orders_the_precisions(demo_run):
    out, _, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    metrics = {v["name"]: v["metrics"] for v in report["variants"]}
    for name, m in metrics.items():
        assert set(METRICS) <= set(m), f"{name} lacks {set(METRICS) - set(m)}"
    assert metrics["fp32"]["kl_div_mean"] == 0 and metrics["fp32"]["top1_agreement"] == 1
    assert metrics["fp32"]["kl_div_mean"] < metrics["int8"]["kl_div_mean"]
    assert metrics["fp32"]["top1_agreement"] > metrics["int8"]["top1_agreement"]
    for int4 in ("int4-b32", "int4-b128"):
        assert metrics[int4]["kl_div_mean"] > metrics["int8"]["kl_div_mean"]
        assert metrics[int4]["top1_agreement"] < metrics["int8"]["top1_agreement"]


def test_demo_logs_metrics_and_answers_to_mlflow_and_promotes(demo_run):
    from slmops.adapters.tracking import Tracker

    out, result, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    tracker = Tracker(report["mlflow"]["tracking_uri"])
    for v in report["variants"]:
        run = tracker.run(v["mlflow_run_id"])
        assert run.data.metrics["kl_div_mean"] == v["metrics"]["kl_div_mean"]
        table = tracker.load_dict(v["mlflow_run_id"], "eval_items.json")
        assert len(table["data"]) == report["spec"]["evaluation"]["max_eval_items"] == 32
        assert "answer" in table["columns"]
    decision = report["decision"]
    assert decision["promoted"] and decision["champion"]["name"] in ("int4-b32", "int4-b128")
    assert f"champion of demo-shop: {decision['champion']['name']}" in result.stdout
    assert (out / "plots" / "pareto_size.png").stat().st_size > 10_000
    assert "![top1_agreement against size](plots/pareto_size.png)" in (out / "report.md").read_text()


def test_demo_run_again_reuses_every_variant(demo_run):
    out, _, run = demo_run
    again = run()
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert {v["status"] for v in report["variants"]} == {"cached"}
    assert all(v["evaluation"]["reused"] for v in report["variants"])
    assert not report["decision"]["promoted"]  # the same champion is not promoted twice


def test_running_the_demo_five_times_with_nothing_changed_never_moves_the_champion(demo_run):
    from slmops.adapters.tracking import Registry, Tracker

    out, _, run = demo_run
    report = json.loads((out / "report.json").read_text())
    registry = Registry(Tracker(report["mlflow"]["tracking_uri"]))
    champion = registry.by_alias("demo-shop", "champion").version
    versions = {v.version for v in registry.client.search_model_versions("name = 'demo-shop'")}
    for _ in range(3):  # with the fixture's run and the one above: five runs of `slmops demo` in a row
        again = run()
        assert again.returncode == 0, again.stderr[-3000:]
        decision = json.loads((out / "report.json").read_text())["decision"]
        assert not decision["promoted"] and decision["reason"].endswith("is the best variant and already the champion.")
        assert registry.by_alias("demo-shop", "champion").version == champion
    assert {v.version for v in registry.client.search_model_versions("name = 'demo-shop'")} == versions


def test_demo_reports_each_variants_bytes_per_token_and_its_distance_to_the_roofs(demo_run):
    from slmops.roofline import bytes_per_token, machine_id

    out, _, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    roofs = report.get("roofline")
    timed = [v for v in report["variants"] if v["metrics"].get("decode_timing_resolved", 1.0) >= 1.0]
    if timed:  # the roofs are measured once a decode speed is there to compare with them
        assert roofs["machine"] == machine_id() and roofs["memory"]["gb_per_s"] > 0
    for v in report["variants"]:
        m = v["metrics"]
        assert m["bytes_per_token"] == bytes_per_token(Path(v["onnx_dir"])).total
        if m.get("decode_timing_resolved", 1.0) >= 1.0:
            assert m["achieved_gb_per_s"] == pytest.approx(m["bytes_per_token"] * m["decode_tokens_per_s"] / 1e9,
                                                           rel=1e-3)
            assert m["bandwidth_share"] == pytest.approx(m["achieved_gb_per_s"] / roofs["memory"]["gb_per_s"],
                                                         rel=1e-3)
        else:  # a speed the timer could not resolve gets no share
            assert "achieved_gb_per_s" not in m and "kernel_share" not in m
    fp32, int8 = (next(v for v in report["variants"] if v["name"] == n)["metrics"] for n in ("fp32", "int8"))
    assert int8["bytes_per_token"] < fp32["bytes_per_token"] / 2.5, "int8 reads its head and layers in 8 bits"
    text = (out / "report.md").read_text()
    # the machine's roofs are described when they were measured (the table's header names the memory roof always)
    assert "## Roofline" in text and ("Roofs of this machine" in text) == bool(roofs)
    assert ("plots/roofline.png" in text) == bool(timed and roofs)
