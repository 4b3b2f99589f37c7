"""Registration, smoke tests, chat, listing and removal through the real Foundry Local runtime."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest
from chat_families import FAMILIES
from foundry_workers import list_and_ask, register_many
from tokenizers import Tokenizer

from slmops.adapters.foundry import INDEX_NAME, FoundryLocal
from slmops.errors import InputError, ToolchainError, VariantError
from slmops.evaluate.worker import prompt_token_counter
from slmops.prompt_template import CONTENT, derive_prompt_template

PROMPT = "What does the red widget cost?"


def _prompt_tokens(folder: Path, text: str) -> int:
    """How many tokens the runtime sees for text: tokenizer.json, adding nothing (as onnxruntime-genai does)."""
    return len(Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_register_family_loads_and_answers(family: str, family_dirs: dict[str, Path], foundry: FoundryLocal) -> None:
    folder = family_dirs[family]

    model_id = foundry.register(folder, f"chat-{family}", f"hash-{family}", {"precision": "fp32"})
    result = foundry.smoke_test(model_id, PROMPT, max_tokens=8)

    assert model_id == f"chat-{family}:1"
    # random weights answer garbage: that an answer arrived is the check, not its text
    assert result["passed"], result
    assert result["error"] is None
    assert result["completion_tokens"] > 0
    assert result["finish_reason"] in ("STOP", "LENGTH")
    # the runtime framed the prompt exactly as the derived PromptTemplate does (one BOS, same turns)
    expected = derive_prompt_template(folder)["prompt"].replace(CONTENT, PROMPT)
    assert result["prompt_tokens"] == _prompt_tokens(folder, expected)
    # and the measuring process, which sizes the speed prompts, counts what the runtime counted
    assert prompt_token_counter(folder)(PROMPT) == result["prompt_tokens"]


def test_register_records_metadata_in_foundry_and_index(
    family_dirs: dict[str, Path], foundry: FoundryLocal, foundry_cache: Path
) -> None:
    settings = {"method": "builder", "block_size": 32}
    metadata = {"display_name": "Meta Qwen2 int4", "precision": "int4", "quantization": settings}
    model_id = foundry.register(family_dirs["qwen2"], "meta-qwen2", "h1", metadata)

    model = foundry._catalog.get_model_variant(model_id)
    info = model.info
    assert info.display_name == "Meta Qwen2 int4"
    assert info.task == "chat-completion"
    assert info.context_length == 512
    assert info.runtime.device_type == "CPU"
    assert info.runtime.execution_provider == "CPUExecutionProvider"
    assert model.get_string_property("precision") == "int4"
    assert json.loads(model.get_string_property("quantization")) == settings
    entry = json.loads((foundry_cache / INDEX_NAME).read_text())["meta-qwen2"][0]
    assert entry["content_hash"] == "h1"
    assert entry["path"] == str(family_dirs["qwen2"].resolve())
    assert entry["metadata"]["quantization"] == settings


def test_register_same_content_reuses_id_and_new_content_bumps_version(
    family_dirs: dict[str, Path], foundry: FoundryLocal
) -> None:
    first = foundry.register(family_dirs["phi3"], "bump", "content-a", {"precision": "fp32"})
    again = foundry.register(family_dirs["phi3"], "bump", "content-a", {"precision": "fp32"})
    changed = foundry.register(family_dirs["llama3"], "bump", "content-b", {"precision": "fp32"})
    back = foundry.register(family_dirs["phi3"], "bump", "content-a", {"precision": "fp32"})

    assert (first, again, changed, back) == ("bump:1", "bump:1", "bump:2", "bump:1")
    assert [r["id"] for r in foundry.list() if r["name"] == "bump"] == ["bump:1", "bump:2"]


def test_register_raises_when_id_is_taken_by_other_content(
    family_dirs: dict[str, Path], foundry: FoundryLocal, foundry_cache: Path
) -> None:
    foundry.register(family_dirs["gemma"], "taken", "content-a", {"precision": "fp32"})
    # slmops's index is lost (deleted by hand): version 1 looks free, but Foundry Local still holds taken:1
    index_path = foundry_cache / INDEX_NAME
    index = json.loads(index_path.read_text())
    index.pop("taken")
    index_path.write_text(json.dumps(index))

    with pytest.raises(VariantError, match=r"taken:1 is already registered .* nothing was changed"):
        foundry.register(family_dirs["qwen2"], "taken", "content-b", {"precision": "fp32"})
    # the same content is recognised by the hash stored in Foundry Local and adopted back into the index
    assert foundry.register(family_dirs["gemma"], "taken", "content-a", {"precision": "fp32"}) == "taken:1"
    assert foundry._catalog.get_model_variant("taken:1").get_path() == str(family_dirs["gemma"].resolve())


def test_register_from_two_processes_loses_nothing(
    family_dirs: dict[str, Path], foundry: FoundryLocal, foundry_cache: Path
) -> None:
    ctx = multiprocessing.get_context("spawn")  # fork would copy this process's running Foundry Local threads
    start, results = ctx.Event(), ctx.Queue()
    folder = str(family_dirs["qwen2"])
    jobs = {
        worker: [(folder, "race", f"{worker}-{i}") for i in range(3)] + [(folder, "race-shared", "same")]
        for worker in ("a", "b")
    }
    processes = [
        ctx.Process(target=register_many, args=(str(foundry_cache), jobs[w], start, results)) for w in jobs
    ]
    for p in processes:
        p.start()
    start.set()
    reported = [results.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(timeout=60)

    assert [p.exitcode for p in processes] == [0, 0]
    race = sorted(i for ids in reported for i in ids[:3])
    assert race == [f"race:{v}" for v in range(1, 7)]
    assert [ids[3] for ids in reported] == ["race-shared:1", "race-shared:1"]
    rows = {r["id"]: r for r in foundry.list() if r["name"].startswith("race")}
    assert sorted(rows) == sorted(race + ["race-shared:1"])
    assert all(r["in_catalog"] for r in rows.values())
    assert len({r["content_hash"] for r in rows.values()}) == 7


def ask_in_a_new_process(foundry_cache: Path, model_id: str) -> tuple[list[str], dict]:
    """The ids a fresh process sees in the cache folder, and its smoke test of model_id."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    process = ctx.Process(target=list_and_ask, args=(str(foundry_cache), model_id, results))
    process.start()
    answer = results.get(timeout=120)
    process.join(timeout=60)
    return answer


