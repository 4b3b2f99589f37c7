"""Evaluation of variants: speed, memory, CPU, quality, fidelity to the baseline, edge cases."""
