"""The variants that benchmarks/runtime_overhead.py and benchmarks/yardstick.py time: the 494M-parameter
Qwen2.5-0.5B-shaped model (random weights) swept into fp32, int8, int4 block 32 and int4 block 128, registered with
Foundry Local, nothing measured or promoted.

    .venv/bin/python benchmarks/runtime_variants.py --work .slmops/rt      # ~15 min on 2 cores, ~9 GB on disk

Writes, under --work: the source model (qwen2.5-0.5b-shape/, 2 GB, made once), spec.yaml, the sweep's output
(out/report.json: each variant's onnx_dir and foundry_model_id) and its Foundry Local cache (home/foundry). Run it
again and the sweep finds everything cached. The model is the one benchmarks/sweep_vs_manual.py makes (same shape,
same recipe: the demo's tokenizer and eval set, embedding rows past the tokenizer's tokens zeroed so that a greedy
token is always decodable); it is made here as well so that the runtime benchmarks do not depend on that script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
# Qwen2.5-0.5B's shape (494M parameters with the tied embedding), as in benchmarks/sweep_vs_manual.py
QWEN_SHAPE = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "max_position_embeddings": 32768, "vocab_size": 151936,
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
# the four variants of the project's benchmarks (configs/demo.yaml)
VARIANTS = [{"name": "fp32", "precision": "fp32"},
            {"name": "int8", "precision": "int8"},
            {"name": "int4-b32", "precision": "int4", "block_size": 32, "symmetric": False},
            {"name": "int4-b128", "precision": "int4", "block_size": 128, "symmetric": True}]
MODEL_NAME = "rt-qwen-shape"


def make_model(target: Path, seed: int = 0) -> Path:
    """The Qwen2.5-0.5B-shaped random-weight model with the demo's tokenizer (made once)."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from slmops.demo.model import prepare_demo_assets

    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = prepare_demo_assets(partial, seed)
    config = json.loads((partial / "config.json").read_text())
    config.update(QWEN_SHAPE)
    config.pop("layer_types", None)  # recomputed by Qwen2Config for the new layer count
    config = Qwen2Config(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight[len(tokenizer):] = 0.0
    model.save_pretrained(partial, safe_serialization=True)
    os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".slmops" / "rt",
                        help="scratch folder (default .slmops/rt)")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    source = make_model(work / "qwen2.5-0.5b-shape")
    spec = {"model": {"path": str(source), "name": MODEL_NAME}, "variants": VARIANTS,
            "evaluation": {"enabled": False}, "promotion": {"enabled": False}}
    (work / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    home = work / "home"
    env = {**os.environ, "SLMOPS_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
           "SLMOPS_FOUNDRY_CACHE": str(home / "foundry")}
    for var in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    subprocess.run([str(BIN / "slmops"), "sweep", str(work / "spec.yaml"), "--out", str(work / "out")], env=env,
                   check=True)
    report = json.loads((work / "out" / "report.json").read_text())
    for v in report["variants"]:
        print(f"{v['name']}: {v['status']} {v.get('foundry_model_id')} {v.get('onnx_dir')}")
    return 0 if all(v["status"] == "succeeded" for v in report["variants"]) else 1


if __name__ == "__main__":
    sys.exit(main())
