"""Shortcuts shared by the formulation-based solvers."""

from __future__ import annotations

from typing import Any

from stepopt.diagnose import infeasibility_reason
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
            message=infeasibility_reason(problem)
            or "running requests alone exceed max_num_running_reqs",
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


def cross_checked(
    problem: StepProblem, res: SolveResult, started: float, time_limit: float | None
) -> SolveResult:
    """A backend's verdict checked against the greedy decision before it is reported.

    INFEASIBLE stands only when the structure confirms it (even the empty step breaks a rule);
    otherwise a feasible decision (greedy, or the empty step) proves the verdict wrong and is
    returned as FEASIBLE with a message saying so. A time-limited answer (no solution, or a
    FEASIBLE decision ranked below the greedy one) is replaced by the greedy decision, so a
    limit never yields less than the heuristic."""
    from stepopt.evaluate import rank_key
    from stepopt.solvers.hint import greedy_hint

    if res.status == SolveStatus.ERROR:
        return res
    if res.status == SolveStatus.OPTIMAL:
        return _proof_checked(problem, res, started, time_limit)
    reason = infeasibility_reason(problem)
    if res.status == SolveStatus.INFEASIBLE and reason:
        return res if res.message else _with(res, message=reason)
    # (on the admissible requests: the same decision, without walking a long strict queue)
    fallback = greedy_hint(admissible(problem)) if not reason else None
    if fallback is None and not reason:
        fallback = Decision()  # the empty step breaks no rule
    if fallback is None:
        return res
    ev = evaluate(problem, fallback)
    kept = res.status == SolveStatus.FEASIBLE and res.evaluation is not None
    if kept and rank_key(problem, res.evaluation) <= rank_key(problem, ev):
        return res
    why = {
        SolveStatus.INFEASIBLE: f"{res.solver} answered INFEASIBLE, but a feasible decision "
        "exists (the verdict was wrong): the greedy decision",
        SolveStatus.NO_SOLUTION: "no solution within the time limit: the greedy decision",
        SolveStatus.FEASIBLE: "the greedy decision ranks above the time-limited incumbent",
    }[res.status]
    bound = res.bound if res.status == SolveStatus.FEASIBLE else None
    return _replaced(problem, res, fallback, started, time_limit, why, bound)


def _replaced(
    problem: StepProblem,
    res: SolveResult,
    decision: Decision,
    started: float,
    time_limit: float | None,
    message: str,
    bound: float | None = None,
) -> SolveResult:
    """A FEASIBLE result carrying ``decision`` in place of the backend's answer ``res``."""
    params = {**res.params, "from_hint": True, "backend_status": str(res.status)}
    params.pop("model_latency_ns", None)  # the backend's model value is not this decision's
    return finish(
        problem,
        res.solver,
        SolveStatus.FEASIBLE,
        decision,
        started,
        bound=bound,
        time_limit=time_limit,
        params=params,
        message=message,
    )


def _proof_checked(
    problem: StepProblem, res: SolveResult, started: float, time_limit: float | None
) -> SolveResult:
    """An OPTIMAL claim checked against two decisions known without search, the greedy one
    and the empty step: a MILP backend's tolerances have let it prove a worse decision optimal
    (HiGHS without presolve; CBC's preprocessing), and one that either beats is no optimum."""
    from stepopt.evaluate import rank_key
    from stepopt.solvers.hint import greedy_hint

    if res.evaluation is None:
        return res
    claimed = rank_key(problem, res.evaluation)
    best, best_key = None, claimed
    for other in (greedy_hint(admissible(problem)), Decision()):
        if other is None:
            continue
        ev = evaluate(problem, other)
        key = rank_key(problem, ev)
        if ev.feasible and key < best_key:
            best, best_key = other, key
    if best is None:
        return res
    why = (
        f"{res.solver} claimed OPTIMAL, but a better decision exists (the proof was wrong): "
        "the better of the greedy decision and the empty step"
    )
    return _replaced(problem, res, best, started, time_limit, why)


def _with(res: SolveResult, **changes: Any) -> SolveResult:
    from dataclasses import replace

    return replace(res, **changes)


def admissible(problem: StepProblem) -> StepProblem:
    """``problem`` without the waiting requests that can never be admitted (strict mode).

    Strict admission takes a prefix of the waiting order, each admitted request at least its
    smallest chunk: no more than the free slots, and no further than the prefix whose smallest
    chunks fit the token budget. The rest cannot get a token in any feasible decision, so the
    model need not hold them (a 100,000-request queue becomes a few hundred). Decisions on the
    pruned problem are decisions on ``problem`` with the same evaluation."""
    if problem.priority_mode != "strict" or not problem.waiting:
        return problem
    slots = problem.config.max_num_running_reqs - len(problem.running)
    budget = problem.config.max_num_scheduled_tokens
    keep: set[str] = set()
    used = 0
    for r in problem.waiting_order:
        used += max(problem.lo(r), 1)
        if len(keep) >= slots or used > budget:
            break
        keep.add(r.id)
    if len(keep) == len(problem.waiting):
        return problem
    return problem.with_changes(waiting=tuple(r for r in problem.waiting if r.id in keep))
