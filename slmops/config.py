"""The sweep spec: one typed, validated description of what to build, measure and promote.

    slmops sweep configs/demo.yaml --out out/demo

Every field is validated before any work starts; an error names the field, the value received and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slmops.calibration import CalibrationSpec
from slmops.errors import SpecError
from slmops.evaluate.settings import EvaluationSpec
from slmops.metrics import FIDELITY_METRICS
from slmops.promote.policy import Constraint, ObjectiveTerm, PromotionSpec  # noqa: F401 (part of the spec)
from slmops.names import check_name
from slmops.variant import Method, Precision, Variant

BlockSize = Literal[16, 32, 64, 128, 256]
Int4Algorithm = Literal["default", "rtn", "rtn_last", "k_quant", "k_quant_mixed", "k_quant_last"]
# the algorithms with which ModelBuilder 0.14.1 shares the LM head's quantized weight with the embedding (each
# checked on the demo model's graph); with `default` and `k_quant` it silently builds them apart
SHARING_ALGORITHMS = ("rtn", "rtn_last", "k_quant_mixed", "k_quant_last")

# Which route builds which precision (docs/toolchain.md): ModelBuilder makes fp32 and int4 on CPU; int8 and
# the ONNX-level int4 passes run on the fp32 export.
ALLOWED_METHODS: dict[str, tuple[str, ...]] = {
    "fp32": ("builder",),
    "int8": ("rtn", "dynamic"),
    "int4": ("builder", "rtn", "k_quant", "hqq", "gptq"),
}
DEFAULT_METHOD = {"fp32": "builder", "int8": "rtn", "int4": "builder"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    path: Path = Field(description="Folder of the fine-tuned Hugging Face model (relative to the current folder); or "
                                   "of a PEFT LoRA adapter whose base_model_name_or_path is a local folder")
    adapter: Path | None = Field(None, description="Folder of a PEFT LoRA adapter of the model at path: merged into "
                                                   "it once per content of both, then swept as any model")
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
        "(block-wise RTN, MatMulNBits), 'k_quant', 'hqq', 'dynamic' (int8 QOperator); or 'gptq' (int4: Olive's GPTQ "
        "pass on the source, calibrated on the spec's calibration rows, then ModelBuilder). Default: builder for fp32 "
        "and int4, rtn for int8",
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
    shared_embeddings: bool | None = Field(
        None, description="The embedding reads the LM head's quantized weight (GatherBlockQuantized) instead of an "
        "fp32 table of its own: int4, method builder, a model with tied embeddings, algorithm "
        f"{', '.join(SHARING_ALGORITHMS)} (8 bits with the *_last ones); built by calling ModelBuilder directly, "
        "since Olive's ModelBuilder pass ignores the option")
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
        if method == "gptq" and self.nodes_to_exclude:
            not_applicable.append("nodes_to_exclude")
        if method != "builder":
            not_applicable += [f for f in ("algorithm", "quantize_embeddings", "shared_embeddings")
                               if getattr(self, f) is not None]
        elif self.precision == "fp32" and self.shared_embeddings is not None:
            not_applicable.append("shared_embeddings")
        if not_applicable:
            raise ValueError(
                f"{', '.join(not_applicable)} does not apply to {self.precision} with method {method!r}"
            )
        if self.shared_embeddings:
            algorithm = self.algorithm or "default"
            if algorithm not in SHARING_ALGORITHMS:
                raise ValueError(f"shared_embeddings needs algorithm {', '.join(SHARING_ALGORITHMS)}: with "
                                 f"{algorithm!r} ModelBuilder 0.14.1 builds the embedding apart without saying so")
            if self.quantize_embeddings:
                raise ValueError("shared_embeddings and quantize_embeddings exclude each other: the shared embedding "
                                 "is the quantized head's weight")
            if any(n.startswith("/lm_head/") for n in self.nodes_to_exclude):
                raise ValueError("shared_embeddings needs the LM head quantized: it is the weight the embedding "
                                 "shares; remove /lm_head/MatMul from nodes_to_exclude")
        return self

    def resolved(self) -> Variant:
        """Every knob with its default filled in: what the variant's build really uses (and its cache key)."""
        method = self.method or DEFAULT_METHOD[self.precision]
        knobs: dict[str, Any] = {"name": self.name, "precision": self.precision, "method": method}
        if self.precision == "fp32":
            return Variant(**knobs)
        if self.precision == "int4" or method == "rtn":
            knobs["block_size"] = self.block_size or (32 if self.precision == "int4" else 128)
        if method in ("builder", "rtn", "dynamic", "gptq"):
            knobs["symmetric"] = True if self.symmetric is None else self.symmetric
        if method in ("builder", "rtn", "gptq"):
            knobs["accuracy_level"] = self.accuracy_level or 4
        if method == "builder":
            knobs["algorithm"] = self.algorithm or "default"
            knobs["quantize_embeddings"] = bool(self.quantize_embeddings)
            if self.shared_embeddings:
                knobs["shared_embeddings"] = True
        knobs["nodes_to_exclude"] = tuple(self.nodes_to_exclude)
        return Variant(**knobs)


