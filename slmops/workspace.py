"""Where things live: the work folder (caches, MLflow store, Foundry Local cache) and a sweep's output folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def configure_environment(work_dir: Path) -> None:
    """Process settings every slmops entry point needs, set before Prefect, MLflow or Olive are imported.

    Prefect reads its result folder once, at import: cached task results must live in the work folder, next to
    the variant folders they describe. Nothing can be downloaded here, and a hub look-up only waits.
    """
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(work_dir / "prefect-results"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # telemetry cannot leave this network and Olive's exporter retries at exit for ~20 s (seen with py-spy)
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def default_work_dir() -> Path:
    return Path(os.environ.get("SLMOPS_HOME", ".slmops")).resolve()


@dataclass(frozen=True)
class Workspace:
    work_dir: Path
    out_dir: Path

    @property
    def exports(self) -> Path:
        return self.work_dir / "exports"

    @property
    def prefect_results(self) -> Path:
        return self.work_dir / "prefect-results"

    @property
    def hash_memo(self) -> Path:
        return self.work_dir / "hash-memo.json"

    @property
    def mlartifacts(self) -> Path:
        return self.work_dir / "mlartifacts"

    @property
    def foundry_cache(self) -> Path:
        return Path(os.environ.get("SLMOPS_FOUNDRY_CACHE", self.work_dir / "foundry")).resolve()

    @property
    def variants(self) -> Path:
        return self.out_dir / "variants"

    @property
    def logs(self) -> Path:
        return self.out_dir / "logs"

    @property
    def marker(self) -> Path:
        """Present while a sweep writes this output folder: a killed sweep is resumed under the same id."""
        return self.out_dir / ".slmops-sweep.json"

    @property
    def report(self) -> Path:
        return self.out_dir / "report.json"
