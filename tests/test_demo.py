"""`slmops demo` end to end on the trained demo model, as `make demo` runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slmops.adapters import genai
from slmops.demo import DEMO_VARIANTS


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
    report = json.loads((out / "report.json").read_text())
    assert [(v["name"], v["status"]) for v in report["variants"]] == [
        (v["name"], "succeeded") for v in DEMO_VARIANTS]
    for v in report["variants"]:
        assert f"{v['name']:<9}  {v['config']['precision']:<9}" in result.stdout  # the printed table
        assert v["size_bytes"] > 0 and Path(v["onnx_dir"]).is_dir()


def test_demo_fp32_export_answers_the_eval_set(demo_run, demo_model):
    out, _, _ = demo_run
    rows = [json.loads(line) for line in (demo_model / "eval.jsonl").read_text().splitlines() if line.strip()]
    answers = genai.answer_prompts(out / "variants" / "fp32", [r["prompt"] for r in rows], max_new_tokens=24)
    exact = sum(a == r["reference"].strip() for a, r in zip(answers, rows)) / len(rows)
    assert exact >= 0.9, f"fp32 ONNX export answered {exact:.0%} of {len(rows)} eval prompts exactly"


def test_demo_run_again_reuses_every_variant(demo_run):
    out, _, run = demo_run
    again = run()
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert {v["status"] for v in report["variants"]} == {"cached"}
