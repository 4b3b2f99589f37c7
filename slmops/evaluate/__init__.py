"""Evaluation of variants: speed, memory, CPU, quality, fidelity to the baseline, edge cases (issue 4).

    from slmops.evaluate.runner import evaluate_variant, METRIC_NAMES

settings.py is the spec's ``evaluation:`` section; runner.py starts worker.py in fresh processes, which use
speed.py, memory.py, quality.py, edge.py (through Foundry Local) and fidelity.py (through onnxruntime).
"""
