"""Quantize: build one variant folder, check that it holds what it claims, and publish it.

    manifest = quantize(variant, key, source_dir, fp32_dir, dest, log_dir)

Three routes (``Variant.route``): the fp32 variant is a copy of the shared export; the ONNX-level variants (int8,
rtn/k_quant/hqq int4, dynamic, and the ModelBuilder int4 variants whose graph block-wise RTN reproduces) are passes
on the export, completed with its genai config, tokenizer and chat template; the other ModelBuilder int4 variants,
and GPTQ's (calibrated on the sweep's calibration rows), are built from the source folder. Olive reports success
with no output when a pass fails, and can label an unquantized graph int4 (docs/toolchain.md), so before a variant
counts its graph is checked and onnxruntime-genai loads it and generates. The manifest says which route and passes
made the folder (``built_by``) and where the time went (``steps``).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slmops import staging
from slmops.adapters import genai, olive
from slmops.errors import VariantError
from slmops.files import folder_size
from slmops.timing import Steps
from slmops.variant import Variant


def olive_config(variant: Variant, source_dir: Path, fp32_dir: Path | None, model_dir: Path, cache_dir: Path,
                 trust_remote_code: bool = False, calibration_rows: Path | None = None) -> dict[str, Any]:
    """The Olive workflow that builds ``variant`` into model_dir."""
    if variant.method == "gptq":
        if calibration_rows is None:
            raise ValueError(f"variant {variant.name} is calibrated (gptq), and no calibration rows were given")
        return olive.gptq_config(source_dir, model_dir, cache_dir, block_size=variant.block_size,
                                 symmetric=variant.symmetric, accuracy_level=variant.accuracy_level,
                                 calibration_rows=calibration_rows, trust_remote_code=trust_remote_code)
    if variant.route == "builder":
        return olive.builder_int4_config(
            source_dir, model_dir, cache_dir, block_size=variant.block_size, symmetric=variant.symmetric,
            accuracy_level=variant.accuracy_level, algorithm=variant.algorithm,
            quantize_embeddings=bool(variant.quantize_embeddings),
            nodes_to_exclude=list(variant.nodes_to_exclude or ()), trust_remote_code=trust_remote_code)
    if fp32_dir is None:
        raise ValueError(f"variant {variant.name} is derived from the fp32 export, which was not given")
    if variant.method == "builder":
        return olive.builder_int4_from_export_config(fp32_dir, model_dir, cache_dir, block_size=variant.block_size,
                                                     symmetric=variant.symmetric,
                                                     accuracy_level=variant.accuracy_level)
    return olive.onnx_quantize_config(
        fp32_dir, model_dir, cache_dir, method=variant.method, bits=variant.bits, block_size=variant.block_size,
        symmetric=variant.symmetric, accuracy_level=variant.accuracy_level,
        nodes_to_exclude=list(variant.nodes_to_exclude or ()))


def direct_builder_config(variant: Variant) -> dict[str, Any]:
    """The record of a variant ModelBuilder builds when called directly (``genai.build``), in the shape of an Olive
    workflow's, so that manifests and MLflow params read alike."""
    options = genai.builder_options(variant.block_size, variant.symmetric, variant.accuracy_level, variant.algorithm,
                                    list(variant.nodes_to_exclude or ()), bool(variant.shared_embeddings))
    return {"passes": {"builder": {"type": "ModelBuilder (onnxruntime_genai.models.builder, called directly: Olive's "
                                           "pass drops shared_embeddings)",
                                   "precision": variant.precision, "extra_options": options}}}


