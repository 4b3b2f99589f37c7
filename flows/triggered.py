"""The flows the deployments run (deployments/prefect.yaml): a sweep of a spec file on a schedule, and a sweep of a
checkpoint as soon as `slmops publish` / `slmops watch` announces it.

    python -m ops.stack up                        # deploys them on the stack's process work pool
    slmops publish /ckpts/step-1200               # a `checkpoint.published` event starts sweep_checkpoint
    prefect deployment run sweep-from-spec-file/nightly -p spec_path=configs/demo.yaml

Both check their input before any work starts (slmops.checkpoints.validate_checkpoint): a model folder outside
SLMOPS_ALLOWED_MODEL_ROOTS (symlinks and .. resolved; unset on the worker: every path is refused), a spec with
model.trust_remote_code, or a folder that is not a safe model folder (slmops.source.validate_model_dir) fails the
run at once with the reason. The publisher checked too, but the server side cannot trust it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.quantization_sweep import quantization_sweep
from slmops.checkpoints import check_inside_roots, validate_checkpoint
from slmops.config import SweepSpec, load_spec, with_model_path
from slmops.errors import InputError
from slmops.workspace import configure_environment, default_work_dir


def spec_for_checkpoint(spec_path: str | Path, checkpoint_path: str | Path) -> SweepSpec:
    """The spec of spec_path with model.path set to the checkpoint (its real path), after checking the checkpoint
    is an allowed, safe model folder."""
    spec = load_spec(spec_path)
    checkpoint = validate_checkpoint(checkpoint_path, spec.model.allow_pickle_weights, spec.model.trust_remote_code,
                                     require_roots=True)
    return with_model_path(spec, checkpoint, str(spec_path))


def latest_checkpoint(folder: str | Path, allow_pickle: bool = False) -> Path:
    """The newest subfolder of `folder` that is a complete model folder (by modification time), inside the allowed
    model roots."""
    folder = check_inside_roots(folder, require=True)
    if not folder.is_dir():
        raise InputError(f"checkpoint folder not found: {folder}")
    newest_first = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                          key=lambda p: p.stat().st_mtime_ns, reverse=True)
    problems = []
    for candidate in newest_first:
        try:
            return validate_checkpoint(candidate, allow_pickle, require_roots=True)
        except InputError as err:
            problems.append(str(err))
    detail = f"; the newest one: {problems[0]}" if problems else ""
    raise InputError(f"{folder}: no subfolder is a complete model folder{detail}")


def _dirs(spec: SweepSpec, out_dir: str | None, work_dir: str | None, run_name: str) -> tuple[Path, Path]:
    """The work folder (configured for this process) and the output folder: given, or <work>/sweeps/<model>/<run>."""
    work = Path(work_dir).resolve() if work_dir else default_work_dir()
    configure_environment(work)
    out = Path(out_dir).resolve() if out_dir else work / "sweeps" / spec.model.name / run_name
    return work, out


def _checkpoint_run_name() -> str:
    return f"checkpoint-{Path(flow_run.parameters['checkpoint_path']).name}"


@flow(name="sweep-checkpoint", flow_run_name=_checkpoint_run_name)
def sweep_checkpoint(checkpoint_path: str, spec_path: str, out_dir: str | None = None,
                     work_dir: str | None = None) -> dict:
    """Sweep a published checkpoint with the variants of spec_path (out_dir default: <work>/sweeps/<model>/<name>)."""
    spec = spec_for_checkpoint(spec_path, checkpoint_path)  # a bad path or spec fails here, before any work
    work, out = _dirs(spec, out_dir, work_dir, spec.model.path.name)
    get_run_logger().info("sweeping checkpoint %s into %s", spec.model.path, out)
    return quantization_sweep(spec=spec, out_dir=str(out), work_dir=str(work))


@flow(name="sweep-from-spec-file")
def sweep_from_spec_file(spec_path: str, out_dir: str | None = None, work_dir: str | None = None,
                         latest_checkpoint_in: str | None = None) -> dict:
    """Sweep a spec file; with latest_checkpoint_in, its model is the newest complete checkpoint in that folder."""
    spec = load_spec(spec_path)
    if latest_checkpoint_in:
        spec = spec_for_checkpoint(spec_path, latest_checkpoint(latest_checkpoint_in, spec.model.allow_pickle_weights))
    else:
        validate_checkpoint(spec.model.path, spec.model.allow_pickle_weights, spec.model.trust_remote_code,
                            require_roots=True)
    work, out = _dirs(spec, out_dir, work_dir, "latest")
    get_run_logger().info("sweeping %s (%s) into %s", spec_path, spec.model.path, out)
    return quantization_sweep(spec=spec, out_dir=str(out), work_dir=str(work))