def test_registration_is_seen_by_a_new_process(
    family_dirs: dict[str, Path], foundry: FoundryLocal, foundry_cache: Path
) -> None:
    model_id = foundry.register(family_dirs["mistral"], "persist", "p1", {"precision": "fp32"})
    ids, smoke = ask_in_a_new_process(foundry_cache, model_id)

    assert model_id in ids
    assert smoke["passed"], smoke


def test_list_marks_deleted_folder_missing_and_remove_still_works(variant_copy, foundry: FoundryLocal) -> None:
    folder = variant_copy("phi3", "doomed")
    model_id = foundry.register(folder, "doomed", "d1", {"precision": "int4"})
    shutil.rmtree(folder)

    row = next(r for r in foundry.list() if r["id"] == model_id)
    assert row["path_exists"] is False
    assert row["size_bytes"] is None
    assert row["precision"] == "int4"
    assert row["in_catalog"] is True
    assert foundry.smoke_test(model_id, PROMPT)["passed"] is False

    foundry.remove(model_id)

    assert model_id not in [r["id"] for r in foundry.list()]
    assert foundry._catalog.get_model_variant(model_id) is None


def test_content_whose_folder_was_deleted_and_rebuilt_elsewhere_answers_from_there_in_a_new_process(
    variant_copy, foundry: FoundryLocal, foundry_cache: Path
) -> None:
    first = variant_copy("qwen2", "moved-a")
    old_id = foundry.register(first, "moved", "m1", {"precision": "int4"})
    second = shutil.copytree(first, first.parent / "moved-b")
    shutil.rmtree(first)

    model_id = foundry.register(second, "moved", "m1", {"precision": "int4"})

    assert (old_id, model_id) == ("moved:1", "moved:2")  # Foundry Local keeps an id's old path for other processes
    assert [r["id"] for r in foundry.list() if r["name"] == "moved"] == ["moved:2"]
    ids, smoke = ask_in_a_new_process(foundry_cache, model_id)
    assert model_id in ids and smoke["passed"], smoke


