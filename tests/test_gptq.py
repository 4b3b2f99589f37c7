"""GPTQ int4 (Olive's `Gptq` pass on CPU, then ModelBuilder): calibrated on rows no variant is measured on, built
with no download, loaded and run; and the spec and model shapes it cannot take refused in one line before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slmops import calibration
from slmops.adapters import genai
from slmops.calibration import CalibrationSpec
from slmops.errors import InputError
from slmops.evalset import load_eval_set

ROOT = Path(__file__).resolve().parents[1]


def _rows(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"question {i}?", "reference": f"answer {i}."} for i in range(n)]


def _jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_holdout_is_seeded_disjoint_from_the_measured_rows_and_leaves_rows_to_measure(tmp_path):
    eval_set = _jsonl(tmp_path / "eval.jsonl", _rows(40))
    calib = calibration.prepare(CalibrationSpec(samples=8, holdout=0.25, seed=3), eval_set, tmp_path / "c")
    held, measured = load_eval_set(calib.rows_file), load_eval_set(calib.measured_file)
    assert (calib.rows, calib.measured_rows) == (8, 32) == (len(held), len(measured))  # 0.25 x 40 = 10, capped at 8
    assert {r["prompt"] for r in held}.isdisjoint(r["prompt"] for r in measured)
    assert sorted(r["prompt"] for r in held + measured) == sorted(r["prompt"] for r in _rows(40))
    again = calibration.prepare(CalibrationSpec(samples=8, holdout=0.25, seed=3), eval_set, tmp_path / "c")
    assert again == calib  # the same seed holds out the same rows (and names the same files)
    other = calibration.prepare(CalibrationSpec(samples=8, holdout=0.25, seed=4), eval_set, tmp_path / "c")
    assert other.sha256 != calib.sha256
    assert len(calibration.holdout_indices(2, 0.9, 32, 0)) == 1  # a row is always left to measure


def test_a_named_calibration_set_calibrates_alone_and_the_eval_set_is_measured_whole(tmp_path):
    calib_set = _jsonl(tmp_path / "calib.jsonl", _rows(5))
    calib = calibration.prepare(CalibrationSpec(dataset=calib_set, samples=3), None, tmp_path / "c")
    assert (calib.source, calib.rows, calib.measured_file) == ("dataset", 3, None)
    assert [r["prompt"] for r in load_eval_set(calib.rows_file)] == ["question 0?", "question 1?", "question 2?"]


def test_a_calibration_set_sharing_rows_with_the_eval_set_is_refused(tmp_path):
    eval_set = _jsonl(tmp_path / "eval.jsonl", _rows(10))
    calib_set = _jsonl(tmp_path / "calib.jsonl", _rows(12)[8:])
    with pytest.raises(InputError, match=r"shares 2 prompt\(s\) with the eval set .*flatters itself"):
        calibration.check(CalibrationSpec(dataset=calib_set), eval_set, ["gptq"])
    with pytest.raises(InputError, match=r"needs calibration rows: .*at least 2 rows to hold some out of \(it has 0\)"):
        calibration.check(CalibrationSpec(), None, ["gptq"])
    calibration.check(CalibrationSpec(), None, [])  # no calibrated variant: nothing is needed


def _sweep(tmp_path: Path, model: Path, variants: list[dict], **more) -> subprocess.CompletedProcess:
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"model": {"path": str(model), "name": "m"}, "variants": variants, **more}))
    return subprocess.run([sys.executable, "-m", "slmops.cli", "sweep", str(spec), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.mark.parametrize(("variants", "message"), [
    ([{"name": "v", "precision": "int8", "method": "gptq"}],
     "method 'gptq' cannot make int8; allowed: rtn, dynamic"),
    ([{"name": "v", "precision": "int4", "method": "gptq", "nodes_to_exclude": ["/lm_head/MatMul"]}],
     "nodes_to_exclude does not apply to int4 with method 'gptq'"),
    ([{"name": "v", "precision": "int4", "method": "gptq", "block_size": 128}],
     "variant v: method gptq quantizes in whole blocks of a layer's inputs, and block_size 128 does not divide "
     "hidden_size 192"),
])
def test_a_gptq_variant_that_cannot_be_built_is_a_one_line_error_before_any_work(tmp_path, demo_model, variants,
                                                                                 message):
    done = _sweep(tmp_path, demo_model, variants)
    assert done.returncode == 2, done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert message in line
    assert not (tmp_path / "out").exists()


def test_a_gptq_sweep_calibrates_on_a_holdout_and_measures_every_variant_on_the_rest(tmp_path, demo_model):
    done = _sweep(tmp_path, demo_model, [
        {"name": "rtn-b32", "precision": "int4", "block_size": 32, "symmetric": False},
        {"name": "gptq-b32", "precision": "int4", "method": "gptq", "block_size": 32, "symmetric": False},
    ], evaluation={"max_eval_items": 16}, promotion={"enabled": False})
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    calib = report["calibration"]
    assert (calib["source"], calib["rows"], calib["measured_rows"]) == ("eval-set holdout", 32, 160)
    held = {r["prompt"] for r in load_eval_set(Path(calib["rows_file"]))}
    by_name = {v["name"]: v for v in report["variants"]}
    gptq = by_name["gptq-b32"]
    assert gptq["status"] == "succeeded", gptq.get("error")
    assert gptq["config"]["calibration"] == calib["sha256"]
    graph = genai.graph_summary(out / "variants" / "gptq-b32")
    assert graph["lm_head"] == "MatMulNBits" and graph["matmul_nbits_bits"] == [4]
    assert genai.load_and_generate(out / "variants" / "gptq-b32", "hello", max_new_tokens=3)
    for name in by_name:  # calibrated or not, no variant is measured on a calibration row
        items = json.loads((out / "evaluations" / name / "evaluation.json").read_text())["items"]
        assert len(items) == 16 and held.isdisjoint(i["prompt"] for i in items)
        assert by_name[name]["metrics"]["kl_div_mean"] >= 0
    markdown = (out / "report.md").read_text()
    assert "GPTQ calibrated on 32 rows held out of the eval set (seed 0); every variant is measured on the other " \
           "160 rows only." in markdown
    assert f"| gptq-b32 | gptq | 32 | {gptq['metrics']['build_seconds']:.3g} s |" in markdown
