"""Shortcuts shared by the formulation-based solvers."""

from __future__ import annotations

from typing import Any

from stepopt.errors import InputError
from stepopt.evaluate import evaluate
from stepopt.formulation.spec import Formulation
from stepopt.model import Decision, StepProblem
from stepopt.solvers.base import SolveResult, SolveStatus, finish

TOLERANCE_PARAM = "target_tolerance_ns"


def pop_tolerance(params: dict[str, Any]) -> int:
    """Remove and check ``target_tolerance_ns`` (an integer >= 0, default 0) from ``params``.

    With ``T > 0`` the primary phase of the ``target`` objective stops as soon as its incumbent
    |L - T| is proven within ``T`` ns of the optimum (``goodput`` ignores it)."""
    value = params.pop(TOLERANCE_PARAM, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(TOLERANCE_PARAM, "must be an integer number of ns >= 0", value)
    return value


def tolerance_message(tolerance_ns: int) -> str:
    return (
        f"stopped within the tolerance ({tolerance_ns} ns): |L - T| not proven optimal exactly "
        "(proven_within_ns says how close)"
    )


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
