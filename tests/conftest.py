"""Session set-up: an isolated work folder, Prefect home and MLflow store, and the models the tests share.

The demo model (about 90 s to train) is cached in .slmops/test-cache, keyed by the source of its recipe, so it
is trained once per machine and again only when the recipe changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

_SESSION = Path(tempfile.mkdtemp(prefix="slmops-tests-"))
os.environ["SLMOPS_HOME"] = str(_SESSION / "work")
os.environ["PREFECT_HOME"] = str(_SESSION / "prefect-home")
# Foundry Local opens one cache folder per process: every in-process test shares this one
os.environ["SLMOPS_FOUNDRY_CACHE"] = str(_SESSION / "foundry")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)

from slmops.workspace import configure_environment  # noqa: E402

configure_environment(_SESSION / "work")

import pytest  # noqa: E402

TEST_CACHE = ROOT / ".slmops" / "test-cache"


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION


@pytest.fixture(scope="session")
def tiny_model(session_dir: Path) -> Path:
    """A random-weight 2-layer Qwen2 chat model (converts in well under a second)."""
    from helpers import make_tiny_model

    return make_tiny_model(session_dir / "tiny-model")


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The trained demo model, made once per recipe and cached across test sessions."""
    import slmops.demo.model as recipe

    digest = hashlib.sha256(Path(recipe.__file__).read_bytes()).hexdigest()[:12]
    target = TEST_CACHE / f"demo-model-{digest}"
    if not (target / "config.json").is_file():
        TEST_CACHE.mkdir(parents=True, exist_ok=True)
        for old in TEST_CACHE.glob("demo-model-*"):
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        calls: list[tuple[int, int]] = []
        recipe.make_demo_model(target, progress=lambda step, total: calls.append((step, total)))
        # what the progress callback saw while this model was trained, for tests/test_demo_model.py
        (TEST_CACHE / f"{target.name}.progress.json").write_text(json.dumps(calls))
    return target


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts the server stack (PostgreSQL, Prefect, MLflow, workers)")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """One temporary Prefect server (own SQLite database) for the in-process flow runs of the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
