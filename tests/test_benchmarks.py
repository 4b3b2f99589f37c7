"""benchmarks/sweep_vs_manual.py on the demo model, once per route: a smoke check that the script runs every route
to the end and writes its table (speeds are not asserted here: this machine is shared; see docs/benchmarks.md).

    .venv/bin/python -m pytest tests/test_benchmarks.py -q     # about 3 minutes on 2 cores
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_script_writes_its_results_and_table(demo_model, tmp_path):
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sweep_vs_manual.py"), "--model", "demo", "--model-dir",
         str(demo_model), "--repetitions", "1", "--work", str(tmp_path / "work"), "--results", str(results)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    doc = json.loads((results / "demo.json").read_text())
    assert set(doc["wall_s"]) == {"manual", "cold", "cold_quick", "warm"}
    assert all(doc["wall_s"][route]["median"] > 0 for route in doc["wall_s"])
    run = doc["runs"][0]
    # every route made all four variants: the manual route measured each, the sweeps succeeded (then reused)
    assert set(run["manual"]["variants"]) == {"fp32", "int8", "int4-b32", "int4-b128"}
    assert all(v["decode_tokens_per_s"] > 0 and v["exact_match"] >= 0.75 and v["edge_cases_passed"] == 1.0
               and v["peak_rss_mb"] > 0 for v in run["manual"]["variants"].values())
    assert set(run["cold"]["statuses"].values()) == set(run["cold_quick"]["statuses"].values()) == {"succeeded"}
    # every length of quick's speed measurement stopped on its interval or at its maximum
    assert {stop for rows in run["cold_quick"]["speed_repetitions"].values() for _, stop in rows.values()} <= {
        "interval", "max_repetitions"}
    assert set(run["warm"]["statuses"].values()) == {"cached"}
    # the cold sweep's wall time splits into work and orchestration
    cold = run["cold"]
    assert 0 < cold["work_s"] < cold["wall_s"] and 0 < cold["orchestration_share"] < 1
    assert set(doc["variant_speed"]) == {"fp32", "int8", "int4-b32", "int4-b128"}
    assert all(v["plain_loop_decode_tokens_per_s"] > 0 for v in doc["variant_speed"].values())
    assert set(doc["targets_met"]) == {
        "cold_quick_at_least_1_5x_faster_than_manual", "cold_no_slower_than_manual", "conversion_at_least_3x_faster",
        "evaluation_at_most_40pct_of_cold", "warm_at_most_5pct_of_cold", "harness_within_10pct_of_plain_loop",
        "int4_decode_at_least_3x_fp32"}
    assert set(doc["ratios"]) >= {"manual_over_cold", "manual_over_cold_quick", "manual_over_cold_conversion"}

    table = (results / "demo.md").read_text()
    assert table.startswith("### demo (")
    for row in ("| manual |", "| cold |", "| cold_quick |", "| warm |", "| fp32 |", "| int4-b32 |", "manual/cold **",
                "manual/cold-quick **"):
        assert row in table, row
    assert table in proc.stdout
