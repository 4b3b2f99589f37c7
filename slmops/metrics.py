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
    # speed (evaluation): each timed figure with its spread and the 95 % interval of its median
    **{f"ttft_ms_{s}": ("minimize", 0, None, "ms") for s in ("p50", "p95", "std", "ci95_low", "ci95_high")},
    **{f"response_ms_{s}": ("minimize", 0, None, "ms") for s in ("p50", "p95", "std", "ci95_low", "ci95_high")},
    **{f"{figure}{s}": ("maximize", 0, None, "tok/s") for figure in ("prefill_tokens_per_s", "decode_tokens_per_s")
       for s in ("", "_p95", "_std", "_ci95_low", "_ci95_high")},
    "speed_consistency": ("maximize", 0, 1, ""),
    "decode_timing_resolved": ("maximize", 0, 1, ""),
    # memory, CPU (evaluation)
    "peak_rss_mb": ("minimize", 0, None, "MB"),
    "cpu_percent": ("minimize", 0, None, "%"),
    "rss_growth_mb": ("minimize", None, None, "MB"),
    "leak_check_passed": ("maximize", 0, 1, ""),
    # quality (evaluation)
    "exact_match": ("maximize", 0, 1, ""),
    "token_f1": ("maximize", 0, 1, ""),
    "format_ok": ("maximize", 0, 1, ""),
    "edge_cases_passed": ("maximize", 0, 1, ""),
    # fidelity to the fp32 baseline (evaluation), llama.cpp's --kl-divergence statistics
    "perplexity": ("minimize", 1, None, ""),
    "ppl_ratio": ("minimize", 0, None, ""),
    **{f"kl_div_{s}": ("minimize", 0, None, "") for s in ("mean", "mean_err", "median", "p90", "p95", "p99",
                                                        "p999", "max")},
    "delta_p_mean": ("maximize", -1, 1, ""),
    "delta_p_mean_err": ("minimize", 0, None, ""),
    "delta_p_rms": ("minimize", 0, 1, ""),
    "delta_p_rms_err": ("minimize", 0, None, ""),
    "same_top_p": ("maximize", 0, 1, ""),
    "same_top_p_err": ("minimize", 0, None, ""),
    "top1_agreement": ("maximize", 0, 1, ""),
    "ln_ppl_ratio_mean": ("minimize", None, None, ""),
    "ln_ppl_ratio_err": ("minimize", 0, None, ""),
    "ln_ppl_correlation": ("maximize", -1, 1, ""),
    # the roofline (slmops.roofline): the weight bytes a decode step reads (a property of the graph), the bandwidth
    # decode achieved with them, and its share of the machine's memory roof and of its weight format's kernel roof
    "bytes_per_token": ("minimize", 0, None, "bytes"),
    "achieved_gb_per_s": ("maximize", 0, None, "GB/s"),
    "bandwidth_share": ("maximize", 0, None, ""),
    "kernel_share": ("maximize", 0, None, ""),
}
# figures of the machine a variant runs on, not of the variant alone: compared only when measured side by side
MACHINE_METRICS = frozenset(name for name, (_, _, _, unit) in METRICS.items()
                            if unit in ("ms", "tok/s", "MB", "%", "GB/s")) \
    | {"speed_consistency", "decode_timing_resolved", "leak_check_passed", "bandwidth_share", "kernel_share"}
# the timed figures and the names of their spread (promotion compares them by their intervals)
TIMED = {"ttft_ms_p50": "ttft_ms", "response_ms_p50": "response_ms", "prefill_tokens_per_s": "prefill_tokens_per_s",
         "decode_tokens_per_s": "decode_tokens_per_s"}

# what every evaluation returns (slmops.evaluate), each a key of METRICS; fidelity's when it is measured
SERVING_METRICS = (
    *(f"{figure}_{s}" for figure in ("ttft_ms", "response_ms") for s in ("p50", "p95", "std", "ci95_low", "ci95_high")),
    *(f"{figure}{s}" for figure in ("prefill_tokens_per_s", "decode_tokens_per_s")
      for s in ("", "_p95", "_std", "_ci95_low", "_ci95_high")),
    "peak_rss_mb", "cpu_percent", "rss_growth_mb", "exact_match", "token_f1", "format_ok", "edge_cases_passed",
)
FIDELITY_METRICS = (
    "perplexity", "ppl_ratio", "kl_div_mean", "kl_div_mean_err", "kl_div_median", "kl_div_p90", "kl_div_p95",
    "kl_div_p99", "kl_div_p999", "kl_div_max", "delta_p_mean", "delta_p_mean_err", "delta_p_rms", "delta_p_rms_err",
    "same_top_p", "same_top_p_err", "top1_agreement", "ln_ppl_ratio_mean", "ln_ppl_ratio_err", "ln_ppl_correlation",
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
    if unit == "bytes":
        for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
            if value >= scale:
                return f"{value / scale:.2f} {unit}"
        return f"{value:.0f} B"
    if (METRICS.get(name, ("", None, None, ""))[2] == 1 and name != "smoke_test_passed") or name.endswith("_share"):
        return f"{100 * value:.1f}%"
    if abs(value) < 0.01 and value != 0:
        return f"{value:.2e}{(' ' + unit) if unit else ''}"
    return f"{value:.3g}{(' ' + unit) if unit else ''}"


def finite(metrics: dict[str, Any]) -> dict[str, float]:
    """Numbers only: NaN and infinity (a length with no decode sample, say) and flags are left out, not logged."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def interval(name: str, metrics: dict[str, float]) -> tuple[float, float] | None:
    """The 95 % interval of a timed figure's median, when it was measured."""
    figure = TIMED.get(name)
    if figure is None:
        return None
    low, high = metrics.get(f"{figure}_ci95_low"), metrics.get(f"{figure}_ci95_high")
    return (low, high) if low is not None and high is not None else None


def resolved(name: str, metrics: dict[str, float]) -> bool:
    """False for a decode speed the timer could not resolve (a model faster than the stream's delivery)."""
    return name != "decode_tokens_per_s" or metrics.get("decode_timing_resolved", 1.0) >= 1.0


def fmt_measured(name: str, metrics: dict[str, float]) -> str:
    """A metric of a variant for people, with the 95 % interval of a timed figure and a mark on an unresolved one:
    "51.2 tok/s [49.8, 52.5]", "not resolved (≈4.1e+03 tok/s)"."""
    value = metrics.get(name)
    if value is None:
        return "-"
    if not resolved(name, metrics):
        return f"not resolved (≈{fmt(name, value)})"
    bounds = interval(name, metrics)
    if bounds is None:
        return fmt(name, value)
    return f"{fmt(name, value)} [{fmt(name, bounds[0]).split()[0]}, {fmt(name, bounds[1]).split()[0]}]"
