"""Shortcuts shared by the formulation-based solvers."""

from __future__ import annotations

from stepopt.evaluate import evaluate
from stepopt.formulation.spec import Formulation
from stepopt.model import Decision, StepProblem
from stepopt.solvers.base import SolveResult, SolveStatus, finish


def trivial_result(
    problem: StepProblem, form: Formulation, solver: str, started: float, time_limit: float | None
) -> SolveResult | None:
    """The result without a model when there is nothing to decide: the running queue alone
    exceeds ``max_num_running_reqs`` (no decision is feasible), or there is no request (the
    empty decision is the only one)."""
    if form.free_slots < 0:
        return finish(
            problem,
            solver,
            SolveStatus.INFEASIBLE,
            None,
            started,
            time_limit=time_limit,
            message="running requests alone exceed max_num_running_reqs",
        )
    if not form.items:
        empty = Decision()
        ev = evaluate(problem, empty)
        if not ev.feasible:
            return finish(
                problem,
                solver,
                SolveStatus.INFEASIBLE,
                None,
                started,
                time_limit=time_limit,
                message="the empty step alone exceeds the target latency",
            )
        return finish(
            problem,
            solver,
            SolveStatus.OPTIMAL,
            empty,
            started,
            time_limit=time_limit,
            params={"model_latency_ns": ev.latency_ns},
        )
    return None
