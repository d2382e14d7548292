"""The package's dependency rules, read from the source (every import, module-level or inside a function):

    codec  <-  fsdp, deepspeed, checkpoint  <-  launch, bench, cli (and the top-level CLI helpers)

* the codec imports no integration and nothing above it;
* integrations reach the codec through ``nzdist.codec``, never through the package root's re-exports;
* fsdp and deepspeed never import each other; deepspeed may use checkpoint (its checkpoint engine);
* no integration imports launch, bench or cli;
* no import cycles between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "nzdist"
CORE = {"codec", "_C", "_cuda", "accounting"}
INTEGRATIONS = {"fsdp", "deepspeed", "checkpoint"}
TOP = {"launch", "bench", "cli", "demo", "stats", "__main__", "experiments", "configs"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``path``; ``from X import y`` counts as X.y when that is a
    module of the package, else as X."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if _exists(sub) else base, node.lineno))
    return [(m, line) for m, line in out if m == "nzdist" or m.startswith("nzdist.")]


def _exists(mod: str) -> bool:
    p = PKG.parent.joinpath(*mod.split("."))
    return (
        p.with_suffix(".py").exists()
        or (p / "__init__.py").exists()
        or any(p.parent.glob(p.name + ".*.so"))
        or p.name in ("_C", "_cuda")
    )  # extensions, built or not


def layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


GRAPH = {module_name(p): imports(p) for p in PKG.rglob("*.py")}


@pytest.mark.parametrize("mod", sorted(m for m in GRAPH if layer(m) in CORE | INTEGRATIONS))
def test_dependencies_point_one_way(mod):
    own = layer(mod)
    for target, line in GRAPH[mod]:
        where = f"{mod} line {line} imports {target}"
        assert target != "nzdist", f"{where}: use nzdist.codec, not the package root"
        dep = layer(target)
        assert dep not in TOP, f"{where}: integrations and the codec never import launch/bench/cli"
        if own in CORE:
            assert dep in CORE, f"{where}: the codec knows nothing of the integrations"
        if own == "fsdp":
            assert dep not in {"deepspeed", "checkpoint"}, where
        if own == "deepspeed":
            assert dep != "fsdp", where
        if own == "checkpoint":
            assert dep not in {"fsdp", "deepspeed"}, where


def test_no_import_cycles():
    # A package's __init__ importing its own submodules is not a cycle; every other edge counts, lazy ones too.
    edges = {
        m: {t for t, _ in deps if t in GRAPH and not (m == t.rpartition(".")[0] or t == m)} for m, deps in GRAPH.items()
    }
    for m in edges:  # a submodule "importing" its package through `from . import x` is an edge to x, not up
        edges[m] = {t for t in edges[m] if not m.startswith(t + ".")}
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "active"
        for t in edges[m]:
            if state.get(t) == "active":
                cycles.append(stack[stack.index(t) :] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == []
