"""The layering docs/architecture.md describes, checked on the source: no import cycles
between modules, and the lower layers do not import the higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import stepopt

SRC = Path(stepopt.__file__).resolve().parent


def _graph() -> nx.DiGraph:
    """Module -> imported stepopt module, for every import (lazy ones and TYPE_CHECKING ones
    too); ``from package import module`` counts as importing the module."""
    files = {
        ".".join(("stepopt", *f.relative_to(SRC).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): f
        for f in SRC.rglob("*.py")
    }
    g = nx.DiGraph()
    for mod, f in files.items():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                    for a in node.names
                ]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                # A package importing its own submodules (registration) is not a cycle.
                if t.startswith("stepopt") and t in files and not t.startswith(mod + "."):
                    g.add_edge(mod, t)
    return g


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(_graph(), length_bound=4))
    # The simulator's policy parser hands `horizon[:K]` to the horizon package, which builds on
    # the simulator: a plug-in edge, lazy (inside `_horizon_policy`), so no import-time cycle.
    cycles = [
        c
        for c in cycles
        if not (
            "stepopt.simulate.policies" in c
            and "stepopt.horizon.policy" in c
            and all(m.startswith(("stepopt.horizon.", "stepopt.simulate.")) for m in c)
        )
    ]
    assert cycles == []


def test_lower_layers_do_not_import_higher_ones():
    g = _graph()
    lower = ("stepopt.model", "stepopt.latency", "stepopt.constraints", "stepopt.evaluate")
    higher = (
        "stepopt.solvers",
        "stepopt.heuristics",
        "stepopt.simulate",
        "stepopt.studies",
        "stepopt.cli",
        "stepopt.scenarios",
        "stepopt.integrations",
    )
    bad = [(u, v) for u, v in g.edges if u.startswith(lower) and v.startswith(higher)]
    assert bad == []
    assert not [v for v in g.successors("stepopt.demo") if v.startswith("stepopt.cli")]
    assert not [v for v in g.successors("stepopt.simulate.engine") if "heuristics" in v]


# The house rule: no module over ~400 lines, no function body over ~60 lines, unless a
# ``# long: <reason>`` comment says why (at column 0 for a module, inside the function for a
# function). The body is counted from its first statement after the docstring: a typer
# command's options are its signature, not its logic.
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG = "# long:"


def _sources() -> list[tuple[str, list[str], ast.Module]]:
    out = []
    for f in sorted(SRC.rglob("*.py")):
        rel = f.relative_to(SRC).as_posix()
        text = f.read_text(encoding="utf-8")
        out.append((rel, text.splitlines(), ast.parse(text)))
    return out


def _has_reason(lines: list[str], start: int, end: int, top_level: bool) -> bool:
    for line in lines[start:end]:
        text = line if top_level else line.lstrip()
        if text.startswith(LONG) and text[len(LONG) :].strip():
            return True
    return False


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """(first line, line count) of a function's body without its docstring."""
    body = node.body
    first = body[0]
    is_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    if is_doc and isinstance(first.value.value, str) and len(body) > 1:
        first = body[1]
    return first.lineno, node.end_lineno - first.lineno + 1  # type: ignore[operator]


def house_rule_breaches() -> list[str]:
    bad = []
    for rel, lines, tree in _sources():
        if len(lines) > MAX_MODULE_LINES and not _has_reason(lines, 0, len(lines), True):
            bad.append(f"{rel}: {len(lines)} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                _, n = _body_lines(node)
                if n > MAX_FUNCTION_LINES and not _has_reason(
                    lines,
                    node.lineno - 1,
                    node.end_lineno,
                    False,  # type: ignore[arg-type]
                ):
                    bad.append(f"{rel}:{node.lineno} {node.name}(): {n} lines")
    return bad


def test_house_rule_module_and_function_size():
    assert house_rule_breaches() == []


def test_house_rule_check_sees_a_long_function_and_its_reason():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    src = f'def f():\n    """Doc."""\n{body}\n'
    tree = ast.parse(src)
    node = tree.body[0]
    assert _body_lines(node) == (3, MAX_FUNCTION_LINES + 1)  # type: ignore[arg-type]
    lines = src.splitlines()
    assert not _has_reason(lines, 0, len(lines), False)
    reasoned = src.replace('"""Doc."""', '"""Doc."""\n    # long: one table, row by row')
    assert _has_reason(reasoned.splitlines(), 0, len(reasoned.splitlines()), False)
    assert not _has_reason(["    # long:   "], 0, 1, False)  # a marker needs a reason
