"""Status honesty, time limits, the brute-force oracle against the evaluator itself."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pulp
import pytest
from hypothesis import given, settings

from stepopt.errors import InputError, UnknownNameError
from stepopt.evaluate import evaluate, rank_key
from stepopt.model import Decision
from stepopt.solvers import SolveStatus, get_solver, solve
from stepopt.solvers.base import finish, solver_info, solver_names
from stepopt.solvers.milp import _status
from stepopt.testing.factories import decode, decodes, make_problem, prefill, waitings
from stepopt.testing.strategies import problems


def naive_optimum(problem):
    """Every decision, judged by the evaluator: the spec, with no cleverness at all."""
    choices = [[0, *range(problem.lo(r), problem.hi(r) + 1)] for r in problem.requests]
    best = None
    for combo in itertools.product(*choices):
        ev = evaluate(
            problem, Decision.of(zip([r.id for r in problem.requests], combo, strict=True))
        )
        if ev.feasible and (best is None or rank_key(problem, ev) < best):
            best = rank_key(problem, ev)
    return best


@settings(max_examples=150)
@given(problems(max_requests=4, max_prompt=12))
def test_brute_force_finds_the_evaluators_optimum(problem):
    res = solve(problem, "brute")
    best = naive_optimum(problem)
    if best is None:
        assert res.status == SolveStatus.INFEASIBLE
    else:
        assert res.status == SolveStatus.OPTIMAL
        assert rank_key(problem, res.evaluation) == best


def test_brute_force_refuses_large_problems_naming_the_size():
    p = make_problem(decodes(13))
    with pytest.raises(InputError, match="13 requests"):
        solve(p, "brute")


def test_unknown_solver_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="brute, cbc, cpsat, highs"):
        get_solver("gurobi")


def test_pulp_time_limited_optimal_is_not_proven():
    # PuLP says "Optimal" in ``status`` for a time-limited incumbent; only sol_status tells.
    fake = SimpleNamespace(status=pulp.LpStatusOptimal, sol_status=pulp.LpSolutionIntegerFeasible)
    assert _status(fake) == SolveStatus.FEASIBLE
    fake = SimpleNamespace(status=pulp.LpStatusOptimal, sol_status=pulp.LpSolutionOptimal)
    assert _status(fake) == SolveStatus.OPTIMAL
    fake = SimpleNamespace(status=pulp.LpStatusNotSolved, sol_status=pulp.LpSolutionNoSolutionFound)
    assert _status(fake) == SolveStatus.NO_SOLUTION
    fake = SimpleNamespace(status=pulp.LpStatusInfeasible, sol_status=pulp.LpSolutionInfeasible)
    assert _status(fake) == SolveStatus.INFEASIBLE


def test_a_decision_the_evaluator_rejects_is_an_error_not_a_solution():
    p = make_problem([decode("d0")], max_num_scheduled_tokens=1)
    bad = Decision.of({"d0": 2})
    res = finish(p, "x", SolveStatus.OPTIMAL, bad, 0.0, params={"model_latency_ns": 0})
    assert res.status == SolveStatus.ERROR
    assert "evaluator rejects" in res.message


def test_a_latency_mismatch_is_never_optimal():
    p = make_problem([decode("d0")])
    res = finish(
        p, "x", SolveStatus.OPTIMAL, Decision.of({"d0": 1}), 0.0, params={"model_latency_ns": 1}
    )
    assert res.status == SolveStatus.FEASIBLE
    assert "!= evaluator latency" in res.message
    assert res.objective == res.evaluation.objective  # still judged by the evaluator


def _bigger_problem():
    running = [decode(f"d{k}", 300 + 37 * k) for k in range(60)]
    running += [prefill(f"p{k}", prompt=900 + 113 * k, computed=64 * k) for k in range(4)]
    return make_problem(
        running, waitings([700 + 91 * k for k in range(20)]), target_ms=61.3, min_prefill_chunk=32
    )


def _medium_problem():
    running = [decode(f"d{k}", 300 + 37 * k) for k in range(20)]
    running += [prefill("p0", prompt=900, computed=256)]
    return make_problem(running, waitings([700, 300, 1200]), target_ms=48.5, min_prefill_chunk=32)


@pytest.mark.parametrize("solver", ["cpsat", "cbc", "highs"])
def test_time_limit_is_reported_and_status_is_consistent(solver):
    res = solve(_bigger_problem(), solver, time_limit=0.5)
    assert res.time_limit_s == 0.5
    assert res.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE, SolveStatus.NO_SOLUTION)
    if res.status == SolveStatus.NO_SOLUTION:
        assert res.decision is None
        return
    assert res.evaluation.feasible
    if res.status == SolveStatus.OPTIMAL:
        assert res.gap == 0.0
        assert res.bound == pytest.approx(res.objective)
    else:
        assert res.message  # says which level is not proven


@pytest.mark.parametrize("lex", ["weighted", "two_phase"])
def test_cpsat_lexicographic_modes_agree(lex):
    p = _medium_problem()
    ref = solve(p, "brute") if len(p.requests) <= 12 else solve(p, "highs")
    res = solve(p, "cpsat", lexicographic=lex)
    assert res.status == ref.status == SolveStatus.OPTIMAL
    assert rank_key(p, res.evaluation) == rank_key(p, ref.evaluation)
    assert res.params["lexicographic"] == lex


def test_cpsat_is_deterministic_by_default():
    p = _medium_problem()
    a, b = solve(p, "cpsat"), solve(p, "cpsat")
    assert a.decision == b.decision
    assert a.params["num_workers"] == 1


def test_cpsat_rejects_an_unknown_lexicographic_mode():
    with pytest.raises(InputError, match="lexicographic"):
        solve(make_problem([decode("d0")]), "cpsat", lexicographic="nope")


@settings(max_examples=80)
@given(problems(max_requests=5))
def test_cpsat_piece_encodings_agree(problem):
    # The enforced and the disaggregated (hull) piece encodings define the same program.
    a = solve(problem, "cpsat", hull=True)
    b = solve(problem, "cpsat", hull=False)
    assert a.status == b.status
    if a.evaluation is not None:
        assert rank_key(problem, a.evaluation) == rank_key(problem, b.evaluation)
        assert a.params["model_latency_ns"] == a.evaluation.latency_ns


def test_cpsat_without_time_to_search_returns_the_checked_greedy_start():
    res = solve(_bigger_problem(), "cpsat", time_limit=1e-3)
    assert res.status == SolveStatus.FEASIBLE
    assert res.evaluation.feasible
    assert res.bound is None or res.params.get("from_hint") is None


def test_gap_is_relative_and_bounded():
    p = make_problem([decode("d0")], objective="goodput", target_ms=1000.0)
    ev_dec = Decision()  # 0 tokens against a bound of 1: the whole range is open
    res = finish(p, "x", SolveStatus.FEASIBLE, ev_dec, 0.0, bound=1.0)
    assert res.objective == 0.0
    assert res.gap == 1.0


@pytest.mark.parametrize("solver", solver_names())
def test_unknown_solver_parameters_are_one_line_input_errors(solver):
    with pytest.raises(InputError, match=f"^{solver} parameters: unknown foo; valid: ") as info:
        solve(make_problem([decode("d0")]), solver, foo=1)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("solver", solver_names())
def test_every_solver_accepts_what_its_registry_entry_declares(solver):
    """The tolerance is accepted everywhere (a study passes one to every solver); each
    declared parameter reaches a solver that takes it without complaint."""
    info = solver_info(solver)
    assert info.available()
    assert "target_tolerance_ns" in info.accepted()
    res = solve(make_problem([decode("d0")]), solver, target_tolerance_ns=0)
    assert res.status == SolveStatus.OPTIMAL


def test_cpsat_accepts_sat_parameters_and_rejects_misspelt_ones():
    p = make_problem([decode("d0")])
    assert solve(p, "cpsat", max_number_of_conflicts=1000).status == SolveStatus.OPTIMAL
    with pytest.raises(InputError, match="max_number_of_conflict;"):
        solve(p, "cpsat", max_number_of_conflict=1000)
