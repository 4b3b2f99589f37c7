"""Fixtures of the Foundry Local tests: tiny models of every chat family, exported once, and one Foundry Local cache.

    .venv/bin/python -m pytest tests/foundry -x -q

Everything runs for real: Olive's ModelBuilder exports the models in this process, and Foundry Local's runtime
(foundry-local-sdk 2.2.1) registers, loads and answers with them in this process and in spawned ones. Foundry
Local opens one cache folder per process, so the whole session shares one.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    # chat_families and foundry_workers must import here and in spawned processes (which inherit sys.path)
    sys.path.insert(0, str(HERE))
os.environ["HF_HUB_OFFLINE"] = "1"

from chat_families import build_all  # noqa: E402


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Family name -> its fp32 onnxruntime-genai folder (built once per session; treat as read-only)."""
    return build_all(tmp_path_factory.mktemp("chat-families"))


@pytest.fixture(scope="session")
def foundry_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's Foundry Local cache folder.

    Foundry Local opens one cache folder per process, so when the session has set slmops's work folder
    (SLMOPS_HOME or SLMOPS_FOUNDRY_CACHE, as a test harness does) these tests share the folder slmops itself would
    use, and other tests in the same pytest process can open Foundry Local too; otherwise a temp folder.
    """
    if os.environ.get("SLMOPS_FOUNDRY_CACHE") or os.environ.get("SLMOPS_HOME"):
        from slmops.workspace import Workspace, default_work_dir

        return Workspace(work_dir=default_work_dir(), out_dir=default_work_dir()).foundry_cache
    return tmp_path_factory.mktemp("foundry-cache")


@pytest.fixture(scope="session")
def foundry(foundry_cache: Path):
    """slmops's Foundry Local adapter on the session's cache folder."""
    from slmops.adapters.foundry import FoundryLocal

    return FoundryLocal(foundry_cache)


@pytest.fixture
def variant_copy(family_dirs: dict[str, Path], tmp_path: Path):
    """Make a private copy of a family's folder (to change or delete), under this test's tmp folder."""

    def copy(family: str, name: str | None = None) -> Path:
        target = tmp_path / (name or family)
        shutil.copytree(family_dirs[family], target)
        return target

    return copy
