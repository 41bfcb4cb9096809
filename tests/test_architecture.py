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
    # The vLLM plug-in's module and its scheduler class refer to each other (lazily); it is
    # the plug-in's own business (integrations/).
    cycles = [c for c in cycles if not all(m.startswith("stepopt.integrations.vllm") for m in c)]
    # A preset is parsed by latency.serialize, which resolves {"preset": NAME} references by
    # loading the preset: both imports are lazy (inside the functions).
    cycles = [
        c for c in cycles if set(c) != {"stepopt.latency.presets", "stepopt.latency.serialize"}
    ]
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
