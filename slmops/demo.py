"""The demo: a fine-tuned model made here, swept into fp32, int8 and two int4 variants.

    slmops demo --out out/demo
"""

from __future__ import annotations

from pathlib import Path

from slmops.config import SweepSpec, parse_spec

DEMO_MODEL_NAME = "demo-shop"
DEMO_VARIANTS = [
    {"name": "fp32", "precision": "fp32"},
    {"name": "int8", "precision": "int8"},
    {"name": "int4-b32", "precision": "int4", "block_size": 32, "symmetric": False},
    {"name": "int4-b128", "precision": "int4", "block_size": 128, "symmetric": True},
]


# promote the smallest variant that stays close to fp32, the fastest breaking ties
DEMO_PROMOTION = {
    "constraints": [{"metric": "kl_div_mean", "max": 0.01},
                    {"metric": "exact_match", "min_ratio_to_baseline": 0.98},
                    {"metric": "edge_cases_passed", "min": 1.0}],
    "objective": [{"metric": "size_bytes", "goal": "minimize"}, {"metric": "decode_tokens_per_s", "goal": "maximize"}],
}


def demo_spec(model_dir: Path) -> SweepSpec:
    """The spec of configs/demo.yaml, pointed at ``model_dir``."""
    return parse_spec({"model": {"path": str(model_dir), "name": DEMO_MODEL_NAME}, "variants": DEMO_VARIANTS,
                       "promotion": DEMO_PROMOTION}, "demo spec")


def ensure_demo_model(model_dir: Path, progress=None) -> tuple[Path, bool]:
    """Make the demo model once; return (folder, whether it was made now)."""
    if (model_dir / "config.json").is_file():
        return model_dir, False
    from slmops.demo_model import make_demo_model

    model_dir.parent.mkdir(parents=True, exist_ok=True)
    return make_demo_model(model_dir, progress=progress), True
