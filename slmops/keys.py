"""Content keys: what a cached thing was made from, hashed. One function per kind of thing, so a newcomer finds in
one place what invalidates what.

Keys hash content, never paths or times: the source folder's file hashes, resolved knobs, settings, the eval set's
bytes and the tool versions. Every cached folder or record stores the key it was made with, and is reused only
when the key matches.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from slmops.variant import Variant

RECIPE_VERSION = 3  # bump when the way things are built or measured changes, so old cache entries stop matching
# 3: rtn variants quantize the LM head; ModelBuilder int4 `default` variants are made from the fp32 export


def content_key(*parts: Any) -> str:
    """A stable hash of JSON-able parts."""
    blob = json.dumps([RECIPE_VERSION, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def export_key(source_sha: str, versions: dict[str, str]) -> str:
    """The fp32 export of a source folder."""
    return content_key("fp32-export", source_sha, versions)


def variant_key(source_sha: str, variant: Variant, versions: dict[str, str]) -> str:
    """A variant folder: its knobs (not its name: a renamed variant is the same content)."""
    knobs = {k: v for k, v in variant.knobs().items() if k != "name"}
    return content_key("variant", source_sha, knobs, versions)


def registration_key(variant_key: str, *served_files: bytes) -> str:
    """What Foundry Local serves: the model files, and the files written beside them at registration
    (inference_model.json, genai_config.json with its context): its id's version."""
    return hashlib.sha256(variant_key.encode() + b"".join(served_files)).hexdigest()


def smoke_test_key(variant_key: str, model_id: str, prompt: str, max_tokens: int, versions: dict[str, str]) -> str:
    return content_key("smoke-test", variant_key, model_id, prompt, max_tokens, versions)


def evaluation_key(variant_key: str, baseline_key: str, settings: dict[str, Any], dataset_sha: str,
                   versions: dict[str, str], served: dict[str, int | None]) -> str:
    """A variant's measurements: every setting but whether to reuse them (a switch, not content), and how Foundry
    Local serves it: its context (the KV cache: memory and time to first token) and its threads (speed)."""
    measured = {k: v for k, v in settings.items() if k != "reuse"}
    return content_key("evaluation", variant_key, baseline_key, measured, dataset_sha, versions, served)


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def baseline_key(export_key: str, dataset_sha: str, settings: dict[str, Any], versions: dict[str, str]) -> str:
    """The fp32 baseline's stored distributions: the export, the eval rows teacher-forced, the tool versions."""
    return content_key("baseline", export_key, dataset_sha, settings.get("max_eval_items"), versions)
