"""Promote: decide by an explicit policy which variant is the champion (decide.py, pure), and record it in the
MLflow registry (registry.py).

    slmops promote --sweep ID [--policy FILE] [--dry-run]
"""

from slmops.promote.decide import Candidate, Decision, decide, decision_markdown

__all__ = ["Candidate", "Decision", "decide", "decision_markdown"]
