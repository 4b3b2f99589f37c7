"""Fixtures of the evaluation tests: the demo model's four variants and a timing model, built and registered in
Foundry Local once per session.

    .venv/bin/python -m pytest tests/evaluate -q

Everything is real: Olive builds the variants, Foundry Local's runtime serves them in the worker processes, and
onnxruntime-genai 0.14.1 runs the reference decode loop in this process.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

# Import order matters within one process: once Foundry Local has loaded its genai-core 0.18 library, importing
# onnxruntime_genai 0.14.1 fails ("undefined symbol: OgaRequestGetUnseenToken"); the other way round both work.
# The reference loop of test_speed needs it, and another test may have opened Foundry Local before.
import onnxruntime_genai  # noqa: F401
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
os.environ["HF_HUB_OFFLINE"] = "1"

from eval_models import build_variants, make_speed_model  # noqa: E402


def _content_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.startswith("model.onnx"):
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def eval_foundry():
    """slmops's Foundry Local adapter on the session's cache folder (the one slmops itself uses in this session)."""
    from slmops.adapters.foundry import FoundryLocal
    from slmops.workspace import Workspace, default_work_dir

    return FoundryLocal(Workspace(work_dir=default_work_dir(), out_dir=default_work_dir()).foundry_cache)


@pytest.fixture(scope="session")
def demo_variants(demo_model: Path, session_dir: Path) -> dict[str, Path]:
    """The demo sweep's variants of the demo model: fp32, int8 (rtn b128), int4-b32 asymmetric, int4-b128."""
    return build_variants(demo_model, session_dir / "eval-demo-variants")


@pytest.fixture(scope="session")
def demo_eval_set(demo_model: Path) -> Path:
    return demo_model / "eval.jsonl"


@pytest.fixture(scope="session")
def registered_demo(demo_variants: dict[str, Path], eval_foundry) -> dict[str, str]:
    """Variant name -> its Foundry Local id."""
    return {
        name: eval_foundry.register(folder, f"evaltest-{name}", _content_hash(folder), {"precision": name})
        for name, folder in demo_variants.items()
    }


@pytest.fixture(scope="session")
def speed_variant(session_dir: Path, eval_foundry) -> tuple[Path, str]:
    """The fp32 build of a random 8-layer model of width 1024 (about 15 ms per token) and its Foundry Local id."""
    source = make_speed_model(session_dir / "speed-model", hidden=1024)
    folder = build_variants(source, session_dir / "eval-speed-variants", ({"name": "fp32", "precision": "fp32"},))[
        "fp32"
    ]
    return folder, eval_foundry.register(folder, "evaltest-speed", _content_hash(folder), {"precision": "fp32"})


@pytest.fixture(scope="session")
def demo_baseline(demo_variants: dict[str, Path], demo_eval_set: Path, session_dir: Path) -> Path:
    """The demo fp32 variant's stored baseline over the default settings' eval rows (what a sweep computes once)."""
    from slmops.evaluate.baseline import ensure_baseline
    from slmops.evaluate.settings import EvaluationSpec

    stored = ensure_baseline(demo_variants["fp32"], demo_eval_set, EvaluationSpec(), "demo-baseline-key",
                             session_dir / "baselines")
    return stored.path
