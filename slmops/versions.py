"""Tool versions, and the pairs that must match (``slmops doctor``).

    slmops doctor
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata

from slmops.errors import ToolchainError

# distribution name -> the version this project is pinned to (pyproject.toml); None: any version is recorded.
TOOLS: dict[str, str | None] = {
    "olive-ai": "0.13.0",
    "onnxruntime-genai": "0.14.1",
    "foundry-local-sdk": "2.2.1",
    "onnxruntime": "1.31.0",
    "onnxruntime-genai-core": "0.18.0",
    "onnx": None,
    "torch": "2.13.0",
    "transformers": None,
    "prefect": None,
    "mlflow": None,
    "psutil": None,
    "slmops": None,
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def tool_versions() -> dict[str, str]:
    """Installed version of every tool that shapes a variant (part of every cache key and MLflow run)."""
    versions = {dist: installed(dist) or "missing" for dist in TOOLS}
    versions["python"] = platform.python_version()
    return versions


def _base(version: str | None) -> str | None:
    return version.split("+")[0] if version else None


def checks() -> list[Check]:
    """The compatibility checks of ``slmops doctor``: each pinned tool, and the pairs that must agree."""
    v = {dist: installed(dist) for dist in TOOLS}
    out: list[Check] = []
    for dist, pin in TOOLS.items():
        if pin is None:
            ok = v[dist] is not None
            out.append(Check(dist, ok, v[dist] or "not installed"))
        else:
            ok = _base(v[dist]) == pin
            out.append(Check(dist, ok, f"{v[dist] or 'not installed'} (needs {pin})"))
    olive, genai = _base(v["olive-ai"]), _base(v["onnxruntime-genai"])
    pair_ok = olive == "0.13.0" and genai is not None and genai.startswith("0.14.")
    out.append(
        Check(
            "olive-ai + onnxruntime-genai builder",
            pair_ok,
            f"olive-ai {olive} with onnxruntime-genai {genai}: Olive 0.13.0's ModelBuilder needs genai 0.14.x "
            "(0.15 cannot create models, 0.16+ lacks models.quantized_model)",
        )
    )
    foundry, core, ort = _base(v["foundry-local-sdk"]), _base(v["onnxruntime-genai-core"]), _base(v["onnxruntime"])
    rt_ok = foundry == "2.2.1" and core == "0.18.0" and ort == "1.31.0"
    out.append(
        Check(
            "foundry-local-sdk runtime",
            rt_ok,
            f"foundry-local-sdk {foundry} serves with onnxruntime-genai-core {core} on onnxruntime {ort} "
            "(2.2.1 ships with 0.18.0 and 1.31.0)",
        )
    )
    return out


def require_compatible() -> None:
    """Raise ToolchainError naming every mismatch."""
    bad = [c for c in checks() if not c.ok]
    if bad:
        raise ToolchainError("; ".join(f"{c.name}: {c.detail}" for c in bad))
