"""Assertions for a team's own heuristic tests: feasibility, and the gap to the exact optimum.

Every failure message is something to act on: the rule broken (with what the rule asks for),
the problem (saved to a file and inlined as problem-file JSON), the heuristic's and the optimal
decision, the gap, and the ``stepopt`` commands that reproduce it.
"""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from stepopt.evaluate import Evaluation, evaluate
from stepopt.gap import relative_gap
from stepopt.io import problem_hash
from stepopt.model import Decision, StepProblem
from stepopt.solvers.base import SolveResult, SolveStatus
from stepopt.testing.describe import (
    HINTS,
    HeuristicLike,
    SavedCase,
    describe_decision,
    describe_problem,
    describe_violations,
    heuristic_label,
    import_path,
    problem_json,
    save_case,
)
from stepopt.testing.draws import draw_examples, problem_list
from stepopt.testing.gap_report import Case, GapReport, quantile_of
from stepopt.testing.oracle import OracleCache, default_oracle

__all__ = [  # the helpers of describe, draws and gap_report: re-exported
    "HINTS",
    "Case",
    "GapReport",
    "assert_feasible",
    "assert_gap_within",
    "draw_examples",
    "gap",
    "import_path",
    "quantile_of",
    "save_case",
]


# ---- gap ----------------------------------------------------------------------------------
def gap(problem: StepProblem, heuristic: Evaluation, optimal: Evaluation) -> float:
    """FORMULATION.md's relative gap of a (feasible) heuristic decision to the optimum.

    ``target``: ``(|L_h - T| - |L_* - T|) / T``; ``goodput``: ``(obj_* - obj_h) / obj_*`` with
    weighted tokens as ``obj`` (0 when the optimum schedules nothing).
    """
    if problem.objective == "target":
        g = relative_gap("target", heuristic.deviation_ns, optimal.deviation_ns, problem.target_ns)
    else:
        g = relative_gap("goodput", heuristic.weighted_tokens, optimal.weighted_tokens, 0.0)
    return 0.0 if g is None else g


def gap_formula(problem: StepProblem, h: Evaluation, opt: Evaluation) -> str:
    g = gap(problem, h, opt)
    if problem.objective == "target":
        t = problem.target_ns / 1e6
        return (
            f"(|L_h - T| - |L_* - T|) / T = ({h.deviation_ns / 1e6:.4f} - "
            f"{opt.deviation_ns / 1e6:.4f}) / {t:.4f} ms = {g:.4g}"
        )
    return (
        f"(obj_* - obj_h) / obj_* = ({opt.weighted_tokens} - {h.weighted_tokens}) / "
        f"{opt.weighted_tokens} weighted tokens = {g:.4g}"
    )


# ---- assert_feasible ------------------------------------------------------------------------
def _as_decision(value: Any, who: str) -> Decision:
    if isinstance(value, Decision):
        return value
    raise AssertionError(
        f"{who} must return a stepopt.model.Decision (e.g. Decision.of({{'r0': 1}})), "
        f"got {type(value).__name__}: {value!r:.200}"
    )


def assert_feasible(
    problem: StepProblem,
    decision: Decision | Mapping[str, int],
    *,
    save_dir: str | Path | None = None,
) -> Evaluation:
    """Fail unless the evaluator finds ``decision`` feasible for ``problem``; returns the
    evaluation. The message lists each broken rule and what it asks, the decision, and the
    problem (saved to a file) with the ``stepopt evaluate`` command that shows the same."""
    if isinstance(decision, Mapping):
        decision = Decision.of(decision)
    decision = _as_decision(decision, "the decision")
    ev = evaluate(problem, decision)
    if ev.feasible:
        return ev
    case = save_case(problem, {"decision": decision}, save_dir)
    rules = ", ".join(sorted({str(v.rule) for v in ev.violations}))
    lines = [
        f"infeasible decision: {len(ev.violations)} violation(s) ({rules})",
        *describe_violations(ev),
        f"decision: {describe_decision(decision, ev)}",
        f"problem: {describe_problem(problem)}",
        "reproduce:",
        f"  stepopt evaluate {case.problem} {case.decisions['decision']}",
        f"problem file JSON: {problem_json(problem)}",
    ]
    raise AssertionError("\n".join(lines))


