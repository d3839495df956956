"""Imports run one way: no cycles (function-local imports count), service never imports eval,
embeddings never imports service, and only the HTTP layer imports FastAPI."""

import ast
from pathlib import Path

from service.config import PROJECT_ROOT

PACKAGES = ("service", "embeddings", "eval")
HTTP_FRAMEWORKS = ("fastapi", "starlette", "uvicorn")
EDGE_MODULES = ("service.http", "service.serve")  # where the web framework may be imported


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (PROJECT_ROOT / package).rglob("*.py")}


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement anywhere in the file (functions included) refers to."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (a name that is not a module means its package)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_a_cycle_hidden_in_a_function() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_service_never_imports_eval_and_embeddings_never_imports_service() -> None:
    wrong = [
        (module, target)
        for module, targets in import_graph().items()
        for target in targets
        if (module.startswith("service") and target.startswith("eval"))
        or (module.startswith("embeddings") and target.startswith(("service", "eval")))
    ]
    assert wrong == []


def test_only_the_http_layer_imports_the_web_framework() -> None:
    wrong = [
        (name, imported)
        for name, path in project_modules().items()
        if name.startswith("service") and not name.startswith(EDGE_MODULES)
        for imported in imported_names(path)
        if imported.split(".")[0] in HTTP_FRAMEWORKS
    ]
    assert wrong == []
