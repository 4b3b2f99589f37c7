"""The house a newcomer walks: no import circle among the project's modules, the external tools behind the adapters,
small modules and short flow functions. Read from the source (ast), nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("slmops", "flows", "tasks", "ops")
# the tools only slmops/adapters/ may import (torch, transformers and tokenizers are the demo's and fidelity's)
TOOLS = ("olive", "onnxruntime", "onnxruntime_genai", "onnxruntime_genai_core", "foundry_local_sdk", "mlflow")
MAX_MODULE_LINES = 400
MAX_FLOW_FUNCTION_LINES = 40


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, name: str) -> set[str]:
    """Every module path an import statement in the file names, absolute (relative imports resolved)."""
    names = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def project_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports(path, name) if m in mods and m != name} for name, path in mods.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles, each as the modules around it (a package importing its own modules is none)."""
    graph = {name: {m for m in deps if not m.startswith(name + ".")} for name, deps in graph.items()}
    state: dict[str, int] = {}
    found = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_no_import_circle_among_the_projects_modules():
    assert circles(project_graph()) == []


def test_only_the_adapters_import_the_external_tools():
    offenders = []
    for name, path in modules().items():
        if name.startswith("slmops.adapters"):
            continue
        for imported in imports(path, name):
            if imported.split(".")[0] in TOOLS:
                offenders.append(f"{name} imports {imported}")
    assert offenders == []


def test_the_adapters_import_nothing_from_the_pipelines_config():
    offenders = [f"{name} imports {m}" for name, path in modules().items() if name.startswith("slmops.adapters")
                 for m in imports(path, name) if m.startswith(("slmops.config", "slmops.variant", "flows", "tasks"))]
    assert offenders == []


def test_no_product_module_is_over_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_function_in_flows_is_over_40_lines():
    long = {}
    for path in sorted((ROOT / "flows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FLOW_FUNCTION_LINES:
                    long[f"{path.name}:{node.name}"] = lines
    assert long == {}


def test_the_layout_test_sees_a_circle_and_a_tool_import(tmp_path, monkeypatch):
    """The checks above can fail: an import of each kind, planted in a copy, is found."""
    import shutil

    copy = tmp_path / "copy"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    for module, planted in (("files", "import mlflow\nfrom slmops import keys\n"), ("keys", "from . import files\n")):
        path = copy / "slmops" / f"{module}.py"
        path.write_text(path.read_text() + planted)
    monkeypatch.setattr(__import__(__name__), "ROOT", copy)
    offenders = [n for n, p in modules().items() if not n.startswith("slmops.adapters")
                 for m in imports(p, n) if m.split(".")[0] in TOOLS]
    assert offenders == ["slmops.files"]
    assert circles(project_graph()) == [["slmops.files", "slmops.keys", "slmops.files"]]
