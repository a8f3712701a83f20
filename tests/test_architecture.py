"""The package layout is the architecture (issue 23): the import graph of ``viz/``, read from the source.

``base`` <- ``engine`` <- ``atlas`` <- ``serving`` <- ``dashboard`` / ``bench`` <- the CLI: every import points down
this list or stays inside its own package, nothing imports in a circle, no function imports part of ``viz`` (only
the optional or heavy extras named below, lazily), and no module takes another's private names."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

VIZ = Path(__file__).resolve().parent.parent / "viz"
RANK = {"base": 0, "engine": 1, "atlas": 2, "serving": 3, "dashboard": 4, "bench": 4}
TOP = {"viz": 2, "viz.cli": 5, "viz.__main__": 6}  # the public API (base and engine names), the CLI, `python -m viz`
LAZY = {  # what a function may import, and why not at the top
    "ray": "Ray is an optional extra (requirements-cluster.txt); import viz never loads it",
    "lucent": "the benchmark's peer row (requirements-dev.txt), optional",
    "onnx": "only to convert a torchvision checkpoint given as ONNX, a rare path",
    "sklearn": "heavy (about 1 s to import): only the photo factors and the metrics' colour statistics need it",
    "scipy": "heavy: only the photo factors' smoothing needs it",
    "skimage": "heavy: only the metrics' colour conversion needs it",
    "torchvision": "heavy (1.3 s to import): only the robustness measures and the benchmark's baseline need it",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(VIZ.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK) else module


def _rank(module: str) -> int:
    return RANK.get(_package(module), TOP.get(module))


def _imports():
    """(importer, imported viz module or third-party top name, in a function?, private names, line) for every
    import in viz/."""
    modules = {_module_name(p) for p in VIZ.rglob("*.py")}
    for path in sorted(VIZ.rglob("*.py")):
        me = _module_name(path)
        package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    yield me, a.name, id(node) in in_function, [], node.lineno
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module
                for a in node.names:  # `from .pkg import module` imports that module
                    name = f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target
                    private = [a.name] if a.name.startswith("_") and name == target else []
                    yield me, name, id(node) in in_function, private, node.lineno


def _viz_edges():
    return [(me, target, fn, private, line) for me, target, fn, private, line in _imports()
            if target == "viz" or target.startswith("viz.")]


@pytest.mark.unit
def test_every_module_belongs_to_a_package():
    loose = [p.name for p in VIZ.glob("*.py") if p.stem not in ("__init__", "__main__", "cli")]
    assert loose == [], f"modules outside the packages: {loose}"
    assert all(_rank(_module_name(p)) is not None for p in VIZ.rglob("*.py"))


@pytest.mark.unit
def test_imports_point_down_the_layers():
    wrong = []
    for me, target, _, _, line in _viz_edges():
        if target == "viz" or _package(me) == _package(target):
            if target == "viz" and me != "viz.cli" and me != "viz.__main__":
                wrong.append(f"{me}:{line} imports the package root")
            continue
        if _rank(target) > _rank(me) or (_rank(target) == _rank(me)):
            wrong.append(f"{me}:{line} ({_package(me)}) imports {target} ({_package(target)})")
    assert wrong == [], "\n".join(wrong)


@pytest.mark.unit
def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for me, target, _, _, _ in _viz_edges():
        if target != me:
            graph.setdefault(me, set()).add(target)
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own modules is not a cycle of the graph of modules
    cycles = [c for c in cycles if not all(p.count(".") < 2 for p in c.split(" -> "))]
    assert cycles == [], "\n".join(cycles)


@pytest.mark.unit
def test_functions_import_only_the_optional_extras():
    inside = [f"{me}:{line} imports {target}" for me, target, fn, _, line in _imports()
              if fn and target.split(".")[0] not in LAZY]
    assert inside == [], "imports inside functions (move them to the top):\n" + "\n".join(inside)


@pytest.mark.unit
def test_no_private_names_across_modules():
    private = [f"{me}:{line} takes {names} from {target}" for me, target, _, names, line in _viz_edges()
               if names and target != me]
    assert private == [], "\n".join(private)


def test_each_package_imports_on_its_own_in_layer_order():
    """A fresh interpreter imports each package's modules, lowest layer first: none needs a higher one loaded
    first, and ``import viz`` loads neither Streamlit nor Ray nor torchvision."""
    order = sorted((_module_name(p) for p in VIZ.rglob("*.py") if p.stem != "__main__"),
                   key=lambda m: (_rank(m), m))
    code = ("import importlib, sys\n"
            f"for m in {order!r}:\n    importlib.import_module(m)\n"
            "print(sorted(m for m in ('streamlit', 'ray', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         cwd=VIZ.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
