"""The ``evaluation:`` section of a sweep spec: what is measured for every variant, and how hard.

    evaluation: {profile: quick}                 # what the deployment tutorial's checklist names, cheaply
    evaluation: {profile: standard}              # the default
    evaluation: {profile: thorough, max_eval_items: 300}   # for a release; any field still overrides its profile

Validated with the rest of the spec before any work. The profiles (PROFILES) differ in how many times a timing is
repeated and how sure it must be before it stops, how much of the eval set is answered, how many generations the
leak check follows, and whether fidelity to the fp32 baseline is measured.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EdgeCase = Literal["empty", "whitespace", "too_long", "non_ascii", "control_chars"]
EDGE_CASES: tuple[EdgeCase, ...] = ("empty", "whitespace", "too_long", "non_ascii", "control_chars")
Profile = Literal["quick", "standard", "thorough"]

# what each profile sets; a field given in the spec wins over its profile
PROFILES: dict[str, dict[str, Any]] = {
    # the tutorial's checklist: speed at three lengths, memory, CPU, a sample of the eval set (its answers are the
    # leak check's generations), every edge case; no fidelity. At most 5 timed requests a length, as the manual
    # route's benchmark times (benchmarks/manual_generate.py)
    "quick": {"warmup": 1, "min_repetitions": 3, "repetitions": 5, "ci_target": 0.10, "max_eval_items": 16,
              "leak_generations": 0, "fidelity": False},
    # the default: fidelity, twice quick's rows, and 5-10 timed requests a length (10 is what the repetitions
    # default was before profiles), stopping at 5 once the interval is within 3 %. Wider intervals on a noisy machine
    # are reported as they are, and a promotion then calls fewer wins; thorough is for when they must be narrower
    "standard": {"warmup": 2, "min_repetitions": 5, "repetitions": 10, "ci_target": 0.03, "max_eval_items": 32,
                 "leak_generations": 0, "fidelity": True},
    "thorough": {"warmup": 3, "min_repetitions": 10, "repetitions": 50, "ci_target": 0.02, "max_eval_items": None,
                 "leak_generations": 500, "fidelity": True},
}


class EvaluationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Measure every succeeded variant (speed, memory, quality, fidelity)")
    profile: Profile = Field("standard", description="quick: the tutorial's checklist, cheaply; standard; thorough: "
                                                     "for a release. Every field below overrides its profile")
    reuse: bool = Field(True, description="Reuse a variant's measurements when its content, the baseline, the "
                                          "eval set, these settings and the tool versions are all unchanged")
    dataset: Path | None = Field(
        None, description="eval.jsonl of {prompt, reference}; default: eval.jsonl in the model folder, if any"
    )
    smoke_prompt: str | None = Field(None, description="Prompt of the smoke test; default: the first eval prompt")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="Tokens generated per answer")
    warmup: int = Field(description="Unmeasured requests per prompt length before the measured ones", ge=0, le=100)
    min_repetitions: int = Field(description="Measured requests per prompt length before the interval may stop "
                                             "them", ge=2, le=1000)
    repetitions: int = Field(description="Most measured requests per prompt length (they stop earlier once the "
                                         "median's 95 % interval is within ci_target)", ge=2, le=1000)
    ci_target: float = Field(description="Stop repeating a prompt length once the 95 % interval of its median "
                                         "decode speed and time to first token is within this share of the median "
                                         "(0: always `repetitions`)", ge=0, le=1)
    prompt_lengths: tuple[int, ...] = Field(
        (16, 64, 160),
        min_length=3,
        description="Prompt lengths in tokens (chat template included, as the runtime counts them) at which speed is "
        "measured; three or more, each plus max_new_tokens within the model's context",
    )
    leak_generations: int = Field(
        description="Generations whose resident memory the leak check follows at the least: the eval answers count "
        "toward them, and more are made only to reach this number (0: the answers alone)", ge=0, le=100_000)
    leak_bound_mb: float = Field(
        25.0,
        description="Resident-memory growth (MB) across the leak check's generations above which the check fails "
        "(a bound below zero fails it always)",
    )
    format_regex: str | None = Field(
        None, description="Regular expression every answer must match in full to count as in the expected format"
    )
    json_schema: dict[str, Any] | None = Field(
        None, description="JSON schema every answer must parse into and satisfy to count as in the expected format"
    )
    max_eval_items: int | None = Field(description="Eval rows answered and teacher-forced (the first ones); null: "
                                                   "every row", ge=1)
    fidelity: bool = Field(description="Teacher-force the eval rows and compare with the fp32 baseline (KL "
                                       "divergence, Δp, same top p, perplexity ratio)")
    edge_cases: tuple[EdgeCase, ...] = Field(
        EDGE_CASES,
        min_length=1,
        description=f"Invalid or unusual inputs each variant must answer or reject cleanly, of {list(EDGE_CASES)}",
    )
    worker_timeout_s: float = Field(
        900.0, gt=0, description="Seconds one evaluation process may run before it is stopped and the variant fails"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_profile(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        profile = data.get("profile", "standard")
        if profile not in PROFILES:
            return data  # the Literal reports it, naming the profiles
        merged = {**PROFILES[profile], **data}
        if "min_repetitions" not in data and isinstance(merged["repetitions"], int) and merged["repetitions"] >= 2:
            # a spec that lowers only `repetitions` lowers the profile's minimum with it
            merged["min_repetitions"] = min(merged["min_repetitions"], merged["repetitions"])
        return merged

    @model_validator(mode="after")
    def _repetitions(self) -> "EvaluationSpec":
        if self.min_repetitions > self.repetitions:
            raise ValueError(f"min_repetitions {self.min_repetitions} is above repetitions {self.repetitions}")
        return self

    @field_validator("prompt_lengths")
    @classmethod
    def _lengths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 1 for n in v):
            raise ValueError(f"prompt lengths must be positive token counts, got {list(v)}")
        if len(set(v)) != len(v):
            raise ValueError(f"prompt lengths must differ from each other, got {list(v)}")
        return tuple(sorted(v))

    @field_validator("format_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"format_regex {v!r} is not a valid regular expression: {exc}") from None
        return v

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            from jsonschema import exceptions, validators

            try:
                validators.validator_for(v).check_schema(v)
            except exceptions.SchemaError as exc:
                raise ValueError(f"json_schema is not a valid JSON schema: {exc.message}") from None
        return v

    @field_validator("edge_cases")
    @classmethod
    def _unique_cases(cls, v: tuple[EdgeCase, ...]) -> tuple[EdgeCase, ...]:
        return tuple(dict.fromkeys(v))
