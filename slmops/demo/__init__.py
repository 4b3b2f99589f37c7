"""The demo: a fine-tuned model made here (model.py), swept by configs/demo.yaml into fp32, int8 and two int4
variants.

    slmops demo --out out/demo
"""

from __future__ import annotations

from pathlib import Path

from slmops.config import SweepSpec, load_spec, with_model_path

DEMO_SPEC = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def demo_spec(model_dir: Path) -> SweepSpec:
    """configs/demo.yaml, pointed at ``model_dir``."""
    return with_model_path(load_spec(DEMO_SPEC), model_dir, str(DEMO_SPEC))


def ensure_demo_model(model_dir: Path, progress=None) -> tuple[Path, bool]:
    """Make the demo model once; return (folder, whether it was made now)."""
    if (model_dir / "config.json").is_file():
        return model_dir, False
    from slmops.demo.model import make_demo_model

    model_dir.parent.mkdir(parents=True, exist_ok=True)
    return make_demo_model(model_dir, progress=progress), True