# ---- assert_gap_within ----------------------------------------------------------------------
def _commands(
    case: SavedCase, solver: str, time_limit: float | None, name: str | None, label: str
) -> list[str]:
    tl = "" if time_limit is None else f" --time-limit {time_limit:g}"
    lines = ["reproduce:"]
    if label in case.decisions:
        lines.append(f"  stepopt evaluate {case.problem} {case.decisions[label]}")
    if "optimal" in case.decisions:
        lines.append(f"  stepopt evaluate {case.problem} {case.decisions['optimal']}")
    lines.append(f"  stepopt solve {case.problem} --solver {solver}{tl}")
    if name is not None:
        lines.append(f"  {_pythonpath(name)}stepopt heuristic {case.problem} --name {name}")
    return lines


def _pythonpath(name: str) -> str:
    """``PYTHONPATH=DIR `` when ``module:function``'s module lives outside site-packages (a
    test directory, an uninstalled example), so the command works from any directory."""
    if ":" not in name:
        return ""
    top = name.partition(":")[0].split(".")[0]
    file = getattr(sys.modules.get(top), "__file__", None)
    if not file:
        return ""
    path = Path(file).resolve()
    root = path.parent.parent if path.name == "__init__.py" else path.parent
    if "site-packages" in root.parts or "dist-packages" in root.parts:
        return ""
    return f"PYTHONPATH={shlex.quote(str(root))} "


def _smallest(cases: list[Case]) -> Case:
    return min(cases, key=lambda c: (len(c.problem.requests), problem_hash(c.problem)))


def assert_gap_within(
    heuristic: HeuristicLike,
    problems: Any,
    *,
    max_gap: float,
    quantile: float = 1.0,
    solver: str = "cpsat",
    time_limit: float | None = 10.0,
    solver_params: Mapping[str, Any] | None = None,
    oracle: OracleCache | None = None,
    max_examples: int = 25,
    save_dir: str | Path | None = None,
) -> GapReport:
    """Fail when ``heuristic`` is infeasible on any problem, or when the ``quantile`` of its
    gap to the proven optimum exceeds ``max_gap`` (FORMULATION.md's relative gap; ``quantile``
    1.0 = every problem).

    ``heuristic``: a callable ``(StepProblem) -> Decision``, a registered name or
    ``module:function``. ``problems``: an iterable of problems or a hypothesis strategy (then
    ``max_examples`` problems are drawn, the same ones every run; call this from a plain test,
    not inside ``@given``). Only ``OPTIMAL`` solver results count as the oracle; problems the
    solver does not prove within ``time_limit`` are left out and reported. Optima come from
    ``oracle`` (default: the pytest plugin's on-disk cache, else memory). Failing problems are
    saved under ``save_dir`` (default: ``failures/`` next to the oracle cache).
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    label = heuristic_label(heuristic)
    name = import_path(heuristic)
    if isinstance(heuristic, str):
        from stepopt.heuristics.base import get_heuristic

        fn = get_heuristic(heuristic)
    else:
        fn = heuristic
    oracle = oracle if oracle is not None else default_oracle()
    params = dict(solver_params or {})
    items = problem_list(problems, max_examples)
    if not items:
        raise AssertionError("assert_gap_within: no problems given")

    def solve(p: StepProblem) -> SolveResult:
        return oracle.solve(p, solver, time_limit, **params)

    def commands(saved: SavedCase) -> list[str]:
        return _commands(saved, solver, time_limit, name, label)

    cases = [_decide(fn, p, label, save_dir, commands) for p in items]
    no_feasible = _check_feasible(cases, label, solve, save_dir, commands)
    report = _score(cases, no_feasible, solve, label, max_gap, quantile)
    if not report.scored:
        raise AssertionError(
            f"heuristic {label!r}: no problem could be scored; {report.summary()}. "
            f"Raise time_limit (now {time_limit}) or draw smaller problems."
        )
    if report.quantile_gap <= max_gap:
        return report
    raise AssertionError(_gap_failure(report, save_dir, commands))


def _decide(
    fn: Callable[[StepProblem], Any],
    p: StepProblem,
    label: str,
    save_dir: str | Path | None,
    commands: Callable[[SavedCase], list[str]],
) -> Case:
    """The heuristic's decision on ``p``, judged (a heuristic that raises fails the test)."""
    try:
        dec = _as_decision(fn(p), f"heuristic {label!r}")
    except AssertionError:
        raise
    except Exception as exc:
        saved = save_case(p, {}, save_dir)
        raise AssertionError(
            f"heuristic {label!r} raised {type(exc).__name__}: {exc}\n"
            f"problem: {describe_problem(p)}\n"
            + "\n".join(commands(saved))
            + f"\nproblem file JSON: {problem_json(p)}"
        ) from exc
    return Case(p, dec, evaluate(p, dec))


