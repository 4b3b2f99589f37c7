"""Register: hand a variant folder to Foundry Local, the runtime that will serve it, and prove it answers there.

    model_id = register(folder, "demo-shop-int4-b32", variant_key, metadata, cache_dir, overrides)
    smoke = smoke_test(model_id, "What colour is the lamp?", cache_dir, max_tokens=32, timeout_s=120)

The manual route's `inference_model.json` written by hand and `foundry cache ls` / `foundry model run`: the file is
derived from the model's own chat template (slmops.prompt_template), the folder is registered as
``<model>-<variant>:<version>`` (the version goes up when the content changes), and one eval prompt goes through
it. A passed smoke test is reused while nothing it depends on has changed (``SmokeTestRecord``). A variant that is
measured is smoke-tested by its measuring process, as the first request to the model it loads (``SmokeAsk``).

``foundry.model_config_overrides.max_length`` is written where Foundry Local reads it: genai_config.json's context
(``serve_with``), and so is ``foundry.intra_op_threads`` (the decoder's session options). Foundry Local 2.2.1 sizes
every request's KV cache for ``model.context_length`` and reads no ``max_length`` from inference_model.json: a 0.5B
Qwen2 built for 32768 tokens holds 805 MB more per loaded model, and a short request takes 60-125 ms longer, than
at 4096 (docs/runtime-overhead.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict

from slmops import staging
from slmops.adapters.genai import context_of
from slmops.errors import InputError
from slmops.files import read_json, write_json
from slmops.keys import registration_key
from slmops.prompt_template import INFERENCE_MODEL_JSON, write_inference_model_json
from slmops.variant import SmokeTest, Variant, VariantResult

GENAI_CONFIG = "genai_config.json"
BUILT_GENAI_CONFIG = "genai_config.built.json"


def foundry_name(model_name: str, variant: Variant) -> str:
    return f"{model_name}-{variant.name}"


def registration_metadata(model_name: str, variant: Variant) -> dict[str, Any]:
    """What Foundry Local keeps about the variant beside its folder."""
    return {"display_name": f"{model_name} {variant.name}", "precision": variant.precision,
            "quantization": {k: v for k, v in variant.knobs().items() if k not in ("name", "precision")},
            "source_model": model_name}


def register(folder: Path, name: str, variant_key: str, metadata: dict[str, Any], cache_dir: Path,
             model_config: dict[str, Any], threads: int | None = None) -> str:
    """Set the context and threads Foundry Local serves the folder with, write its inference_model.json and register
    it with Foundry Local; return its id."""
    from slmops.adapters.foundry import FoundryLocal

    serve_with(folder, model_config.get("max_length"), threads)
    write_inference_model_json(folder, name, model_config)
    content = registration_key(variant_key, (folder / INFERENCE_MODEL_JSON).read_bytes(),
                               (folder / GENAI_CONFIG).read_bytes())
    return FoundryLocal(cache_dir).register(folder, name, content, metadata)


def serving_threads(setting: int | str) -> int | None:
    """The intra-op thread count ``foundry.intra_op_threads`` asks for: the count; this machine's physical cores for
    ``physical_cores`` (what onnxruntime gives a session by default); None for ``runtime``, or when the machine does
    not say its physical cores (genai_config.json left as built: onnxruntime-genai then uses half the logical cores
    of the machine that serves it)."""
    if setting == "runtime":
        return None
    if setting == "physical_cores":
        return psutil.cpu_count(logical=False)
    return int(setting)


def serve_with(folder: Path, max_length: int | None, threads: int | None = None) -> None:
    """Make genai_config.json's context (``model.context_length`` and ``search.max_length``) max_length, and the
    decoder's ``session_options.intra_op_num_threads`` threads; each as the variant was built when None.

    The built file is kept beside it (``genai_config.built.json``) the first time it is changed, so that taking the
    overrides away gives back the very bytes it was built with. Raises InputError when max_length is longer than the
    model's own context."""
    folder = Path(folder)
    current = (folder / GENAI_CONFIG).read_bytes()
    built_path = folder / BUILT_GENAI_CONFIG
    built = built_path.read_bytes() if built_path.is_file() else current
    document = json.loads(built)
    own = context_of(document)
    if max_length is not None and own is not None and max_length > own:
        raise InputError(f"foundry.model_config_overrides.max_length is {max_length}, longer than the model's own "
                         f"context of {own} tokens ({folder / GENAI_CONFIG}); allowed: 1 to {own}, or unset")
    if max_length is not None:
        document.setdefault("model", {})["context_length"] = max_length
        document.setdefault("search", {})["max_length"] = max_length
    if threads is not None:
        decoder = document.setdefault("model", {}).setdefault("decoder", {})
        decoder.setdefault("session_options", {})["intra_op_num_threads"] = threads
    wanted = built if max_length is None and threads is None else (json.dumps(document, indent=4) + "\n").encode()
    if wanted != current:
        if not built_path.is_file():
            staging.rewrite(folder, BUILT_GENAI_CONFIG, current)
        staging.rewrite(folder, GENAI_CONFIG, wanted)


def smoke_test(model_id: str, prompt: str, cache_dir: Path, max_tokens: int, timeout_s: float) -> SmokeTest:
    """Load the registered variant in Foundry Local, ask one prompt at temperature 0, unload."""
    from slmops.adapters.foundry import FoundryLocal

    return smoke_result(FoundryLocal(cache_dir).smoke_test(model_id, prompt, max_tokens=max_tokens,
                                                           timeout_s=timeout_s), prompt)


def smoke_result(answered: dict[str, Any], prompt: str) -> SmokeTest:
    """What the runtime's smoke test said (FoundryLocal.smoke_test), as the variant's record of it."""
    return SmokeTest(passed=answered["passed"], answer=answered["answer"], seconds=answered["seconds"], prompt=prompt,
                     error=answered["error"])


class SmokeAsk(BaseModel):
    """A variant's smoke test for its measuring process to ask first, with the model it loads for the measurements
    (one load for both), and the record kept of it."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    max_tokens: int
    timeout_s: float
    record: Path
    key: str

    def request(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "max_tokens": self.max_tokens, "timeout_s": self.timeout_s}


def with_smoke_test(result: VariantResult, smoke: SmokeTest) -> VariantResult:
    """The variant with its smoke test; failed, saying why, when the smoke test did not pass."""
    result = result.model_copy(update={"smoke_test": smoke})
    if not smoke.passed:
        return result.failed(f"variant {result.name}: smoke test in Foundry Local failed: {smoke.error}")
    return result


class SmokeTestRecord:
    """A variant's last smoke test in the output folder, with the key of everything it depended on."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = Path(path), key

    def passed_before(self) -> SmokeTest | None:
        """The smoke test recorded with this key, if it passed: loading the model again would say nothing new."""
        record = read_json(self.path)
        if not record or record.get("key") != self.key or not record["result"]["passed"]:
            return None
        return SmokeTest.model_validate({**record["result"], "reused": True})

    def save(self, result: SmokeTest) -> None:
        write_json(self.path, {"key": self.key, "result": result.model_dump(mode="json", exclude={"reused"})})
