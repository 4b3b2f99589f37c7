"""The promotion policy: constraints every variant must meet, and an objective that ranks the rest, each term with
the margin a challenger must clear to replace the champion.

    promotion:
      constraints:
        - {metric: kl_div_mean, max: 0.01}
        - {metric: decode_tokens_per_s, min_ratio_to_champion: 0.98}    # never more than 2 % slower than today's
      objective:
        - {metric: size_bytes, goal: minimize, min_relative_change: 0.05}
        - {metric: decode_tokens_per_s, goal: maximize}                 # timed: the 95 % intervals must not overlap

Validated with the spec before any work; a typo in a metric's name, or bounds that cannot be met, is an error.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slmops.metrics import METRICS
from slmops.metrics import known as known_metric


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _MetricRef(_Strict):
    metric: str = Field(description="A metric name (slmops.metrics.METRICS)")

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        if not known_metric(v):
            raise ValueError(f"unknown metric {v!r}; known: {', '.join(sorted(METRICS))}")
        return v


def _ordered(constraint: Constraint, low: str, high: str) -> None:
    lo, hi = getattr(constraint, low), getattr(constraint, high)
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"contradictory constraint on {constraint.metric}: {low} {lo} > {high} {hi}")


class Constraint(_MetricRef):
    min: float | None = Field(None, description="Lowest value allowed")
    max: float | None = Field(None, description="Highest value allowed")
    min_ratio_to_baseline: float | None = Field(None, gt=0, description="Lowest value allowed, as a share of the "
                                                "baseline's (0.98: at least 98% of the baseline)")
    max_ratio_to_baseline: float | None = Field(None, gt=0, description="Highest value allowed, as a multiple of "
                                                "the baseline's")
    min_ratio_to_champion: float | None = Field(None, gt=0, description="Lowest value allowed, as a share of the "
                                                "current champion's (0.98: never more than 2 % below what ships "
                                                "today); holds when there is no champion")
    max_ratio_to_champion: float | None = Field(None, gt=0, description="Highest value allowed, as a multiple of "
                                                "the current champion's; holds when there is no champion")

    @model_validator(mode="after")
    def _satisfiable(self) -> "Constraint":
        bounds = ("min", "max", "min_ratio_to_baseline", "max_ratio_to_baseline", "min_ratio_to_champion",
                  "max_ratio_to_champion")
        if all(getattr(self, b) is None for b in bounds):
            raise ValueError(f"constraint on {self.metric} sets no bound; set one of {', '.join(bounds)}")
        for low, high in (("min", "max"), ("min_ratio_to_baseline", "max_ratio_to_baseline"),
                          ("min_ratio_to_champion", "max_ratio_to_champion")):
            _ordered(self, low, high)
        _, lowest, highest, _ = METRICS[self.metric]
        if self.min is not None and highest is not None and self.min > highest:
            raise ValueError(f"constraint on {self.metric} cannot be met: min {self.min} is above its highest "
                             f"possible value {highest}")
        if self.max is not None and lowest is not None and self.max < lowest:
            raise ValueError(f"constraint on {self.metric} cannot be met: max {self.max} is below its lowest "
                             f"possible value {lowest}")
        return self


class ObjectiveTerm(_MetricRef):
    goal: Literal["minimize", "maximize"] | None = Field(None, description="Default: the metric's better direction")
    min_relative_change: float | None = Field(
        None, ge=0, description="A challenger is better on this term only by more than this share of the champion's "
        "value (0.05: 5 %); default for a timed figure: its 95 % interval and the champion's do not overlap")
    min_absolute_change: float | None = Field(
        None, ge=0, description="A challenger is better on this term only by more than this amount; with "
        "min_relative_change, by more than both")

    @property
    def direction(self) -> str:
        return self.goal or METRICS[self.metric][0]


class PromotionSpec(_Strict):
    enabled: bool = Field(True, description="Decide and move the champion alias after the sweep")
    registered_model: str | None = Field(None, description="MLflow registered model; default: the model's name")
    baseline: str | None = Field(None, description="Variant the ratios compare with; default: the fp32 variant")
    constraints: tuple[Constraint, ...] = Field((), description="Every one must hold for a variant to be promoted")
    objective: tuple[ObjectiveTerm, ...] = Field(
        (ObjectiveTerm(metric="size_bytes", goal="minimize"),
         ObjectiveTerm(metric="decode_tokens_per_s", goal="maximize")),
        min_length=1, description="Ranking of the variants that meet the constraints: first term first, the next "
                                  "ones break ties (within the margins of the earlier ones, against the champion)",
    )
    artifacts: Literal["copy", "reference"] = Field(
        "copy", description="copy: the variant folder becomes the model version's artifacts; reference: the "
                            "version points at the folder and records its size (for models of gigabytes)")

    @model_validator(mode="after")
    def _no_contradiction(self) -> "PromotionSpec":
        by_metric: dict[str, list[Constraint]] = {}
        for c in self.constraints:
            by_metric.setdefault(c.metric, []).append(c)
        for metric, group in by_metric.items():
            lows = [c.min for c in group if c.min is not None]
            highs = [c.max for c in group if c.max is not None]
            if lows and highs and max(lows) > min(highs):
                raise ValueError(f"contradictory constraints on {metric}: min {max(lows)} > max {min(highs)}")
        return self

    def metrics(self) -> list[str]:
        """Every metric the policy names, objective first."""
        return list(dict.fromkeys([t.metric for t in self.objective] + [c.metric for c in self.constraints]))
