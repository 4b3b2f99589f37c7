"""Prefect tasks that turn the source model into variant folders (slmops.build does the work)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from slmops import build, source


@task(name="fingerprint-source", cache_policy=NONE)
def fingerprint_source(model_dir: str, memo_file: str) -> str:
    """Content hash of the source model folder."""
    return source.model_sha256(Path(model_dir), Path(memo_file))


def _content_cache_key(_context, parameters: dict) -> str:
    # content, not inputs: the key already hashes the source files, resolved config and tool versions; the
    # destination is part of it so two output folders do not share one cached folder
    return f"{parameters['key']}-{build.content_key(parameters['dest'])[:12]}"


@task(name="export-fp32", cache_key_fn=_content_cache_key, persist_result=True, result_serializer="json")
def export_fp32(source_dir: str, dest: str, key: str, trust_remote_code: bool, log_dir: str) -> dict:
    """The fp32 ONNX export every ONNX-level variant is derived from (made once per source model)."""
    return build.export_fp32(Path(source_dir), Path(dest), key, trust_remote_code, Path(log_dir))


@task(name="build-variant", task_run_name="build-{variant[name]}", cache_key_fn=_content_cache_key,
      persist_result=True, result_serializer="json")
def build_variant(variant: dict, key: str, source_dir: str, fp32_dir: str | None, dest: str, log_dir: str,
                  trust_remote_code: bool = False, extra_manifest: dict | None = None) -> dict:
    """Build, check and publish one variant folder; reuse it when its manifest already holds this content."""
    dest_path = Path(dest)
    if build.is_complete(dest_path, key):
        return {**build.read_manifest(dest_path), "reused": True}
    return build.build_variant(variant, key, Path(source_dir), Path(fp32_dir) if fp32_dir else None, dest_path,
                               Path(log_dir), trust_remote_code, extra_manifest)
