"""The sweep spec: one typed, validated description of what to build, measure and promote.

    slmops sweep configs/demo.yaml --out out/demo

Every field is validated before any work starts; an error names the field, the value received and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slmops.errors import SpecError
from slmops.evaluate.settings import EvaluationSpec

# Foundry Local ids are `<name>:<version>` with the name matching this; a variant's name is also its folder
# and its MLflow run name, so it must be safe as all three.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"

Precision = Literal["fp32", "int8", "int4"]
Method = Literal["builder", "rtn", "k_quant", "hqq", "dynamic"]
BlockSize = Literal[16, 32, 64, 128, 256]
Int4Algorithm = Literal["default", "rtn", "rtn_last", "k_quant", "k_quant_mixed", "k_quant_last"]

# Which route builds which precision (see ../shared/STACK.md): ModelBuilder makes fp32 and int4 on CPU; int8 and
# the ONNX-level int4 passes run on the fp32 export.
ALLOWED_METHODS: dict[str, tuple[str, ...]] = {
    "fp32": ("builder",),
    "int8": ("rtn", "dynamic"),
    "int4": ("builder", "rtn", "k_quant", "hqq"),
}
DEFAULT_METHOD = {"fp32": "builder", "int8": "rtn", "int4": "builder"}


def check_name(value: str, what: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"{what} {value!r} cannot be a Foundry Local id; allowed: {NAME_RULE}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    path: Path = Field(description="Folder of the fine-tuned Hugging Face model (relative to the current folder)")
    name: str = Field(description="Short name: prefix of every Foundry Local id and the MLflow registered model")
    trust_remote_code: bool = Field(False, description="Let transformers run code shipped in the model folder")
    allow_pickle_weights: bool = Field(
        False, description="Accept .bin/.pt weights, which can run code when loaded (safetensors are preferred)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "model name")


class VariantSpec(_Strict):
    name: str = Field(description="Stable name: the variant's folder, MLflow run name and Foundry Local id suffix")
    precision: Precision = Field(description="Weight precision of the variant")
    method: Method | None = Field(
        None,
        description="Route: 'builder' (Olive ModelBuilder), or an ONNX-level pass on the fp32 export: 'rtn' "
        "(block-wise RTN, MatMulNBits), 'k_quant', 'hqq', 'dynamic' (int8 QOperator). Default: builder for fp32 and "
        "int4, rtn for int8",
    )
    block_size: BlockSize | None = Field(None, description="Quantization block size (int4; int8 with method rtn)")
    symmetric: bool | None = Field(None, description="Symmetric quantization (no zero point)")
    accuracy_level: Literal[1, 2, 3, 4] | None = Field(
        None, description="MatMulNBits accuracy level: 4 computes in int8 and is the fastest on CPU"
    )
    algorithm: Int4Algorithm | None = Field(None, description="ModelBuilder int4 algorithm (method builder only)")
    quantize_embeddings: bool | None = Field(
        None, description="Quantize the embedding too (MatMul and Gather); method builder only"
    )
    nodes_to_exclude: tuple[str, ...] = Field((), description="Graph nodes to leave unquantized")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "variant name")

    @model_validator(mode="after")
    def _fits_precision(self) -> "VariantSpec":
        method = self.method or DEFAULT_METHOD[self.precision]
        allowed = ALLOWED_METHODS[self.precision]
        if method not in allowed:
            raise ValueError(f"method {method!r} cannot make {self.precision}; allowed: {', '.join(allowed)}")
        quantizes_blocks = self.precision == "int4" or method == "rtn"
        not_applicable = []
        if self.precision == "fp32":
            not_applicable = [f for f in ("block_size", "symmetric", "accuracy_level") if getattr(self, f) is not None]
        elif not quantizes_blocks and self.block_size is not None:
            not_applicable = ["block_size"]
        if method in ("k_quant", "hqq") and self.symmetric is not None:
            not_applicable.append("symmetric")
        if method != "builder":
            not_applicable += [f for f in ("algorithm", "quantize_embeddings") if getattr(self, f) is not None]
        if not_applicable:
            raise ValueError(
                f"{', '.join(not_applicable)} does not apply to {self.precision} with method {method!r}"
            )
        return self

    def resolved(self) -> dict[str, Any]:
        """Every knob with its default filled in: what the variant's build really uses (and its cache key)."""
        method = self.method or DEFAULT_METHOD[self.precision]
        out: dict[str, Any] = {"name": self.name, "precision": self.precision, "method": method}
        if self.precision == "fp32":
            return out
        if self.precision == "int4" or method == "rtn":
            out["block_size"] = self.block_size or (32 if self.precision == "int4" else 128)
        if method in ("builder", "rtn", "dynamic"):
            out["symmetric"] = True if self.symmetric is None else self.symmetric
        if method in ("builder", "rtn"):
            out["accuracy_level"] = self.accuracy_level or 4
        if method == "builder":
            out["algorithm"] = self.algorithm or "default"
            out["quantize_embeddings"] = bool(self.quantize_embeddings)
        out["nodes_to_exclude"] = list(self.nodes_to_exclude)
        return out


class GenerationDefaults(_Strict):
    max_length: int | None = Field(None, ge=1, description="Longest sequence (prompt + answer) Foundry Local allows")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass")
    repetition_penalty: float | None = Field(None, gt=0, description="Penalty for repeated tokens")


class FoundrySpec(_Strict):
    enabled: bool = Field(True, description="Register every succeeded variant with Foundry Local and smoke-test it")
    cache_dir: Path | None = Field(
        None, description="Foundry Local cache folder; default: $SLMOPS_FOUNDRY_CACHE or <work dir>/foundry"
    )
    model_config_overrides: GenerationDefaults = Field(
        default_factory=GenerationDefaults,
        description="ModelConfig of inference_model.json; unset values come from the model's generation config",
    )
    smoke_max_tokens: int = Field(32, ge=1, le=1024, description="Tokens the smoke test may generate")
    smoke_timeout_s: float = Field(120, gt=0, description="Seconds before a smoke test counts as hung")


class PromotionSpec(_Strict):
    enabled: bool = Field(True, description="Decide and move the champion alias after the sweep")


class SweepSpec(_Strict):
    model: ModelSpec
    variants: tuple[VariantSpec, ...] = Field(min_length=1, description="The variants to build, in order")
    foundry: FoundrySpec = Field(default_factory=FoundrySpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)

    @field_validator("variants")
    @classmethod
    def _unique(cls, v: tuple[VariantSpec, ...]) -> tuple[VariantSpec, ...]:
        seen: set[str] = set()
        for variant in v:
            if variant.name.lower() in seen:
                raise ValueError(f"two variants are named {variant.name!r}; each name must be unique")
            seen.add(variant.name.lower())
        return v


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in first["loc"]).replace(".[", "[")
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    where = f"{loc}: " if loc else ""
    got = "" if first["type"] in ("missing", "value_error") else f" (got {first['input']!r})"
    return f"{source}: {where}{msg}{got}"


def parse_spec(data: Any, source: str = "spec") -> SweepSpec:
    """Validate an already-loaded spec (a dict) into a SweepSpec, or raise SpecError with a one-line message."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a mapping with 'model' and 'variants', got {type(data).__name__}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_error(source, err)) from None


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a YAML sweep spec (safe loader only)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"{path}: cannot read the spec: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{path}: invalid YAML{where}: {problem}") from None
    return parse_spec(data, str(path))
