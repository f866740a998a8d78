"""Imports run one way: top (CLI, Serve config) -> serve (the Ray Serve deployments and the autoscaler's
Serve adapter) -> api -> batch -> gateway -> queue/router -> protocol and base; the replica side (worker,
generation) over the engine; the autoscaling policy and simulator import nothing of ossfleet but the plain data
of a replica's load (protocol/load, the "data" layer, which imports nothing). Read from the
source of every package (platform/ossfleet, deployments, autoscaling), every import counted: function-level
ones, and typing-only ones under ``if TYPE_CHECKING:`` (a type that names a module above is a dependency on
it), so a cycle cannot hide. Inside the base layer the modules are ordered (BASE_ORDER)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"ossfleet": REPO / "platform" / "ossfleet", "deployments": REPO / "deployments",
         "autoscaling": REPO / "autoscaling"}  # fmt: skip
PACKAGES = tuple(ROOTS)

# Base modules, each importing only those before it (the first ones import nothing of ossfleet).
BASE_ORDER = ["errors", "v1", "control.keyspace", "families", "catalog", "config.base", "config.models", "config",
              "adapters.format", "metrics", "redisdb", "tasks", "jsonlimits", "harmony", "chatformat", "storage",
              "control.audit", "control.apikeys", "control.pricing", "control.budget", "adapters.store",
              "control.tenants", "adapters", "control", ""]  # fmt: skip
GROUPS = {
    "data": {"protocol.load"},  # plain data that imports nothing: shared with the autoscaling policy
    "base": set(BASE_ORDER),
    "protocol": {"structured", "protocol"},
    "engine": {"engine"},
    "queue": {"control.scripts", "control.cluster", "control.admission", "control.queue", "control.router",
              "control.aliases", "control.comparison", "control.comparison_store", "control.shadow",
              "control.response_store",
              "control.streams"},
    "replica": {"replica", "adapters.slots"},
    "gateway": {"control.gateway"},
    "batch": {"batch", "control.tenant_purge"},
    "api": {"api", "client"},
    "policy": {"autoscaling.policy", "autoscaling.simulator"},
    "serve": {"deployments", "autoscaling", "autoscaling.serve_policy", "autoscaling.signals"},
    "top": {"cli", "serveconfig", "batch.cli", "tinymodel", "tinyfamilies", "admin_cli"},
}  # fmt: skip
ALLOWED = {
    "data": {"data"},
    "base": {"base"},
    "protocol": {"base", "protocol"},
    "engine": {"base", "engine"},
    "queue": {"base", "protocol", "queue"},
    "replica": {"base", "protocol", "engine", "queue", "replica"},
    "gateway": {"base", "protocol", "queue", "gateway"},
    "batch": {"base", "protocol", "engine", "queue", "replica", "gateway", "batch"},
    "api": {"base", "protocol", "queue", "gateway", "batch", "api"},
    "policy": {"policy", "data"},
    "serve": {"base", "protocol", "engine", "queue", "replica", "gateway", "batch", "api", "policy", "serve"},
    "top": set(GROUPS),
}
for _g, _allowed in ALLOWED.items():  # every layer may use the plain data
    _allowed.add("data")


def module_name(package: str, path: Path) -> str:
    parts = (package, *path.relative_to(ROOTS[package]).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group_of(module: str) -> str:
    pkg, _, rel = module.partition(".")
    key = rel if pkg == "ossfleet" else module
    best, found = -1, ""
    for g, names in GROUPS.items():
        for n in names:
            if (key == n or key.startswith(n + ".")) and len(n) > best:
                best, found = len(n), g
    if not found:
        raise AssertionError(f"module {module} belongs to no layer: add it to GROUPS")
    return found


def source_of(module: str) -> Path | None:
    pkg, _, rel = module.partition(".")
    if pkg not in ROOTS:
        return None
    base = ROOTS[pkg].joinpath(*rel.split(".")) if rel else ROOTS[pkg]
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.exists():
            return p
    return None


def imports(path: Path) -> set[str]:
    """The modules of the three packages a file imports, anywhere in it (functions and TYPE_CHECKING too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            for a in node.names:  # `from ossfleet.protocol import events` names a module
                sub = f"{node.module}.{a.name}"
                out.add(sub if source_of(sub) is not None and source_of(sub) != source_of(node.module) else node.module)
    return {m for m in out if m not in PACKAGES}


MODULES = {module_name(pkg, p): p for pkg, root in ROOTS.items() for p in sorted(root.rglob("*.py"))
           if "_pb2" not in p.name}  # fmt: skip
GRAPH = {m: imports(p) for m, p in MODULES.items()}


def test_base_modules_import_only_the_ones_before_them():
    rank = {("ossfleet." + n).rstrip("."): i for i, n in enumerate(BASE_ORDER)}
    assert {m for m in MODULES if group_of(m) == "base"} <= set(rank), "a base module is missing from BASE_ORDER"
    for m, i in rank.items():
        later = sorted(d for d in GRAPH.get(m, ()) if group_of(d) == "base" and rank[d] >= i)
        assert not later, f"{m} imports {later}, which come at or after it in BASE_ORDER"


def test_typing_only_and_function_level_imports_count(tmp_path):
    # A module that imports another only for a type, or only inside a function, still depends on it.
    path = tmp_path / "probe.py"
    typing_only = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ossfleet.control.gateway import GatewayCore\n"
    )
    path.write_text(typing_only + "def f():\n    from deployments.app import deploy\n")
    assert imports(path) == {"ossfleet.control.gateway", "deployments.app"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_its_own_layer_or_below(module):
    g = group_of(module)
    wrong = sorted(i for i in GRAPH[module] if group_of(i) not in ALLOWED[g])
    assert not wrong, f"{module} ({g}) imports {wrong}, which sit above it"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a path that returns to its start), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*path[path.index(n) :], n]
            if n in graph and not state.get(n):
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if not state.get(m):
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle_even_through_function_level_imports():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function():
    # A function-level import that closes a loop is still a cycle.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
