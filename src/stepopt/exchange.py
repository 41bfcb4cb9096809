"""The step's MILP for external solvers, and their answers back as decisions.

``export_milp`` writes the integer program (primary objective) as LP or MPS together with a map
from each token variable's name to its request id; ``read_solution`` turns a solver's solution
file (CBC's ``solu``, HiGHS's ``--solution_file``, or any ``name value`` lines as Gurobi and
SCIP write them) back into a :class:`~stepopt.model.Decision`, which ``evaluate()`` then judges
like any other. A variable a solution file leaves out is 0, as solvers omit zeros.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stepopt.errors import InputError
from stepopt.io import problem_hash, read_text
from stepopt.model import Decision, StepProblem

MAP_FORMAT = "stepopt-milp-map"
EXPORT_FORMATS = ("lp", "mps")


def default_map_path(output: Path) -> Path:
    """``step.lp`` -> ``step.map.json``."""
    return output.with_name(f"{output.stem}.map.json")


def export_milp(problem: StepProblem, output: Path, fmt: str, map_path: Path) -> dict[str, Any]:
    """Write the MILP and its variable map; returns a summary (sizes, objective, files)."""
    from stepopt.formulation import build
    from stepopt.formulation.milp import encode

    if fmt not in EXPORT_FORMATS:
        raise InputError("--format", f"must be one of {', '.join(EXPORT_FORMATS)}", fmt)
    form = build(problem)
    enc = encode(form)
    enc.prob.setObjective(enc.deviation if form.objective == "target" else -enc.weighted)
    if fmt == "lp":
        enc.prob.writeLP(str(output))
    else:
        enc.prob.writeMPS(str(output))
    objective = "|L - T| in ns" if form.objective == "target" else "minus weighted tokens"
    doc = {
        "format": MAP_FORMAT,
        "problem_hash": problem_hash(problem),
        "objective": f"minimize {objective}",
        # A decode's token count is its 0/1 selector; a prefill's is an integer variable.
        "tokens": {enc.c[it.index].name: it.id for it in form.items},
    }
    map_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return {
        "output": str(output),
        "map": str(map_path),
        "format": fmt,
        "variables": enc.prob.numVariables(),
        "constraints": enc.prob.numConstraints(),
        "objective": doc["objective"],
    }


def load_map(path: Path, problem: StepProblem) -> dict[str, str]:
    """Variable name -> request id, checked against ``problem``."""
    text = read_text(path, "--map")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError("--map", f"{path}: invalid JSON: {exc.msg}", show_value=False) from None
    if not isinstance(doc, dict) or doc.get("format") != MAP_FORMAT:
        raise InputError("--map", "not a map written by `stepopt export`", str(path))
    if doc.get("problem_hash") != problem_hash(problem):
        raise InputError("--map", "written for another problem (its hash differs)", str(path))
    tokens = doc.get("tokens")
    if not isinstance(tokens, dict) or set(tokens.values()) != set(problem.by_id):
        raise InputError("--map", "its variables do not match the problem's requests", str(path))
    return tokens


def read_solution(path: Path, var_map: dict[str, str]) -> Decision:
    """The decision in a solver's solution file (see the module docstring for formats)."""
    lines = read_text(path, "solution").splitlines()
    head = next((line.strip() for line in lines if line.strip()), "")
    if "infeasible" in head.lower() or not var_map.keys() & set(" ".join(lines).split()):
        raise InputError("solution", "holds no solution of the exported problem", head[:60])
    values: dict[str, float] = {}
    for lineno, line in enumerate(lines, start=1):
        if line.lstrip().lower().startswith("# rows"):
            break  # HiGHS lists constraint activities after the columns
        parts = line.replace("**", " ").split()
        for k, word in enumerate(parts):
            if word in var_map:
                values[word] = _number(parts[k + 1 :], f"solution line {lineno}", line)
                break
    tokens: dict[str, int] = {}
    for name, rid in var_map.items():
        v = values.get(name, 0.0)
        n = round(v)
        if abs(v - n) > 1e-3:
            raise InputError("solution", f"{name} (request {rid!r}) is not an integer", v)
        if n:
            tokens[rid] = n
    return Decision(tokens=tokens)


def _number(words: list[str], field: str, line: str) -> float:
    for w in words:
        try:
            return float(w)
        except ValueError:
            continue
    raise InputError(field, "no value after the variable name", line.strip())
