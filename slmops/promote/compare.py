"""One objective term, challenger against champion: better, worse, or within the margin (a tie).

    compare_term(term, challenger_metrics, champion_metrics)

The margin is the term's own (``min_relative_change``, ``min_absolute_change``: better by more than both); for a
timed figure with no margin of its own, the 95 % intervals of the two medians must not overlap; for any other figure,
any difference counts. A decode speed the timer could not resolve ties (it says nothing), and so does a figure
neither side measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from slmops.metrics import fmt, fmt_measured, interval, resolved
from slmops.promote.policy import ObjectiveTerm

Verdict = Literal["better", "worse", "tie"]


@dataclass(frozen=True)
class TermComparison:
    """What one term says of the challenger against the champion, with the numbers that say it."""

    metric: str
    verdict: Verdict
    challenger: str
    champion: str
    change: str
    margin: str

    def phrase(self) -> str:
        return f"{self.metric}: {self.challenger} vs {self.champion}, {self.change}, margin {self.margin}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _change(a: float | None, b: float | None, metric: str) -> str:
    if a is None or b is None:
        return "not comparable"
    if b == 0:
        return f"{fmt(metric, a - b)} apart" if a != b else "equal"
    return f"{(a - b) / abs(b):+.1%}"


def _margin(term: ObjectiveTerm) -> str | None:
    parts = []
    if term.min_relative_change is not None:
        parts.append(f"{term.min_relative_change:.0%}" if term.min_relative_change >= 0.01
                     else f"{term.min_relative_change:.2%}")
    if term.min_absolute_change is not None:
        parts.append(fmt(term.metric, term.min_absolute_change))
    return " and ".join(parts) or None


def _verdict(term: ObjectiveTerm, challenger: dict[str, float], champion: dict[str, float]) -> tuple[Verdict, str]:
    metric, sign = term.metric, 1 if term.direction == "maximize" else -1
    a, b = challenger.get(metric), champion.get(metric)
    if a is None or b is None:
        return ("better" if b is None and a is not None else "worse" if a is None and b is not None
                else "tie"), "none (not measured on one side)"
    if not (resolved(metric, challenger) and resolved(metric, champion)):
        return "tie", "none (the timer could not resolve it)"
    gain = sign * (a - b)
    margin = _margin(term)
    if margin is not None:
        needed = max(term.min_absolute_change or 0.0, (term.min_relative_change or 0.0) * abs(b))
        return ("better" if gain > needed else "worse" if -gain > needed else "tie"), margin
    bounds_a, bounds_b = interval(metric, challenger), interval(metric, champion)
    if bounds_a and bounds_b:
        # the challenger's interval wholly on the better side of the champion's, or wholly on the worse side
        low_a, high_a = sorted(sign * x for x in bounds_a)
        low_b, high_b = sorted(sign * x for x in bounds_b)
        return ("better" if low_a > high_b else "worse" if high_a < low_b else "tie"), "95 % intervals apart"
    return ("better" if gain > 0 else "worse" if gain < 0 else "tie"), "none"


def compare_term(term: ObjectiveTerm, challenger: dict[str, float], champion: dict[str, float]) -> TermComparison:
    verdict, margin = _verdict(term, challenger, champion)
    return TermComparison(term.metric, verdict, fmt_measured(term.metric, challenger),
                          fmt_measured(term.metric, champion),
                          _change(challenger.get(term.metric), champion.get(term.metric), term.metric), margin)