def _check_feasible(
    cases: list[Case],
    label: str,
    solve: Callable[[StepProblem], SolveResult],
    save_dir: str | Path | None,
    commands: Callable[[SavedCase], list[str]],
) -> list[Case]:
    """An infeasible decision fails outright, unless only the goodput latency cap is broken
    and the solver proves that no decision meets it: returns those cases."""
    bad: list[Case] = []
    no_feasible: list[Case] = []
    for c in cases:
        if c.evaluation.feasible:
            continue
        if c.evaluation.hard_feasible:  # only the latency cap
            c.oracle = solve(c.problem)
            if c.oracle.status == SolveStatus.INFEASIBLE:
                no_feasible.append(c)
                continue
        bad.append(c)
    if not bad:
        return no_feasible
    c = _smallest(bad)
    saved = save_case(c.problem, {label: c.decision}, save_dir)
    rules = Counter(str(v.rule) for b in bad for v in b.evaluation.violations)
    lines = [
        f"heuristic {label!r} returned an infeasible decision on {len(bad)} of "
        f"{len(cases)} problems (an infeasible decision fails outright; rules broken: "
        + ", ".join(f"{k} x{v}" for k, v in sorted(rules.items()))
        + ")",
        f"smallest failing problem: {describe_problem(c.problem)}",
        "violations:",
        *describe_violations(c.evaluation),
        f"heuristic decision: {describe_decision(c.decision, c.evaluation)}",
        f"problem file: {saved.problem}",
        *commands(saved),
        f"problem file JSON: {problem_json(c.problem)}",
    ]
    raise AssertionError("\n".join(lines))


def _score(
    cases: list[Case],
    no_feasible: list[Case],
    solve: Callable[[StepProblem], SolveResult],
    label: str,
    max_gap: float,
    quantile: float,
) -> GapReport:
    """Gaps against proven optima (unproven problems are left out and reported)."""
    scored: list[Case] = []
    unproven: list[Case] = []
    skip = {id(c) for c in no_feasible}
    for c in cases:
        if id(c) in skip:
            continue
        res = c.oracle or solve(c.problem)
        c.oracle = res
        if res.status != SolveStatus.OPTIMAL or res.evaluation is None:
            unproven.append(c)
            continue
        c.gap = gap(c.problem, c.evaluation, res.evaluation)
        scored.append(c)
    return GapReport(label, max_gap, quantile, scored, unproven, no_feasible)


def _gap_failure(
    report: GapReport, save_dir: str | Path | None, commands: Callable[[SavedCase], list[str]]
) -> str:
    """The message of a gap over ``max_gap``: the worst problem, both decisions, the gap."""
    label, max_gap, quantile = report.heuristic, report.max_gap, report.quantile
    worst = report.worst
    assert worst is not None and worst.oracle is not None and worst.oracle.evaluation is not None
    opt = worst.oracle
    saved = save_case(worst.problem, {label: worst.decision, "optimal": opt.decision}, save_dir)
    over = sum(1 for g in report.gaps if g > max_gap)
    lines = [
        f"heuristic {label!r}: gap quantile {quantile:g} = {report.quantile_gap:.4g} > max_gap "
        f"{max_gap:g} ({over} of {len(report.scored)} scored problems above max_gap; worst gap "
        f"{worst.gap:.4g})",
        f"worst problem: {describe_problem(worst.problem)}",
        f"heuristic decision: {describe_decision(worst.decision, worst.evaluation)}",
        f"optimal decision ({opt.solver} {opt.status}): "
        f"{describe_decision(opt.decision, opt.evaluation)}",
        f"gap: {gap_formula(worst.problem, worst.evaluation, opt.evaluation)}",
        f"problem file: {saved.problem}",
        *commands(saved),
        f"summary: {report.summary()}",
        f"problem file JSON: {problem_json(worst.problem)}",
    ]
    return "\n".join(lines)
