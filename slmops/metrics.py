"""The metrics a variant can carry: their names, what a good value looks like, and the range they live in.

Policies (promotion constraints and objectives) may only name these, so a typo is an error before any work.
"""

from __future__ import annotations

import math
from typing import Any, Literal

Goal = Literal["minimize", "maximize"]

# name -> (better direction, lowest possible value, highest possible value, unit for display)
METRICS: dict[str, tuple[Goal, float | None, float | None, str]] = {
    # build and serving
    "size_bytes": ("minimize", 0, None, "bytes"),
    "build_seconds": ("minimize", 0, None, "s"),
    "smoke_test_passed": ("maximize", 0, 1, ""),
    "smoke_test_seconds": ("minimize", 0, None, "s"),
    # speed, memory, CPU (evaluation)
    "ttft_ms_p50": ("minimize", 0, None, "ms"),
    "ttft_ms_p95": ("minimize", 0, None, "ms"),
    "prefill_tokens_per_s": ("maximize", 0, None, "tok/s"),
    "decode_tokens_per_s": ("maximize", 0, None, "tok/s"),
    "response_ms_p50": ("minimize", 0, None, "ms"),
    "peak_rss_mb": ("minimize", 0, None, "MB"),
    "cpu_percent": ("minimize", 0, None, "%"),
    "rss_growth_mb": ("minimize", None, None, "MB"),
    # quality and fidelity (evaluation)
    "exact_match": ("maximize", 0, 1, ""),
    "token_f1": ("maximize", 0, 1, ""),
    "format_ok": ("maximize", 0, 1, ""),
    "perplexity": ("minimize", 1, None, ""),
    "kl_div_mean": ("minimize", 0, None, ""),
    "kl_div_p99": ("minimize", 0, None, ""),
    "top1_agreement": ("maximize", 0, 1, ""),
    "ppl_ratio": ("minimize", 0, None, ""),
    "edge_cases_passed": ("maximize", 0, 1, ""),
}


# what every evaluation must return (slmops.evaluate), each a key of METRICS
EVALUATION_METRICS = (
    "ttft_ms_p50", "ttft_ms_p95", "prefill_tokens_per_s", "decode_tokens_per_s", "response_ms_p50", "peak_rss_mb",
    "cpu_percent", "rss_growth_mb", "exact_match", "token_f1", "format_ok", "perplexity", "kl_div_mean",
    "kl_div_p99", "top1_agreement", "ppl_ratio", "edge_cases_passed",
)
# the columns of the variants tables people read (report.md, `slmops compare`), and the model version's tags
HEADLINE = ("size_bytes", "exact_match", "kl_div_mean", "top1_agreement", "decode_tokens_per_s", "ttft_ms_p50",
            "peak_rss_mb")
# the few the Prefect UI's variants table shows beside name, status, size and Foundry Local id
PREFECT_TABLE = ("exact_match", "kl_div_mean", "decode_tokens_per_s")


def known(name: str) -> bool:
    return name in METRICS


def fmt(name: str, value: float | None) -> str:
    """A metric value for people: sizes in MB, shares as percentages."""
    if value is None:
        return "-"
    unit = METRICS.get(name, ("", None, None, ""))[3]
    if name == "size_bytes":
        for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
            if value >= scale:
                return f"{value / scale:.2f} {unit}"
        return f"{value:.0f} B"
    if METRICS.get(name, ("", None, None, ""))[2] == 1 and name != "smoke_test_passed":
        return f"{100 * value:.1f}%"
    if abs(value) < 0.01 and value != 0:
        return f"{value:.2e}{(' ' + unit) if unit else ''}"
    return f"{value:.3g}{(' ' + unit) if unit else ''}"


def finite(metrics: dict[str, Any]) -> dict[str, float]:
    """Numbers only: NaN and infinity (a length with no decode sample, say) and flags are left out, not logged."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
