"""The layout docs/design.md promises: `contract/` imports none of the components, no
component imports another's internals, nothing outside the tests imports the tests, and
no import circle."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from tests.support import REPO_ROOT

COMPONENTS = ("training", "serving", "rollout", "predictionlog")
PACKAGES = ("contract", *COMPONENTS, "demo", "loadtest", "benchmarks", "scripts", "tests")

DEPRECATED_ALIAS = "serving.rollout"
"""`python -m serving.rollout`, the rollout's former name (one release, with a warning):
the rollout's package, filed under the predictor's folder, not part of the predictor."""

# Which project packages each may import. The components: the contract only.
ALLOWED: dict[str, set[str]] = {
    "contract": set(),
    "training": {"contract"},
    "serving": {"contract"},
    "rollout": {"contract"},
    "predictionlog": {"contract"},
    DEPRECATED_ALIAS: {"rollout"},
    # The tools around them, which run the components as processes or as libraries.
    "demo": {"contract", "loadtest"},
    "loadtest": {"training"},  # the dataset rows its requests send (training/data.py)
    "benchmarks": {"contract", "serving", "demo"},
    "scripts": {"contract"},
}


def package_of(module: str) -> str:
    if module == DEPRECATED_ALIAS or module.startswith(DEPRECATED_ALIAS + "."):
        return DEPRECATED_ALIAS
    return module.split(".", maxsplit=1)[0]


def modules() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, ast.parse(path.read_text(), str(path))


def imported(node: ast.AST, package: str) -> set[str]:
    """Every project module `node` imports (also inside functions), absolute names."""
    names: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Import):
            names.update(alias.name for alias in child.names)
        elif isinstance(child, ast.ImportFrom):
            if child.level:  # a relative import stays inside its own package
                names.add(package)
            elif child.module:
                names.add(child.module)
                names.update(f"{child.module}.{alias.name}" for alias in child.names)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def module_scope_imports(tree: ast.Module, package: str) -> set[str]:
    """What importing the module imports at once: top-level statements, not function
    bodies (lazy imports) and not `if TYPE_CHECKING:` blocks."""
    found: set[str] = set()
    for statement in tree.body:
        if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
            continue
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(statement, ast.ClassDef):
            continue  # class bodies here hold no imports; methods are lazy
        found |= imported(statement, package)
    return found


def test_each_package_imports_only_what_the_design_allows() -> None:
    wrong = []
    for module, tree in modules():
        package = package_of(module)
        if package == "tests":
            continue
        for target in sorted(imported(tree, package)):
            other = package_of(target)
            if other != package and other not in ALLOWED[package]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports across the design's boundaries:\n" + "\n".join(wrong)


def test_the_checker_sees_an_import_hidden_in_a_function() -> None:
    tree = ast.parse("def load():\n    from training.data import load_dataset\n")
    assert "training.data" in imported(tree, "serving")


def test_no_module_imports_itself_back_at_import_time() -> None:
    graph: dict[str, set[str]] = {}
    known = {module for module, _ in modules()}
    for module, tree in modules():
        targets = module_scope_imports(tree, package_of(module))
        # `from pkg import name` names a module when `pkg.name` is one, else pkg itself.
        graph[module] = {t for t in targets if t in known and t != module}
    cycles = _cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_circle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for module, tree in modules():
        package = package_of(module)
        targets = {package_of(t) for t in imported(tree, package)} - {package}
        graph.setdefault(package, set()).update(targets)
    assert not _cycles(graph)


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path for each circle found by a depth-first search (empty: a DAG)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found
