"""Evaluate: speed, memory, CPU, quality, fidelity to the baseline and edge cases of a registered variant.

    from slmops.evaluate.runner import evaluate_variant

settings.py is the spec's ``evaluation:`` section; runner.py starts worker.py in fresh processes, which use
speed.py, memory.py, quality.py, edge.py (through Foundry Local) and fidelity.py (through onnxruntime).
"""
