"""Package boundaries, read from the source: the contracts import only each other, `bench/`
and `reports/` name no method, task or metric, methods never open the store nor keep
module-level caches."""

import ast
import re
from pathlib import Path

import pytest

from bench import registry

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("bench", "methods", "tasks", "reports")
CONTRACTS = {
    "bench.config",
    "bench.contracts",
    "bench.hooks",
    "bench.registry",
    "bench.shared_state",
    "methods.base",
    "tasks.base",
}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported(path: Path) -> set[str]:
    """Project modules `path` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return {m for m in out if m.split(".")[0] in PROJECT}


def sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_a_contract_imports_only_other_contracts(contract):
    path = ROOT / (contract.replace(".", "/") + ".py")
    assert imported(path) <= CONTRACTS, f"{contract} imports {sorted(imported(path) - CONTRACTS)}"


def test_bench_imports_no_method_or_task_module():
    """The registry loads plug-ins by name (importlib), so no import statement is needed."""
    found = {
        str(p.relative_to(ROOT)): m
        for p in sources("bench")
        for m in imported(p)
        if m.split(".")[0] in ("methods", "tasks")
    }
    assert found == {}


def test_methods_never_open_the_store_and_import_no_task_module_but_the_contract():
    bad = {
        str(p.relative_to(ROOT)): m
        for p in sources("methods")
        for m in imported(p)
        if m == "bench.store" or (m.startswith("tasks") and m != "tasks.base")
    }
    assert bad == {}


def _module_state(path: Path) -> list[str]:
    """Private or lower-case module-level names bound to a mutable container: a cache that
    outlives a run (public upper-case tables such as a name -> class map are constants)."""
    mutable = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
    names = []
    for node in ast.parse(path.read_text()).body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        calls_container = isinstance(value, ast.Call) and getattr(value.func, "id", "") in ("dict", "list", "set")
        if isinstance(value, mutable) or calls_container:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [ast.unparse(t) for t in targets]
    return [n for n in names if not n.startswith("__") and (n.startswith("_") or not n.isupper())]


def test_methods_keep_no_module_level_state():
    """State shared between runs lives in `RunContext.shared`, which the runner owns."""
    found = {str(p.relative_to(ROOT)): _module_state(p) for p in sources("methods")}
    assert {k: v for k, v in found.items() if v} == {}


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def test_bench_and_reports_name_no_method_task_or_metric():
    """Names and strings in code (docstrings and comments aside) never mention a registered
    method or task or a task's metric: reports read what they need from the rows."""
    names = set(registry.method_names()) | set(registry.task_names())
    names |= {registry.get_task_class(t).metric_info()["name"].lower() for t in registry.task_names()}
    hits = []
    for path in sources("bench", "reports"):
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                words = re.findall(r"[a-z_]+", node.value.lower())
            elif isinstance(node, ast.Name):
                words = [node.id.lower()]
            elif isinstance(node, ast.Attribute):
                words = [node.attr.lower()]
            else:
                continue
            hits += [f"{path.relative_to(ROOT)}:{node.lineno}: {w}" for w in words if w in names]
    assert hits == []
