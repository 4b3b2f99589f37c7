"""A variant's journey, typed from spec to decision: what it is (``Variant``, every knob resolved, the route that
makes it) and what became of it (``VariantResult``: status, error, folder, size, ids, metrics, timings).

    variant = spec.variants[0].resolved()          # slmops.config.VariantSpec -> Variant
    result = VariantResult.planned(variant, out / "variants" / variant.name)

Dicts appear only at the edges: ``Variant.knobs()`` for MLflow params and report.json, ``report_entry()`` for
report.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Precision = Literal["fp32", "int8", "int4"]
Method = Literal["builder", "rtn", "k_quant", "hqq", "dynamic", "gptq"]
Route = Literal["export", "builder", "onnx"]
Status = Literal["succeeded", "cached", "failed"]


class Variant(BaseModel):
    """One variant with every knob resolved: what its build really uses, and part of its cache key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    precision: Precision
    method: Method
    block_size: int | None = None
    symmetric: bool | None = None
    accuracy_level: int | None = None
    algorithm: str | None = None
    quantize_embeddings: bool | None = None
    shared_embeddings: bool | None = None
    nodes_to_exclude: tuple[str, ...] | None = None
    calibration: str | None = None  # sha256 of the calibration rows of a gptq variant (slmops.calibration)

    @property
    def route(self) -> Route:
        """export: a copy of the shared fp32 export; builder: Olive's ModelBuilder from the source folder (after Olive's
        GPTQ pass for method gptq); onnx: an
        ONNX-level pass on the fp32 export, also for the builder int4 variants it gives the same graph as
        (``builder_graph_from_export``)."""
        if self.precision == "fp32":
            return "export"
        if self.method == "gptq" or (self.method == "builder" and not self.builder_graph_from_export):
            return "builder"
        return "onnx"

    @property
    def builder_graph_from_export(self) -> bool:
        """Whether ModelBuilder's result is made from the fp32 export: int4 with the `default` algorithm, the
        embedding unquantized and nothing excluded, whose graph block-wise RTN on the export reproduces (the same
        packed weights, scales and zero points, byte for byte: tests/test_convert_equivalence.py). The other builder
        options (its `rtn`/`k_quant` algorithms, quantized or shared embeddings, excluded nodes) are the builder's
        own and stay on it."""
        return (self.method == "builder" and self.precision == "int4" and self.algorithm == "default"
                and not self.quantize_embeddings and not self.shared_embeddings and not self.nodes_to_exclude)

    @property
    def needs_fp32_export(self) -> bool:
        return self.route != "builder"

    @property
    def bits(self) -> int | None:
        return {"int8": 8, "int4": 4}.get(self.precision)

    def knobs(self) -> dict[str, Any]:
        """The resolved knobs as plain JSON (MLflow params, report.json's config)."""
        return self.model_dump(mode="json", exclude_none=True)


class SmokeTest(BaseModel):
    """One eval prompt sent through Foundry Local after registration."""

    passed: bool
    answer: str = ""
    seconds: float = 0.0
    prompt: str = ""
    error: str | None = None
    reused: bool = False


class EvaluationRecord(BaseModel):
    """Where a variant's measurements are, and whether they were reused."""

    dir: str
    reused: bool
    items: int


class VariantResult(BaseModel):
    """What became of one variant; each step of the variant flow returns an updated copy."""

    name: str
    config: Variant
    onnx_dir: str
    status: Status = "failed"
    error: str | None = None
    size_bytes: int | None = None
    content_key: str | None = None
    foundry_model_id: str | None = None
    smoke_test: SmokeTest | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    evaluation: EvaluationRecord | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    mlflow_run_id: str | None = None
    mlflow_error: str | None = None
    model_version: str | None = None
    # kept for MLflow, left out of report.json (large)
    olive_config: dict[str, Any] | None = None
    eval_items: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def planned(cls, variant: Variant, folder: Path) -> VariantResult:
        """A variant not built yet (failed until a step says otherwise)."""
        return cls(name=variant.name, config=variant, onnx_dir=str(folder))

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def failed(self, error: str) -> VariantResult:
        return self.model_copy(update={"status": "failed", "error": error})

    def with_metrics(self, metrics: dict[str, float], **update: Any) -> VariantResult:
        return self.model_copy(update={"metrics": {**self.metrics, **metrics}, **update})

    def report_entry(self) -> dict[str, Any]:
        """The variant as report.json holds it."""
        entry = self.model_dump(mode="json", exclude={"olive_config", "eval_items"})
        entry["config"] = self.config.knobs()
        return entry

    @classmethod
    def from_report_entry(cls, entry: dict[str, Any]) -> VariantResult:
        return cls.model_validate(entry)
