"""The package's shape, checked from its source: common/ is a small layered library (no import
cycle, nothing imported upward or hidden in a function), the library speaks in values (no
option name in its messages), and every function reads in one sitting."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMON = ROOT / "common"
PROGRAMS = sorted(ROOT.glob("task*.py")) + [ROOT / "report.py", ROOT / "predict.py"] + sorted(
    (ROOT / "bench").glob("*.py")) + sorted((ROOT / "task1").glob("*.py"))
MAX_MODULES = 16  # 15 layers (config.py: a run's record; cli.py: the command line;
#                   precision.py: the precision choice; api.py: the package from Python, above
#                   run.py) and __init__.py
MAX_FUNCTION_LINES = 60
COMMAND_LINE_LAYER = "cli"  # the one module of common/ that speaks the options' names
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")


def modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(COMMON.glob("*.py"))}


def imported_modules(node: ast.ImportFrom, module: str) -> list[str]:
    """The common/ modules one `from ... import ...` statement of common/<module> names."""
    if node.level == 1 and node.module:            # from .files import x
        return [node.module.split(".")[0]]
    if node.level == 1:                            # from . import results
        return [a.name for a in node.names]
    if node.module and node.module.split(".")[0] == "common":
        rest = node.module.split(".")[1:]
        return rest[:1] if rest else [a.name for a in node.names]
    return []


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, tree in modules().items():
        graph[name] = {m for node in tree.body if isinstance(node, ast.ImportFrom)
                       for m in imported_modules(node, name)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of nodes, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle_and_passes_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_common_has_at_most_14_modules():
    assert len(list(COMMON.glob("*.py"))) <= MAX_MODULES


def test_common_has_no_import_cycle():
    graph = import_graph()
    assert set().union(*graph.values()) <= set(graph), "an import of a module that is not there"
    assert find_cycle(graph) is None


# the one deferred import of the package's own, and why: cli's option types check a typed value
# against the record (common.config, which loads torch through common.files) when one is
# typed, so that a script's --help answers without torch
DEFERRED = {"cli": {"config"}}


def test_nothing_in_common_imports_a_program_or_hides_an_import_of_common_in_a_function():
    programs = {p.stem for p in PROGRAMS} | {"bench", "task1", "report"}
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & programs, name
            if isinstance(node, ast.ImportFrom):
                assert node.level or (node.module or "").split(".")[0] not in programs, name
        for node in tree.body:  # deferred imports: only of third-party modules
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom):
                        hidden = set(imported_modules(inner, name)) - DEFERRED.get(name, set())
                        assert not hidden, f"{name}: {ast.dump(inner)}"


def docstrings(tree: ast.Module) -> set[int]:
    """ids of the string constants that are docstrings (module, class, function)."""
    out = set()
    for node in [tree] + [n for n in ast.walk(tree)
                          if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]:
        body = getattr(node, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            out.add(id(body[0].value))
    return out


def test_no_module_below_the_command_line_puts_an_option_name_in_a_message():
    found = []
    for name, tree in modules().items():
        if name == COMMAND_LINE_LAYER:
            continue
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in skip and OPTION.search(node.value):
                found.append(f"common/{name}.py:{node.lineno}: {node.value!r}")
    assert found == []


def functions(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("path", sorted(COMMON.glob("*.py")) + PROGRAMS,
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_function_is_under_60_lines(path):
    long = [f"{name} (line {line}): {length} lines" for name, line, length in functions(path)
            if length >= MAX_FUNCTION_LINES]
    assert long == []


def test_every_test_the_docs_cite_exists():
    """docs/resilience.md names the test behind each case: a renamed test must not leave a
    dangling name there."""
    defined = {node.name for path in (ROOT / "tests").glob("test_*.py")
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.FunctionDef)}
    cited = set(re.findall(r"`(test_\w+)`", (ROOT / "docs" / "resilience.md").read_text()))
    assert cited and cited <= defined, cited - defined
