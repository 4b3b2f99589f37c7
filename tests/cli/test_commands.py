"""The slmops command as a user runs it: exit codes, one-line errors, nothing written on bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_spec

SLMOPS = [sys.executable, "-m", "slmops.cli"]


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SLMOPS, *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, **(env or {})})


def assert_refused(result: subprocess.CompletedProcess, message: str, out: Path) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == f"error: {message}"
    assert not out.exists(), "bad input must leave no output"


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "out"


def test_sweep_refuses_invalid_yaml(tmp_path, out):
    spec = tmp_path / "s.yaml"
    spec.write_text("model: [\n")
    result = run("sweep", str(spec), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {spec}: invalid YAML at line")
    assert not out.exists()


def test_sweep_refuses_an_unknown_precision(tiny_model, tmp_path, out):
    spec = write_spec(tmp_path / "s.yaml", tiny_model, [{"name": "a", "precision": "fp8"}])
    assert_refused(run("sweep", str(spec), "--out", str(out)),
                   f"{spec}: variants[0].precision: Input should be 'fp32', 'int8' or 'int4' (got 'fp8')", out)


def test_sweep_refuses_a_bad_block_size(tiny_model, tmp_path, out):
    spec = write_spec(tmp_path / "s.yaml", tiny_model, [{"name": "a", "precision": "int4", "block_size": 48}])
    assert_refused(run("sweep", str(spec), "--out", str(out)),
                   f"{spec}: variants[0].block_size: Input should be 16, 32, 64, 128 or 256 (got 48)", out)


def test_sweep_refuses_duplicate_names(tiny_model, tmp_path, out):
    spec = write_spec(tmp_path / "s.yaml", tiny_model, [{"name": "a", "precision": "fp32"},
                                                        {"name": "a", "precision": "int4"}])
    assert_refused(run("sweep", str(spec), "--out", str(out)),
                   f"{spec}: variants: two variants are named 'a'; each name must be unique", out)


def test_sweep_refuses_a_name_foundry_cannot_use(tiny_model, tmp_path, out):
    spec = write_spec(tmp_path / "s.yaml", tiny_model, [{"name": "int4 b32", "precision": "int4"}])
    result = run("sweep", str(spec), "--out", str(out))
    assert_refused(result, result.stderr.strip().removeprefix("error: "), out)
    assert "variant name 'int4 b32' cannot be a Foundry Local id; allowed: 1-64 characters" in result.stderr


def test_sweep_refuses_a_missing_model_folder(tmp_path, out):
    spec = write_spec(tmp_path / "s.yaml", tmp_path / "missing", [{"name": "a", "precision": "fp32"}])
    assert_refused(run("sweep", str(spec), "--out", str(out)), f"model folder not found: {tmp_path / 'missing'}",
                   out)


def test_sweep_refuses_a_model_without_weights(tiny_model, tmp_path, out):
    model = shutil.copytree(tiny_model, tmp_path / "m")
    (model / "model.safetensors").unlink()
    spec = write_spec(tmp_path / "s.yaml", model, [{"name": "a", "precision": "fp32"}])
    assert_refused(run("sweep", str(spec), "--out", str(out)),
                   f"{model}: no weights found; expected *.safetensors files", out)


def test_sweep_refuses_an_unsupported_architecture(tiny_model, tmp_path, out):
    model = shutil.copytree(tiny_model, tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (model / "config.json").write_text(json.dumps(config))
    spec = write_spec(tmp_path / "s.yaml", model, [{"name": "a", "precision": "fp32"}])
    result = run("sweep", str(spec), "--out", str(out))
    assert_refused(result, result.stderr.strip().removeprefix("error: "), out)
    assert "architecture GPT2LMHeadModel is not supported by the ONNX model builder; supported: " in result.stderr


def test_sweep_refuses_a_tokenizer_without_chat_template(tiny_model, tmp_path, out):
    model = shutil.copytree(tiny_model, tmp_path / "m")
    (model / "chat_template.jinja").unlink(missing_ok=True)
    tok = json.loads((model / "tokenizer_config.json").read_text())
    tok.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(tok))
    spec = write_spec(tmp_path / "s.yaml", model, [{"name": "a", "precision": "fp32"}])
    result = run("sweep", str(spec), "--out", str(out))
    assert_refused(result, result.stderr.strip().removeprefix("error: "), out)
    assert "the tokenizer has no chat template" in result.stderr


def test_doctor_prints_versions_and_passes():
    result = run("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   olive-ai" in result.stdout and "0.13.0" in result.stdout
    assert "ok   olive-ai + onnxruntime-genai builder" in result.stdout


def test_doctor_names_a_mismatched_pair_and_exits_1(tmp_path):
    # a distribution record that shadows the installed genai: what importlib.metadata sees after a bad upgrade
    dist = tmp_path / "onnxruntime_genai-0.16.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-genai\nVersion: 0.16.0\n")
    result = run("doctor", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    assert "BAD  onnxruntime-genai                      0.16.0 (needs 0.14.1)" in result.stdout
    assert "BAD  olive-ai + onnxruntime-genai builder   olive-ai 0.13.0 with onnxruntime-genai 0.16.0" in result.stdout


def test_sweep_command_prints_the_table_and_exits_0(tiny_model, tmp_path, out):
    spec = write_spec(tmp_path / "s.yaml", tiny_model, [{"name": "int4", "precision": "int4", "block_size": 32}])
    result = run("sweep", str(spec), "--out", str(out), "--work-dir", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "int4     int4       builder  succeeded" in result.stdout
    assert json.loads((out / "report.json").read_text())["variants"][0]["status"] == "succeeded"


def test_sweep_command_exits_1_when_every_variant_fails(tiny_model, tmp_path, out):
    spec = write_spec(tmp_path / "s.yaml", tiny_model,
                      [{"name": "hqq", "precision": "int4", "method": "hqq", "block_size": 32}])
    result = run("sweep", str(spec), "--out", str(out), "--work-dir", str(tmp_path / "work"))
    assert result.returncode == 1
    assert "hqq      int4       hqq     failed" in result.stdout
    assert f"error: no variant succeeded; see {out.resolve() / 'report.json'}" in result.stderr.splitlines()


def test_champion_with_no_name_lists_every_registered_model_and_errors_are_one_line_unless_debug(tiny_model,
                                                                                                 tmp_path):
    work = tmp_path / "work"
    for name in ("shop", "support"):
        spec = write_spec(tmp_path / f"{name}.yaml", tiny_model, [{"name": "int4", "precision": "int4"}], name=name)
        swept = run("sweep", str(spec), "--out", str(tmp_path / name), "--work-dir", str(work))
        assert swept.returncode == 0, swept.stderr[-3000:]

    listed = run("champion", "--work-dir", str(work))
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["model", "champion", "version", "foundry", "id", "promoted", "at"]
    assert [row[:4] for row in rows[1:3]] == [["shop", "int4", "1", "shop-int4:1"],
                                              ["support", "int4", "1", "support-int4:1"]], listed.stdout
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", row[4]) for row in rows[1:3]), listed.stdout

    refused = run("champion", "nosuch", "--work-dir", str(work))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == ["error: no registered model 'nosuch'; registered: shop, support"]
    debugged = run("champion", "nosuch", "--work-dir", str(work), "--debug")
    assert debugged.returncode == 2
    lines = debugged.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):" and lines[-1] == refused.stderr.strip()


def test_help_lists_every_command_in_the_order_of_the_pipeline_one_line_each():
    shown = run("--help")
    assert shown.returncode == 0
    listed = shown.stdout.split("commands, in the order of the pipeline:\n  COMMAND\n")[1].splitlines()
    assert [line.split()[0] for line in listed] == ["doctor", "make-demo-model", "sweep", "demo", "publish", "watch",
                                                    "foundry", "compare", "promote", "champion", "sync"]
    assert all(len(line.split(maxsplit=1)) == 2 and len(line) <= 80 for line in listed), listed


def test_foundry_commands_list_chat_export_and_remove(tiny_model, tmp_path, out):
    work = tmp_path / "work"
    spec = write_spec(tmp_path / "s.yaml", tiny_model, [{"name": "int4", "precision": "int4", "block_size": 32}])
    env = {"SLMOPS_FOUNDRY_CACHE": str(tmp_path / "foundry")}
    assert run("sweep", str(spec), "--out", str(out), "--work-dir", str(work), env=env).returncode == 0
    listed = run("foundry", "list", "--work-dir", str(work), env=env)
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[1].split()[:2] == ["tiny-int4:1", "int4"]
    chat = run("foundry", "chat", "tiny-int4:1", "hello", "--max-tokens", "4", "--work-dir", str(work), env=env)
    assert chat.returncode == 0 and len(chat.stdout) > 1, chat.stderr
    exported = run("foundry", "export", "--to", str(tmp_path / "cli-cache"), "--work-dir", str(work), env=env)
    assert exported.returncode == 0, exported.stderr
    folder = tmp_path / "cli-cache" / "tiny-int4"
    assert json.loads((folder / "inference_model.json").read_text())["Name"] == "tiny-int4"
    assert (folder / "genai_config.json").is_file() and not (folder / "download.tmp").exists()
    shutil.rmtree(out / "variants" / "int4")
    assert "(MISSING)" in run("foundry", "list", "--work-dir", str(work), env=env).stdout
    assert run("foundry", "remove", "tiny-int4:1", "--work-dir", str(work), env=env).returncode == 0
    again = run("foundry", "remove", "tiny-int4:1", "--work-dir", str(work), env=env)
    assert again.returncode == 2
    assert again.stderr.strip() == (f"error: no Foundry Local model 'tiny-int4:1' in {tmp_path / 'foundry'}; "
                                    "`slmops foundry list` shows the ids")
