"""Imports run one way: api -> batch -> gateway -> queue/router -> protocol and base; the replica side
(worker, generation) over the engine. Read from the source (function-level imports included, typing-only
ones under ``if TYPE_CHECKING:`` left out), so a cycle cannot hide behind a function-local import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "platform"

GROUPS = {
    "base": {"", "errors", "jsonlimits", "harmony", "tasks", "metrics", "catalog", "config", "pricing", "redisdb",
             "tenancy", "tenants", "v1", "lora_format", "storage", "adapters", "keyspace"},
    "protocol": {"structured", "protocol"},
    "engine": {"engine"},
    "queue": {"queue", "router", "streams"},
    "replica": {"generation", "worker", "adapter_slots"},
    "gateway": {"gateway"},
    "batch": {"batch", "tenant_purge"},
    "api": {"adapter_api", "grpc_health", "grpc_server", "openai_api", "responses_api", "grpc_api", "httpio",
            "batch.http", "client", "admin_api"},
    "top": {"cli", "serveconfig", "batch.cli", "tinymodel", "admin_cli"},
}  # fmt: skip
ALLOWED = {
    "base": {"base"},
    "protocol": {"base", "protocol"},
    "engine": {"base", "engine"},
    "queue": {"base", "protocol", "queue"},
    "replica": {"base", "protocol", "engine", "queue", "replica"},
    "gateway": {"base", "protocol", "queue", "gateway"},
    "batch": {"base", "protocol", "engine", "queue", "replica", "gateway", "batch"},
    "api": {"base", "protocol", "queue", "gateway", "batch", "api"},
    "top": set(GROUPS),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group_of(module: str) -> str:
    rel = module.removeprefix("ossfleet").lstrip(".")
    best, found = -1, ""
    for g, names in GROUPS.items():
        for n in names:
            if (rel == n or rel.startswith(n + ".")) and len(n) > best:
                best, found = len(n), g
    if not found:
        raise AssertionError(f"module {module} belongs to no layer: add it to GROUPS")
    return found


def runtime_imports(path: Path) -> set[str]:
    """The ossfleet modules a file imports at run time (anywhere in it, except under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ossfleet")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ossfleet"):
            for a in node.names:  # `from ossfleet.protocol import events` names a module
                sub = f"{node.module}.{a.name}"
                out.add(sub if (ROOT / (sub.replace(".", "/") + ".py")).exists() else node.module)
    return {m for m in out if m not in ("ossfleet",)}


MODULES = {module_name(p): p for p in sorted((ROOT / "ossfleet").rglob("*.py")) if "_pb2" not in p.name}
GRAPH = {m: runtime_imports(p) for m, p in MODULES.items()}


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