def test_list_reports_size_and_folder(family_dirs: dict[str, Path], foundry: FoundryLocal) -> None:
    model_id = foundry.register(family_dirs["llama3"], "sized", "s1", {"precision": "fp32"})

    row = next(r for r in foundry.list() if r["id"] == model_id)

    folder = family_dirs["llama3"].resolve()
    assert row["path"] == str(folder)
    assert row["path_exists"] is True
    assert row["size_bytes"] == sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert row["registered_at"].endswith("+00:00")


def test_remove_unloads_a_loaded_model(family_dirs: dict[str, Path], foundry: FoundryLocal) -> None:
    model_id = foundry.register(family_dirs["qwen2"], "loaded", "l1", {"precision": "fp32"})
    foundry._catalog.get_model_variant(model_id).load()

    foundry.remove(model_id)

    assert foundry._catalog.get_model_variant(model_id) is None
    assert model_id not in [m.id for m in foundry._catalog.get_loaded_models()]


def test_remove_unknown_id_raises_input_error(foundry: FoundryLocal) -> None:
    with pytest.raises(InputError, match="no Foundry Local model 'nothing:3'"):
        foundry.remove("nothing:3")
    with pytest.raises(InputError, match="not a Foundry Local id"):
        foundry.remove("nothing")


def test_smoke_test_unknown_id_raises_input_error(foundry: FoundryLocal) -> None:
    with pytest.raises(InputError, match="slmops foundry list"):
        foundry.smoke_test("ghost:1", PROMPT)


def test_smoke_test_reports_timeout(family_dirs: dict[str, Path], foundry: FoundryLocal) -> None:
    model_id = foundry.register(family_dirs["qwen2"], "slow", "t1", {"precision": "fp32"})

    result = foundry.smoke_test(model_id, PROMPT, max_tokens=400, timeout_s=0.001)

    assert result["passed"] is False
    assert result["error"] == "timed out after 0.001 s"


def test_chat_stream_yields_one_piece_per_token(family_dirs: dict[str, Path], foundry: FoundryLocal) -> None:
    model_id = foundry.register(family_dirs["qwen2"], "stream", "c1", {"precision": "fp32"})

    pieces = list(foundry.chat_stream(model_id, PROMPT, max_tokens=5, temperature=0.0))

    # at temperature 0 this random model never emits its stop token in 5 steps
    assert len(pieces) == 5
    assert all(isinstance(p, str) and p for p in pieces)
    assert model_id not in [m.id for m in foundry._catalog.get_loaded_models()]


def test_a_drained_stream_counts_its_tokens_as_the_runtime_does(family_dirs: dict[str, Path],
                                                                foundry: FoundryLocal) -> None:
    model_id = foundry.register(family_dirs["qwen2"], "stream", "c1", {"precision": "fp32"})
    stream = foundry.chat_stream(model_id, PROMPT, max_tokens=7, temperature=0.0)
    assert stream.completion_tokens is None, "known once drained"

    pieces = list(stream)

    reported = foundry.smoke_test(model_id, PROMPT, max_tokens=7)
    assert (stream.completion_tokens, stream.finish_reason) == (reported["completion_tokens"],
                                                                reported["finish_reason"]) == (7, "LENGTH")
    assert len(pieces) <= stream.completion_tokens  # a token with no text of its own streams no piece


def test_foundry_local_unwritable_cache_dir_raises_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cache = blocker / "cache"

    with pytest.raises(InputError, match=f"cache folder {cache} is not writable"):
        FoundryLocal(cache)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_foundry_local_read_only_cache_dir_raises_naming_it(tmp_path: Path) -> None:
    cache = tmp_path / "read-only"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        with pytest.raises(InputError, match=f"cache folder {cache} is not writable"):
            FoundryLocal(cache)
    finally:
        cache.chmod(0o700)


def test_foundry_local_second_cache_dir_in_process_raises(foundry: FoundryLocal, tmp_path: Path) -> None:
    with pytest.raises(ToolchainError, match="one model cache per process"):
        FoundryLocal(tmp_path / "another-cache")
    # the same folder again shares the process's manager
    assert FoundryLocal(foundry.cache_dir).list() == foundry.list()
