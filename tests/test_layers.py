"""The package's import graph is the layering the README describes, with no cycles.

Read statically (``ast``), so an import hidden inside a function counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "mlbook"

#: What each part of mlbook may import (besides itself): lower layers only.
ALLOWED = {
    "mlbook": {"mlbook._env"},
    "mlbook._env": set(),
    "mlbook._io": set(),
    "mlbook.data": {"mlbook._env", "mlbook._io"},
    "mlbook.models": {"mlbook._env", "mlbook._io"},
    "mlbook.loops": set(),
    "mlbook.checkpoint": {"mlbook._io"},
    # plots draws what the methods give (e.g. a network's blocks as transfer sees them)
    "mlbook.plots": {"mlbook._env", "mlbook._io", "mlbook.data", "mlbook.models",
                     "mlbook.loops", "mlbook.checkpoint", "mlbook.transfer", "mlbook.meta"},
    "mlbook.transfer": {"mlbook._env", "mlbook._io", "mlbook.data", "mlbook.models",
                        "mlbook.loops", "mlbook.checkpoint"},
    "mlbook.meta": {"mlbook._env", "mlbook._io", "mlbook.data", "mlbook.models",
                    "mlbook.loops", "mlbook.checkpoint"},
    "mlbook.zoo": {"mlbook._env", "mlbook._io", "mlbook.data", "mlbook.models",
                   "mlbook.meta"},
    # exercises checks students' code against the methods, at the top beside zoo and plots
    "mlbook.exercises": {"mlbook._env", "mlbook._io", "mlbook.data", "mlbook.models",
                         "mlbook.loops", "mlbook.checkpoint", "mlbook.transfer", "mlbook.meta"},
}



def part(module: str) -> str:
    """``mlbook.data.omniglot`` -> ``mlbook.data``; ``mlbook.__init__`` -> ``mlbook``."""
    pieces = module.split(".")
    return "mlbook" if len(pieces) == 1 or pieces[1] == "__init__" else ".".join(pieces[:2])


def mlbook_imports(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    found = []
    for node in ast.walk(tree):
        is_from = isinstance(node, ast.ImportFrom) and node.module
        if is_from and node.module.split(".")[0] == "mlbook":
            if node.module == "mlbook":
                found += [(node, f"mlbook.{a.name}") for a in node.names]
            else:
                found.append((node, node.module))
        elif isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names if a.name.split(".")[0] == "mlbook"]
    return found


def sources() -> list[tuple[str, str, ast.AST]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO)
        module = ".".join(Path(rel).with_suffix("").parts)
        out.append((rel.as_posix(), module, ast.parse(path.read_text())))
    return out


def test_every_import_goes_to_a_lower_layer():
    wrong = []
    for rel, module, tree in sources():
        here = part(module)
        for _, target in mlbook_imports(tree):
            there = part(target)
            if there != here and there not in ALLOWED[here]:
                wrong.append(f"{rel} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_mlbook_import_inside_a_function():
    hidden = []
    for rel, _, tree in sources():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                hidden += [f"{rel}:{node.lineno} ({fn.name}) imports {target}"
                           for node, target in mlbook_imports(fn)]
    assert not hidden, "imports hidden in functions (a cycle being dodged?):\n" + "\n".join(hidden)


def test_no_cycle_between_modules():
    graph = {module: {t for _, t in mlbook_imports(tree)} for _, module, tree in sources()}
    graph = {m.removesuffix(".__init__"): deps for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in graph.get(m, ()):
            if d not in graph or d == m:
                continue
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
