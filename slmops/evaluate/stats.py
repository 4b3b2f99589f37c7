"""How sure a number is: the spread of repeated timings, and a 95 % confidence interval of their median.

    summary = describe([51.2, 50.8, 52.0, 49.9, 51.5])   # median, p95, std, ci95_low, ci95_high, n
    converged(values, share=0.03)                          # the interval within 3 % of the median?

The interval is a percentile bootstrap of the median (resamples drawn with a fixed seed, so the same timings give
the same interval), as optimum-benchmark reports spreads for every latency; it makes no assumption about the shape
of the timing distribution, which on a shared machine has a long tail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SEED = 20261129
RESAMPLES = 2000


def median_ci95(values: Sequence[float], seed: int = SEED, resamples: int = RESAMPLES) -> tuple[float, float]:
    """Percentile-bootstrap 95 % interval of the median; (nan, nan) for no values."""
    data = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    medians = np.median(data[rng.integers(0, data.size, size=(resamples, data.size))], axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def describe(values: Sequence[float]) -> dict[str, float]:
    """Median (p50), p95, standard deviation, the median's 95 % interval and the count of the finite values."""
    data = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        nan = math.nan
        return {"p50": nan, "p95": nan, "std": nan, "ci95_low": nan, "ci95_high": nan, "n": 0.0}
    low, high = median_ci95(data)
    return {"p50": float(np.median(data)), "p95": float(np.percentile(data, 95)),
            "std": float(np.std(data, ddof=1)) if data.size > 1 else 0.0, "ci95_low": low, "ci95_high": high,
            "n": float(data.size)}


def converged(values: Sequence[float], share: float) -> bool:
    """Whether the median's 95 % interval lies within ``share`` of the median on both sides (two values at least:
    one value says nothing of its spread)."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return False
    low, high = median_ci95(finite)
    middle = float(np.median(finite))
    if not all(math.isfinite(x) for x in (low, high, middle)) or middle == 0:
        return False
    return max(middle - low, high - middle) <= share * abs(middle)


def mean_with_error(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error, std / sqrt(n - 1), as llama.cpp's --kl-divergence summary gives them."""
    n = values.size
    if n == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan
    return mean, float(values.std() / math.sqrt(n - 1))
