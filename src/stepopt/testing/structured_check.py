"""Checks that a solver which may decline to prove (``structured``) never claims a wrong proof.

:func:`check_against` compares its result with a reference that proved the optimum (CP-SAT or
brute force): an OPTIMAL answer must match the reference under ``evaluate.rank_key`` (every
objective level, to the nanosecond), an INFEASIBLE answer must be right, a FEASIBLE answer must
be a valid decision no better than the optimum and its bound must hold.
"""

from __future__ import annotations

from stepopt.evaluate import evaluate, rank_key
from stepopt.model import NS_PER_MS, StepProblem
from stepopt.solvers.base import SolveResult, SolveStatus

PARTIAL = ("structured",)  # solvers with a non-proven status by design


def check_against(problem: StepProblem, res: SolveResult, ref: SolveResult) -> None:
    """Raise AssertionError when ``res`` claims more than ``ref`` (a proven result) allows."""
    assert res.status != SolveStatus.ERROR, res.message
    if ref.status not in (SolveStatus.OPTIMAL, SolveStatus.INFEASIBLE):
        return  # nothing proven to compare with
    if res.decision is not None:
        ev = evaluate(problem, res.decision)
        assert ev.hard_feasible, ev.violations
        assert res.params.get("model_latency_ns", ev.latency_ns) == ev.latency_ns
    if ref.status == SolveStatus.INFEASIBLE:
        assert res.status != SolveStatus.OPTIMAL, "proof of a decision where none exists"
        assert res.decision is None or not evaluate(problem, res.decision).feasible
        return
    assert res.status != SolveStatus.INFEASIBLE, "infeasible claimed, the reference solved it"
    best = rank_key(problem, ref.evaluation)
    if res.status == SolveStatus.OPTIMAL:
        assert rank_key(problem, res.evaluation) == best, (res.to_dict(), ref.to_dict())
    elif res.evaluation is not None and res.evaluation.feasible:
        assert rank_key(problem, res.evaluation) >= best
    if res.status == SolveStatus.FEASIBLE and res.bound is not None:
        opt = ref.evaluation
        if problem.objective == "target":
            assert round(res.bound * NS_PER_MS) <= opt.deviation_ns, (res.bound, opt.deviation_ns)
        else:
            assert res.bound >= opt.weighted_tokens, (res.bound, opt.weighted_tokens)