class GenerationDefaults(_Strict):
    max_length: int | None = Field(
        None, ge=1, description="Longest sequence (prompt + answer) Foundry Local allows, written into "
        "genai_config.json (its KV cache is sized for it on every request); default: the model's own context")
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
    intra_op_threads: int | Literal["physical_cores", "runtime"] = Field(
        "physical_cores", description="Threads each decode step runs on (written as genai_config.json's "
        "session_options.intra_op_num_threads): a count; physical_cores, this machine's (onnxruntime's own default "
        "for a session); or runtime, left unset for onnxruntime-genai to choose where it is served (half the logical "
        "cores: on a machine without SMT, half of them idle; 1 of 2 here, which decodes int4 1.6x slower when the "
        "machine serves alone). On a machine shared with other work, fewer threads than cores can be faster "
        "(docs/runtime-overhead.md)")

    @field_validator("intra_op_threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        wrong = isinstance(v, bool) or (isinstance(v, int) and not 1 <= v <= 256) or (
            isinstance(v, str) and v not in ("physical_cores", "runtime"))
        if wrong:
            raise ValueError(f"intra_op_threads must be 1 to 256, physical_cores or runtime; got {v!r}")
        return v


class ExecutionSpec(_Strict):
    variants_on: Literal["inline", "workers"] = Field(
        "inline", description="inline: the variants one after another in the sweep's process; workers: each a flow "
        "run of the variant deployment, in parallel on the workers of its queue (python -m ops.stack up "
        "--variant-workers N)")
    deployment: str = Field("variant/on-worker", description="The variant deployment, <flow>/<deployment>, when "
                                                              "variants_on is workers")


class SweepSpec(_Strict):
    model: ModelSpec
    variants: tuple[VariantSpec, ...] = Field(min_length=1, description="The variants to build, in order")
    foundry: FoundrySpec = Field(default_factory=FoundrySpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec, description="Rows the gptq variants "
                                         "calibrate on (slmops.calibration)")
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)

    @model_validator(mode="after")
    def _policy_is_measured(self) -> "SweepSpec":
        """A policy on fidelity figures needs them measured: refused now, not found unmeasured after the sweep."""
        if not (self.promotion.enabled and self.evaluation.enabled) or self.evaluation.fidelity:
            return self
        named = [c.metric for c in self.promotion.constraints] + [t.metric for t in self.promotion.objective]
        unmeasured = [m for m in dict.fromkeys(named) if m in FIDELITY_METRICS]
        if unmeasured:
            raise ValueError(f"the promotion policy names {', '.join(unmeasured)}, which evaluation profile "
                             f"{self.evaluation.profile!r} does not measure; set evaluation.fidelity: true or use "
                             "profile standard or thorough")
        return self

    @model_validator(mode="after")
    def _baseline_is_a_variant(self) -> "SweepSpec":
        names = [v.name for v in self.variants]
        if self.promotion.baseline and self.promotion.baseline not in names:
            raise ValueError(f"promotion.baseline {self.promotion.baseline!r} is not a variant; variants: "
                             f"{', '.join(names)}")
        return self

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


def load_policy(path: str | Path) -> PromotionSpec:
    """A promotion policy from YAML: a whole sweep spec's `promotion:` section, or the section alone."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SpecError(f"{path}: cannot read the policy: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: invalid YAML: {getattr(err, 'problem', None) or err}") from None
    if isinstance(data, dict) and "promotion" in data:
        data = data["promotion"]
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a policy is a mapping with constraints and objective")
    try:
        return PromotionSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_error(f"{path}: promotion", err).replace("promotion: ", "promotion.", 1)) from None


def with_model_path(spec: SweepSpec, path: str | Path, source: str = "spec", adapter: Path | None = None) -> SweepSpec:
    """The spec with model.path (and model.adapter) replaced (validated again)."""
    data = spec.model_dump(mode="json")
    data["model"]["path"] = str(path)
    data["model"]["adapter"] = str(adapter) if adapter else None
    return parse_spec(data, source)
