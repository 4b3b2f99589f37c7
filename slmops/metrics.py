"""The metrics a variant can carry: their names, what a good value looks like, and the range they live in.

Policies (promotion constraints and objectives) may only name these, so a typo is an error before any work.
"""

from __future__ import annotations

from typing import Literal

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
