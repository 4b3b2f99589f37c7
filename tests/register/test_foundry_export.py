"""The layout `slmops foundry export` writes for the Foundry Local CLI's cache on Windows and macOS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmops.adapters.foundry import FoundryLocal
from slmops.errors import SpecError
from slmops.foundry_export import export_for_foundry_cli
from slmops.prompt_template import derive_prompt_template


def test_export_lays_out_one_folder_per_model(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    variants = {"shop-qwen2-fp32": family_dirs["qwen2"], "shop-gemma-fp32": family_dirs["gemma"]}

    exported = export_for_foundry_cli(variants, tmp_path / "cache")

    assert exported == [tmp_path / "cache" / name for name in variants]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(variants)
    for folder, (name, source) in zip(exported, variants.items()):
        document = json.loads((folder / "inference_model.json").read_text())
        assert document["Name"] == name == folder.name
        assert document["PromptTemplate"] == derive_prompt_template(source)
        genai = json.loads((folder / "genai_config.json").read_text())
        assert (folder / genai["model"]["decoder"]["filename"]).is_file()
        for needed in ("model.onnx.data", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            assert (folder / needed).is_file(), needed
        # no download in progress, and none of Olive's run records
        assert not list(folder.rglob("download.tmp"))
        assert not {"footprint.json", "run_history.txt", "model_config.json"} & {p.name for p in folder.iterdir()}


def test_export_replaces_an_earlier_export(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    export_for_foundry_cli({"shop": family_dirs["phi3"]}, tmp_path)
    (tmp_path / "shop" / "download.tmp").write_text("an interrupted copy")

    [folder] = export_for_foundry_cli({"shop": family_dirs["llama3"]}, tmp_path)

    assert json.loads((folder / "inference_model.json").read_text())["PromptTemplate"] == derive_prompt_template(
        family_dirs["llama3"]
    )
    assert not (folder / "download.tmp").exists()
    # nothing half-built or set aside is left beside it
    assert [p.name for p in tmp_path.iterdir()] == ["shop"]


def test_export_hard_links_model_files_on_the_same_filesystem(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    [folder] = export_for_foundry_cli({"linked": family_dirs["mistral"]}, tmp_path)

    source = family_dirs["mistral"] / "model.onnx.data"
    if source.stat().st_dev != tmp_path.stat().st_dev:
        pytest.skip("the session's models live on another filesystem")
    assert (folder / "model.onnx.data").stat().st_ino == source.stat().st_ino


def test_export_keeps_settings_of_an_existing_inference_model_json(variant_copy, tmp_path: Path) -> None:
    source = variant_copy("qwen2")
    (source / "inference_model.json").write_text(
        json.dumps({"Name": "old-name", "PromptTemplate": {"prompt": "{Content}"}, "ModelConfig": {"max_length": 64}})
    )

    [folder] = export_for_foundry_cli({"new-name": source}, tmp_path / "out")

    document = json.loads((folder / "inference_model.json").read_text())
    assert document == {
        "Name": "new-name",
        "PromptTemplate": {"prompt": "{Content}"},
        "ModelConfig": {"max_length": 64},
    }


def test_export_rejects_a_name_that_is_not_a_folder_name(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="export name 'shop:1' is not allowed"):
        export_for_foundry_cli({"shop:1": family_dirs["qwen2"]}, tmp_path)


def test_export_folder_is_a_complete_model_for_foundry_local(
    family_dirs: dict[str, Path], foundry: FoundryLocal, tmp_path: Path
) -> None:
    [folder] = export_for_foundry_cli({"exported-gemma": family_dirs["gemma"]}, tmp_path)

    model_id = foundry.register(folder, "exported-gemma", "e1", {"precision": "fp32"})

    assert foundry.smoke_test(model_id, "hello", max_tokens=4)["passed"]
