"""The ``evaluation:`` section of a sweep spec."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class EvaluationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Path | None = Field(
        None, description="eval.jsonl of {prompt, reference}; default: eval.jsonl in the model folder, if any"
    )
    smoke_prompt: str | None = Field(None, description="Prompt of the smoke test; default: the first eval prompt")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="Tokens generated per answer")
