"""Prefect tasks of the register step: the variant in Foundry Local, and one prompt through it (slmops.register
does the work)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from slmops import register as registering
from slmops.config import FoundrySpec
from slmops.errors import SlmopsError, VariantError
from slmops.keys import smoke_test_key
from slmops.variant import VariantResult


@task(name="register", task_run_name="register-{result.name}", cache_policy=NONE)
def register(result: VariantResult, model_name: str, foundry: FoundrySpec, cache_dir: Path) -> VariantResult:
    """Write the variant's inference_model.json and register its folder with Foundry Local."""
    variant = result.config
    try:
        model_id = registering.register(
            Path(result.onnx_dir), registering.foundry_name(model_name, variant), result.content_key,
            registering.registration_metadata(model_name, variant), cache_dir,
            foundry.model_config_overrides.model_dump(),
            registering.serving_threads(foundry.intra_op_threads))
    except SlmopsError as err:
        raise VariantError(f"variant {variant.name}: Foundry Local registration failed: {err}") from err
    return result.model_copy(update={"foundry_model_id": model_id})


@task(name="smoke-test", task_run_name="smoke-test-{result.name}", cache_policy=NONE)
def smoke_test(result: VariantResult, prompt: str, foundry: FoundrySpec, cache_dir: Path, record_dir: Path,
               versions: dict[str, str]) -> VariantResult:
    """Ask the registered variant one prompt in Foundry Local (reused while nothing it depends on changed); a
    variant that does not answer is failed. A variant that is measured is smoke-tested by its measuring process
    instead (``smoke_ask``, tasks/evaluate.py)."""
    ask = smoke_ask(result, prompt, foundry, record_dir, versions)
    record = registering.SmokeTestRecord(ask.record, ask.key)
    smoke = record.passed_before()
    if smoke is None:
        smoke = registering.smoke_test(result.foundry_model_id, prompt, cache_dir, ask.max_tokens, ask.timeout_s)
        record.save(smoke)
    return registering.with_smoke_test(result, smoke)


def smoke_ask(result: VariantResult, prompt: str, foundry: FoundrySpec, record_dir: Path,
              versions: dict[str, str]) -> registering.SmokeAsk:
    """The variant's smoke test: what to ask, and its record with the key of everything it depends on."""
    return registering.SmokeAsk(
        prompt=prompt, max_tokens=foundry.smoke_max_tokens, timeout_s=foundry.smoke_timeout_s,
        record=Path(record_dir) / f"{result.name}.json",
        key=smoke_test_key(result.content_key, result.foundry_model_id, prompt, foundry.smoke_max_tokens, versions))
