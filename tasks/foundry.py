"""Prefect tasks that hand a variant to Foundry Local: inference_model.json, registration, smoke test."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from slmops.adapters.foundry import FoundryLocal
from slmops.prompt_template import INFERENCE_MODEL_JSON, write_inference_model_json


@task(name="register-with-foundry", task_run_name="register-{foundry_name}", cache_policy=NONE)
def register_with_foundry(variant_dir: str, foundry_name: str, content_key: str, metadata: dict,
                          cache_dir: str, model_config: dict) -> str:
    """Write the variant's inference_model.json and register the folder; return its Foundry Local id."""
    folder = Path(variant_dir)
    write_inference_model_json(folder, foundry_name, model_config)
    # the id's version follows the content: the model files (content_key) and what Foundry reads beside them
    content_hash = hashlib.sha256(content_key.encode() + (folder / INFERENCE_MODEL_JSON).read_bytes()).hexdigest()
    return FoundryLocal(cache_dir).register(folder, foundry_name, content_hash, metadata)


@task(name="smoke-test", task_run_name="smoke-{model_id}", cache_policy=NONE)
def smoke_test(model_id: str, prompt: str, cache_dir: str, max_tokens: int, timeout_s: float) -> dict:
    """Load the registered variant in Foundry Local, ask one eval prompt, unload."""
    return FoundryLocal(cache_dir).smoke_test(model_id, prompt, max_tokens=max_tokens, timeout_s=timeout_s)
