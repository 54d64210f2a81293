"""The package layout is the architecture: check its import rules from the source.

Layers, lowest first (ARCHITECTURE.md, README "Layout"). A module may import its own
package and packages of a lower rank, never one of its rank or above; ``shm``, ``storage``
and ``model`` import nothing else of the appliance. Module-level cycles are refused too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "appliance"

RANK = {
    "shm": 0,
    "storage": 0,
    "model": 0,
    "markets": 0,  # ccxt connections from plain settings, shared by feeds and venues
    "agents": 1,
    "feeds": 1,
    "venues": 1,
    "cluster": 1,
    "exsim": 1,  # the loopback exchange: imports nothing else of the appliance
    "trading": 2,
    "config": 3,
    "runtime": 4,
    "workers": 5,
    "ops": 6,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every appliance module named by an import anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m == "appliance" or m.startswith("appliance.")}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = _modules()


def test_every_package_has_a_rank():
    layers = {_layer(m) for m in MODULES} - {None}
    assert layers <= set(RANK), f"packages without a layer: {layers - set(RANK)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_lower_layers(module):
    mine = _layer(module)
    if mine is None:
        return
    bad = []
    for target in sorted(_imports(MODULES[module])):
        theirs = _layer(target)
        if theirs is None or theirs == mine or theirs not in RANK:
            continue
        if RANK[mine] == 0 or RANK[theirs] >= RANK[mine]:
            bad.append(target)
    assert not bad, f"{module} ({mine}, rank {RANK[mine]}) imports {bad}"


def test_no_import_cycles():
    graph = {
        m: {t for t in _imports(p) if t in MODULES and t != m and not m.startswith(t + ".")}
        for m, p in MODULES.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return [*stack[stack.index(t) :], t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))