def check_graph(variant: Variant, summary: dict[str, Any], size: int, fp32_size: int | None) -> None:
    """Raise VariantError unless the graph is what the variant claims (a silent no-op quantization is caught here)."""
    ops = summary["op_counts"]
    problems = []
    if "logits" not in summary["outputs"]:
        problems.append(f"graph output 'logits' is missing (outputs: {', '.join(summary['outputs'])})")
    if variant.bits and variant.method != "dynamic":
        if not ops.get("MatMulNBits"):
            problems.append(f"no MatMulNBits node: nothing was quantized to {variant.precision}")
        elif variant.bits not in summary["matmul_nbits_bits"]:
            problems.append(f"MatMulNBits has bits {summary['matmul_nbits_bits']}, expected {variant.bits}")
        if variant.shared_embeddings and not summary.get("embedding_shares_lm_head"):
            problems.append("shared_embeddings is set but the embedding does not read the LM head's weight")
        if variant.quantize_embeddings and not ops.get("GatherBlockQuantized"):
            problems.append("quantize_embeddings is set but the embedding has no GatherBlockQuantized node")
        if variant.builder_graph_from_export and ops.get("GatherBlockQuantized"):
            # the builder's result leaves this embedding in fp32: a quantized one is not the graph asked for
            problems.append("the embedding is quantized (GatherBlockQuantized) but quantize_embeddings is not set")
        head = summary.get("lm_head")
        if (variant.method in ("builder", "rtn", "gptq") and head and head != "MatMulNBits"
                and genai.LM_HEAD_NODE not in (variant.nodes_to_exclude or ())):
            problems.append(f"the LM head is a {head}, not MatMulNBits: it was left unquantized")
    if variant.method == "dynamic" and not ops.get("MatMulInteger"):
        problems.append("no MatMulInteger node: dynamic int8 quantization did nothing")
    if variant.precision != "fp32" and fp32_size and size >= fp32_size:
        problems.append(f"size {size} bytes is not below the fp32 build's {fp32_size}")
    if problems:
        raise VariantError(f"variant {variant.name}: " + "; ".join(problems))


def quantize(variant: Variant, key: str, source_dir: Path, fp32_dir: Path | None, dest: Path, log_dir: Path,
             trust_remote_code: bool = False, extra_manifest: dict[str, Any] | None = None,
             calibration_rows: Path | None = None) -> dict[str, Any]:
    """Build, check and publish one variant folder; reuse it when its manifest already holds this content.

    Returns the manifest, with ``reused`` True when nothing was built. Raises VariantError when Olive produces
    nothing, the graph is not what the variant claims, or the model does not load and generate.
    """
    if staging.is_complete(dest, key):
        return {**staging.read_manifest(dest), "reused": True}
    if variant.needs_fp32_export and fp32_dir is None:
        raise ValueError(f"variant {variant.name} needs the fp32 export, which was not given")
    started, steps = time.perf_counter(), Steps()
    with staging.staged(dest, f"variant {variant.name}") as work:
        model_dir = work / "model"
        with steps("build"):
            if variant.route == "export":
                staging.copy_model(fp32_dir, model_dir)
                config = staging.read_manifest(fp32_dir)["olive_config"]
            elif variant.shared_embeddings:
                config = direct_builder_config(variant)
                genai.build(source_dir, model_dir, work / "builder-cache", variant.precision,
                            config["passes"]["builder"]["extra_options"], log_dir / f"{variant.name}.builder.log")
            else:
                config = olive_config(variant, source_dir, fp32_dir, model_dir, work / "olive-cache",
                                      trust_remote_code, calibration_rows)
                olive.run_workflow(config, f"variant {variant.name}", log_dir / f"{variant.name}.olive.log")
                if variant.route == "onnx":
                    olive.complete_from(fp32_dir, model_dir, skip=(staging.MANIFEST,))
        with steps("check"):
            summary = genai.graph_summary(model_dir)
            size = folder_size(model_dir)
            check_graph(variant, summary, size, folder_size(fp32_dir) if fp32_dir else None)
        if variant.route != "export":
            # the fp32 variant is the export's bytes (their sizes are checked on every reuse), and the export was
            # loaded and generated before it was published: loading 2.5 GB again would prove nothing new
            with steps("load"):
                genai.load_and_generate(model_dir)
        with steps("publish"):
            manifest = staging.publish(model_dir, dest, {
                "key": key, "kind": "variant", "config": variant.knobs(), "built_by": built_by(variant, config),
                "olive_config": config, "graph": summary, "size_bytes": size,
                "seconds": round(time.perf_counter() - started, 3), "steps": steps.seconds,
                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(extra_manifest or {})})
    return {**manifest, "reused": False}


def built_by(variant: Variant, config: dict[str, Any]) -> dict[str, Any]:
    """What made the folder: the route, from what, and the Olive passes (a builder variant may have been made by a
    pass on the export that gives the builder's graph: ``Variant.builder_graph_from_export``)."""
    made_from = {"export": "the fp32 export (a copy)", "builder": "the source model",
                 "onnx": "the fp32 export"}[variant.route]
    if variant.method == "gptq":
        made_from += f" and calibration rows sha256 {variant.calibration}"
    entry: dict[str, Any] = {"route": variant.route, "from": made_from,
                             "passes": [p["type"] for p in config["passes"].values()]}
    if variant.method == "builder" and variant.route == "onnx":
        entry["same_graph_as"] = "ModelBuilder int4 from the source (tests/test_convert_equivalence.py)"
    return entry
