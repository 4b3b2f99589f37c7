"""The ``evaluation:`` section of a sweep spec: what is measured for every variant, and how hard.

    slmops sweep configs/demo.yaml --out out/demo      (validated with the rest of the spec before any work)

The defaults keep the demo's evaluation of four variants to a few minutes on 2 cores: the demo model answers in
about 15 ms through Foundry Local, so repetitions are cheap there; for a real model, lower ``max_eval_items`` and
``leak_generations`` first.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EdgeCase = Literal["empty", "whitespace", "too_long", "non_ascii", "control_chars"]
EDGE_CASES: tuple[EdgeCase, ...] = ("empty", "whitespace", "too_long", "non_ascii", "control_chars")


class EvaluationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Measure every succeeded variant (speed, memory, quality, fidelity)")
    reuse: bool = Field(True, description="Reuse a variant's measurements when its content, the baseline, the "
                                          "eval set, these settings and the tool versions are all unchanged")
    dataset: Path | None = Field(
        None, description="eval.jsonl of {prompt, reference}; default: eval.jsonl in the model folder, if any"
    )
    smoke_prompt: str | None = Field(None, description="Prompt of the smoke test; default: the first eval prompt")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="Tokens generated per answer")
    repetitions: int = Field(
        10, ge=1, le=1000, description="Measured requests per prompt length, after warm-up (p50/p95 come from these)"
    )
    warmup: int = Field(3, ge=0, le=100, description="Unmeasured requests per prompt length before the repetitions")
    prompt_lengths: tuple[int, ...] = Field(
        (16, 64, 160),
        min_length=3,
        description="Prompt lengths in tokens (as the runtime counts them, chat template included) at which speed is "
        "measured; three or more, each plus max_new_tokens within the model's context",
    )
    leak_generations: int = Field(
        100, ge=4, le=100_000, description="Generations whose resident memory is followed by the leak check"
    )
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
    max_eval_items: int | None = Field(
        100, ge=1, description="Eval rows used for quality and fidelity (the first ones); null: every row"
    )
    edge_cases: tuple[EdgeCase, ...] = Field(
        EDGE_CASES,
        min_length=1,
        description=f"Invalid or unusual inputs each variant must answer or reject cleanly, of {list(EDGE_CASES)}",
    )
    worker_timeout_s: float = Field(
        900.0, gt=0, description="Seconds one evaluation process may run before it is stopped and the variant fails"
    )

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
