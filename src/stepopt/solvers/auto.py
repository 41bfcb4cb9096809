"""The default exact backend ``auto``: the structured solver first, CP-SAT when it did not prove.

``structured`` answers strict-priority steps in milliseconds and proves most of them; where it
does not (weighted priority, bounds that do not close) CP-SAT runs, warm-started with the
structured solver's best decision, on the time left. The result's ``params["proved_by"]``
names the backend whose answer is returned (``structured`` or ``cpsat``) and
``params["backends"]`` the ones that ran. "Proven" means OPTIMAL, or for ``target`` with
``target_tolerance_ns=N > 0`` FEASIBLE with ``proven_within_ns <= N``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from stepopt.evaluate import rank_key
from stepopt.model import StepProblem
from stepopt.solvers.base import SolveResult, SolveStatus, get_solver, register_solver
from stepopt.solvers.common import TOLERANCE_PARAM, pop_tolerance

NAME = "auto"
_MIN_CPSAT_S = 0.005  # less than CP-SAT needs to build and start on any engine-sized step


def proven(res: SolveResult, tolerance_ns: int = 0) -> bool:
    if res.status in (SolveStatus.OPTIMAL, SolveStatus.INFEASIBLE):
        return True
    return (
        tolerance_ns > 0
        and res.status == SolveStatus.FEASIBLE
        and res.proven_within_ns is not None
        and res.proven_within_ns <= tolerance_ns
    )


class AutoSolver:
    name = NAME

    def solve(
        self, problem: StepProblem, time_limit: float | None = None, **params: Any
    ) -> SolveResult:
        started = time.perf_counter()
        tolerance = pop_tolerance(params)
        first = get_solver("structured").solve(
            problem, time_limit=time_limit, **{TOLERANCE_PARAM: tolerance}
        )
        if proven(first, tolerance) or first.status == SolveStatus.ERROR:
            return _as_auto(first, started, time_limit, tolerance, ["structured"])
        left = None if time_limit is None else time_limit - (time.perf_counter() - started)
        if left is not None and left < _MIN_CPSAT_S:
            # The limit is the caller's promise (the vLLM plug-in's per-step budget): CP-SAT
            # cannot build a model in what is left, so the structured answer stands, unproven.
            msg = f"{first.message} (time limit reached before CP-SAT could run)"
            return _as_auto(
                replace(first, message=msg), started, time_limit, tolerance, ["structured"]
            )
        extra = dict(params)
        if first.decision is not None:
            extra["start"] = first.decision
        second = get_solver("cpsat").solve(
            problem, time_limit=left, **{TOLERANCE_PARAM: tolerance}, **extra
        )
        best = second
        if (
            first.evaluation is not None
            and second.status not in (SolveStatus.OPTIMAL, SolveStatus.INFEASIBLE)
            and (
                second.evaluation is None
                or rank_key(problem, first.evaluation) < rank_key(problem, second.evaluation)
            )
        ):
            best = first  # CP-SAT ran out of time with a worse incumbent
        msg = best.message if best is second else f"{best.message} (CP-SAT: {second.message})"
        best = replace(best, message=msg, bound=_tighter(problem, first, second, best))
        return _as_auto(best, started, time_limit, tolerance, ["structured", "cpsat"])


def _tighter(problem: StepProblem, a: SolveResult, b: SolveResult, best: SolveResult):
    """The stronger of the two proven primary bounds (both are valid)."""
    bounds = [r.bound for r in (a, b) if r.bound is not None and r.status != SolveStatus.ERROR]
    if best.status == SolveStatus.OPTIMAL or not bounds:
        return best.bound
    return max(bounds) if problem.objective == "target" else min(bounds)


def _as_auto(
    res: SolveResult, started: float, time_limit: float | None, tolerance: int, ran: list[str]
) -> SolveResult:
    by = res.solver
    pw = _within(res) if res.status != SolveStatus.OPTIMAL else res.proven_within_ns
    params = {
        **res.params,
        "proved_by": by if proven(replace(res, proven_within_ns=pw), tolerance) else None,
        "answered_by": by,
        "backends": ran,
    }
    return replace(
        res,
        solver=NAME,
        params=params,
        wall_ms=(time.perf_counter() - started) * 1000.0,
        time_limit_s=time_limit,
        proven_within_ns=pw,
    )


def _within(res: SolveResult) -> int | None:
    ev = res.evaluation
    if ev is None or res.bound is None or ev.objective_name != "target":
        return res.proven_within_ns
    return max(ev.deviation_ns - round(res.bound * 1_000_000), 0)


def _params() -> frozenset[str]:
    from stepopt.solvers.base import solver_info

    return solver_info("cpsat").accepted() | {TOLERANCE_PARAM}


@register_solver(
    NAME,
    params=_params,
    params_doc="target_tolerance_ns, or a cpsat parameter (used when CP-SAT runs)",
)
def _factory() -> AutoSolver:
    return AutoSolver()
