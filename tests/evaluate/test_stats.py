"""The spread of repeated timings and the interval of their median: deterministic, and honest about few values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slmops.evaluate.stats import converged, describe, mean_with_error, median_ci95


def test_the_interval_of_the_median_holds_the_median_and_is_the_same_every_time():
    values = [50.1, 49.8, 51.0, 50.5, 49.9, 50.2, 55.0, 50.0]
    low, high = median_ci95(values)
    assert low <= float(np.median(values)) <= high
    assert (low, high) == median_ci95(values), "seeded: the same timings give the same interval"
    assert high - low < 1.5, "one slow outlier barely moves the median's interval"


def test_describe_gives_median_p95_std_interval_and_count():
    summary = describe([1.0, 2.0, 3.0, 4.0, math.nan])
    assert (summary["p50"], summary["n"]) == (2.5, 4.0)
    assert summary["p95"] == pytest.approx(3.85)
    assert summary["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert summary["ci95_low"] <= 2.5 <= summary["ci95_high"]
    assert all(math.isnan(v) for k, v in describe([]).items() if k != "n")


def test_converged_needs_the_interval_within_the_share_of_the_median():
    tight = [100.0, 100.5, 99.5, 100.2, 99.8, 100.1]
    loose = [100.0, 140.0, 70.0, 120.0, 85.0, 110.0]
    assert converged(tight, 0.03) and not converged(loose, 0.03)
    assert not converged([100.0], 0.03), "one value says nothing of its spread"


def test_mean_with_error_is_llama_cpps_standard_error():
    values = np.asarray([0.0, 1.0, 2.0, 3.0])
    mean, err = mean_with_error(values)
    assert mean == 1.5 and err == pytest.approx(np.std(values) / math.sqrt(3))
