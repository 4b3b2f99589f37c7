"""Where things live: the work folder (caches, MLflow store, Foundry Local cache) and a sweep's output folder, and
the sweep that holds an output folder (its lock, and the marker a killed sweep leaves to be resumed)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from slmops.files import read_json, write_json
from slmops.locks import file_lock


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


def new_sweep_id(model_name: str) -> str:
    return f"{model_name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Workspace:
    work_dir: Path
    out_dir: Path

    @classmethod
    def of(cls, out_dir: str | Path, work_dir: str | Path | None = None) -> Workspace:
        """Both folders as absolute paths; the work folder defaults to $SLMOPS_HOME or ./.slmops."""
        return cls(Path(work_dir).resolve() if work_dir else default_work_dir(), Path(out_dir).resolve())

    @property
    def baselines(self) -> Path:
        return self.work_dir / "baselines"

    @property
    def roofline(self) -> Path:
        """This machine's memory and kernel roofs (slmops.roofline), measured once and cached."""
        return self.work_dir / "roofline"

    @property
    def calibration(self) -> Path:
        """Calibration rows of the calibrated variants, and the eval set measured beside them (slmops.calibration)."""
        return self.work_dir / "calibration"

    @property
    def roofline_file(self) -> Path:
        return self.roofline / "roofs.json"

    @property
    def merged(self) -> Path:
        """Base models with a LoRA adapter merged in (slmops.lora), one folder per content of both."""
        return self.work_dir / "merged"

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

    @property
    def evaluations(self) -> Path:
        return self.out_dir / "evaluations"

    @property
    def smoke_tests(self) -> Path:
        return self.out_dir / "smoke-tests"

    def interrupted_sweep(self) -> dict | None:
        """The marker a killed sweep left in this output folder ({sweep_id, pid, updated_at}), if any."""
        return read_json(self.marker)

    @contextlib.contextmanager
    def sweep_session(self, model_name: str, sweep_id: str | None = None,
                      say: Callable[[str], None] = lambda _: None) -> Iterator[str]:
        """Hold the output folder for one sweep; yield its id: the given one, the interrupted sweep's, or a new one.

        One sweep at a time per output folder (a second one waits rather than clobbering folders). The marker stays
        while the sweep runs, so a sweep killed now is resumed under the same id by the next run; it is removed
        when the block ends normally.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.out_dir / ".slmops.lock", on_wait=lambda: say(f"waiting: another sweep is writing "
                                                                          f"{self.out_dir}")):
            interrupted = self.interrupted_sweep()
            if interrupted and not sweep_id:
                sweep_id = interrupted["sweep_id"]
                say(f"resuming sweep {sweep_id}, interrupted at {interrupted.get('updated_at')}")
            sweep_id = sweep_id or new_sweep_id(model_name)
            write_json(self.marker, {"sweep_id": sweep_id, "pid": os.getpid(),
                                     "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            yield sweep_id
            self.marker.unlink(missing_ok=True)
