"""Prefect task of the quantize step: one variant folder, built or reused, checked (slmops.quantize does the
work)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from slmops import quantize as quantizing
from slmops import staging
from slmops.convert import Export
from slmops.errors import VariantError
from slmops.keys import variant_key
from slmops.variant import Variant, VariantResult


@task(name="quantize", task_run_name="quantize-{variant.name}", cache_policy=NONE)
def quantize(variant: Variant, dest: Path, source_dir: Path, source_sha: str, export: Export | None,
             versions: dict[str, str], log_dir: Path, trust_remote_code: bool = False,
             calibration_rows: Path | None = None) -> VariantResult:
    """Build, check and publish the variant's folder, or reuse it while it holds this content."""
    key = variant_key(source_sha, variant, versions)
    fp32_dir = export.dir if export else None
    if variant.needs_fp32_export and fp32_dir is None and not staging.is_complete(dest, key):
        why = export.error if export else "it was not made"
        raise VariantError(f"variant {variant.name}: needs the fp32 export, which failed: {why}")
    manifest = quantizing.quantize(variant, key, source_dir, fp32_dir, dest, log_dir, trust_remote_code,
                                   {"source_sha256": source_sha}, calibration_rows)
    return VariantResult.planned(variant, dest).with_metrics(
        {"build_seconds": manifest["seconds"]}, status="cached" if manifest["reused"] else "succeeded",
        size_bytes=manifest["size_bytes"], content_key=key, olive_config=manifest["olive_config"])
