"""The package's shape: imports point one way, no cycles, and the public API is importable.

Read from the source files' import statements (no import is executed), so a new module that
imports upward or closes a cycle fails here before it can confuse a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "explorer"

# Lower layers never import higher ones. Same-layer imports are fine, except that no library
# module imports a command-line module (tools) and the web view is never imported by a library.
LAYERS = {
    "explorer.core": 0,
    "explorer.interpret": 1,
    "explorer.api": 2,
    "explorer.methods": 3,
    "explorer.viz": 4,
    "explorer.ui": 5,
    "explorer.tools": 6,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    for prefix, level in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return level
    return None


def explorer_imports(path: Path) -> set[str]:
    """Every ``explorer.*`` module this file imports, at any depth (function-level imports too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = module_name(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "explorer")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package holding this file
                package = own.split(".") if path.name == "__init__.py" else own.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "explorer":
                continue
            found.add(mod)
            for alias in node.names:  # "from explorer.x import module" imports a module
                if (ROOT.parent / (mod.replace(".", "/") + f"/{alias.name}.py")).is_file():
                    found.add(f"{mod}.{alias.name}")
    return found


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) is not None))
def test_imports_point_down(module):
    level = layer_of(module)
    upward = sorted(dep for dep in explorer_imports(MODULES[module])
                    if (dep_level := layer_of(dep)) is not None and dep_level > level)
    assert upward == [], f"{module} (layer {level}) imports higher layers: {upward}"


def test_every_module_has_a_layer():
    loose = sorted(m for m in MODULES if layer_of(m) is None and m not in ("explorer", "explorer.__main__"))
    assert loose == [], f"modules outside the layered subpackages: {loose}"


def test_no_import_cycles():
    graph = {m: {d for d in explorer_imports(p) if d in MODULES and d != m} for m, p in MODULES.items()}
    graph = {m: deps - {"explorer"} for m, deps in graph.items()}
    # Package __init__ files that re-export their children are not edges back into them.
    for m in graph:
        graph[m] = {d for d in graph[m] if not (MODULES[d].name == "__init__.py" and m.startswith(d + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = [*stack[stack.index(d):], d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_library_never_imports_the_command_line():
    offenders = sorted(m for m, p in MODULES.items() if not m.startswith(("explorer.tools", "explorer.__main__"))
                       and any(d.startswith("explorer.tools") for d in explorer_imports(p)))
    assert offenders == []


def test_modules_stay_small():
    big = sorted((m, n) for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420)
    assert big == [], f"modules over ~400 lines: {big}"


def test_long_functions_say_why():
    """A function over ~60 lines says in its docstring why it is long (the word "long")."""
    unexplained = []
    for m, p in MODULES.items():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 60
                    and "long" not in (ast.get_docstring(node) or "").lower()):
                unexplained.append(f"{m}.{node.name}")
    assert unexplained == []


def test_no_pointer_outside_the_repository():
    hits = [str(p) for p in ROOT.rglob("*") if p.is_file() and p.suffix in (".py", ".md")
            and any(s in p.read_text(encoding="utf-8") for s in ("METHOD" + ".md", "PLATFORM" + "_NOTES", "../" + "shared"))]
    assert hits == []


def test_public_api_names_resolve():
    import explorer

    missing = [name for name in explorer.__all__ if not hasattr(explorer, name)]
    assert missing == []
    assert explorer.Explorer.__module__ == "explorer.api"
