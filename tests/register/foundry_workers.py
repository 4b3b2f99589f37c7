"""Work done in spawned processes by the Foundry Local tests: a second process is a second Foundry Local manager."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def register_many(cache_dir: str, jobs: list[tuple[str, str, str]], start: Any, results: Any) -> None:
    """Register (folder, name, content hash) jobs once `start` opens, and report the ids on `results`."""
    from slmops.adapters.foundry import FoundryLocal

    foundry = FoundryLocal(Path(cache_dir))
    start.wait(timeout=60)
    ids = [foundry.register(Path(folder), name, digest, {"precision": "fp32"}) for folder, name, digest in jobs]
    results.put(ids)


def list_and_ask(cache_dir: str, model_id: str, results: Any) -> None:
    """In a fresh process: list the registrations and smoke-test one of them."""
    from slmops.adapters.foundry import FoundryLocal

    foundry = FoundryLocal(Path(cache_dir))
    results.put(([row["id"] for row in foundry.list()], foundry.smoke_test(model_id, "hello", max_tokens=4)))
