"""``target_tolerance_ns``: stopping the target objective once |L - T| is proven close enough.

A tolerance-stopped result is FEASIBLE (never OPTIMAL unless its bound meets its objective),
carries the bound it proved and ``proven_within_ns``; its |L - T| is within the tolerance of the
brute-force optimum.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from ortools.sat.python import cp_model

from stepopt.cli import main
from stepopt.errors import InputError
from stepopt.formulation import build
from stepopt.formulation.cpsat import encode
from stepopt.io import save_problem
from stepopt.model import NS_PER_MS
from stepopt.solvers import SolveStatus, solve
from stepopt.solvers.base import finish
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill
from stepopt.testing.strategies import problems

EXACT = ("cpsat", "highs", "cbc")


def hand_built():
    """1 us per token, T 400 ns above a reachable latency: the optimum is |L - T| = 400 ns,
    while the LP relaxation reaches T exactly (bound 0)."""
    return make_problem(
        [decode("d0"), prefill("p0", prompt=1000, computed=0)],
        latency=linear_latency(per_token_ns=1000),
        target_ms=5.5004,
    )


def check_honest(res) -> None:
    """Status, bound and proven_within_ns tell the same story."""
    dev = res.evaluation.deviation_ns
    if res.status == SolveStatus.OPTIMAL:
        assert res.proven_within_ns == 0
        assert round(res.bound * NS_PER_MS) == dev
    else:
        assert res.status == SolveStatus.FEASIBLE
        assert res.bound is not None
        assert res.proven_within_ns == dev - round(res.bound * NS_PER_MS)
    assert res.to_dict()["proven_within_ns"] == res.proven_within_ns


def test_cpsat_gap_limit_says_optimal_but_we_do_not():
    # CP-SAT itself reports OPTIMAL when it stops on absolute_gap_limit with bound < objective.
    enc = encode(build(hand_built()))
    enc.model.minimize(enc.deviation)
    s = cp_model.CpSolver()
    s.parameters.num_workers = 1
    s.parameters.absolute_gap_limit = 1000
    assert s.solve(enc.model) == cp_model.OPTIMAL
    assert s.best_objective_bound < s.objective_value
    res = solve(hand_built(), "cpsat", target_tolerance_ns=1000)
    assert res.status == SolveStatus.FEASIBLE
    assert 0 < res.proven_within_ns <= 1000
    check_honest(res)


@pytest.mark.parametrize("solver", EXACT)
def test_hand_built_tolerance_stop(solver):
    p = hand_built()
    exact = solve(p, solver)
    assert exact.status == SolveStatus.OPTIMAL and exact.evaluation.deviation_ns == 400
    assert exact.proven_within_ns == 0
    tol = solve(p, solver, target_tolerance_ns=1000)
    check_honest(tol)
    assert 400 <= tol.evaluation.deviation_ns <= 1400
    assert tol.status == SolveStatus.FEASIBLE  # the bound (0) never met 400
    assert tol.params["target_tolerance_ns"] == 1000


def test_cpsat_weighted_objective_is_honest_too():
    exact = solve(hand_built(), "cpsat", lexicographic="weighted")
    assert exact.status == SolveStatus.OPTIMAL and exact.evaluation.deviation_ns == 400
    res = solve(hand_built(), "cpsat", lexicographic="weighted", target_tolerance_ns=1000)
    check_honest(res)
    assert res.status == SolveStatus.FEASIBLE and 400 <= res.evaluation.deviation_ns <= 1400


def test_brute_ignores_the_tolerance_and_stays_exact():
    res = solve(hand_built(), "brute", target_tolerance_ns=1000)
    assert res.status == SolveStatus.OPTIMAL and res.proven_within_ns == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
@pytest.mark.parametrize("solver", EXACT)
def test_bad_tolerance_is_an_input_error(solver, bad):
    with pytest.raises(InputError, match="target_tolerance_ns"):
        solve(hand_built(), solver, target_tolerance_ns=bad)


def test_goodput_ignores_the_tolerance():
    p = hand_built().with_changes(objective="goodput")
    for solver in EXACT:
        res = solve(p, solver, target_tolerance_ns=10_000)
        assert res.status == SolveStatus.OPTIMAL and res.proven_within_ns == 0


def test_proven_within_from_the_bound():
    p = hand_built()
    dec = solve(p, "brute").decision  # |L - T| = 400 ns
    t0 = time.perf_counter()
    assert finish(p, "x", SolveStatus.FEASIBLE, dec, t0).proven_within_ns is None  # no bound
    assert finish(p, "x", SolveStatus.FEASIBLE, dec, t0, bound=0.0001).proven_within_ns == 300
    assert finish(p, "x", SolveStatus.OPTIMAL, dec, t0).proven_within_ns == 0
    goodput = p.with_changes(objective="goodput")
    assert finish(goodput, "x", SolveStatus.FEASIBLE, dec, t0, bound=900.0).proven_within_ns is None


@pytest.mark.parametrize("tolerance", [1_000, 50_000])
def test_within_tolerance_of_brute_force_on_generated_problems(tolerance):
    """Engine-scale latencies (a shipped preset) on brute-force-sized queues."""
    stopped: list[str] = []

    @settings(
        max_examples=40,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(problems(max_requests=7, objective="target", preset="demo"))
    def run(problem):
        ref = solve(problem, "brute")
        for name in EXACT:
            res = solve(problem, name, target_tolerance_ns=tolerance)
            assert res.status == ref.status or (
                ref.status == SolveStatus.OPTIMAL and res.status == SolveStatus.FEASIBLE
            ), (name, res.status, ref.status, res.message)
            if ref.status != SolveStatus.OPTIMAL:
                continue
            check_honest(res)
            best = ref.evaluation.deviation_ns
            dev = res.evaluation.deviation_ns
            assert 0 <= dev - best <= tolerance, (name, dev, best)
            assert dev - best <= res.proven_within_ns <= tolerance, name
            assert round(res.bound * NS_PER_MS) <= best, name  # the bound is a valid bound
            if res.status == SolveStatus.OPTIMAL:
                assert res.tiebreak == ref.tiebreak and dev == best, name
            else:
                stopped.append(name)

    run()
    assert stopped, "no problem exercised a tolerance stop"
    if tolerance >= 50_000:  # common enough then that every solver must show one
        assert set(stopped) == set(EXACT), stopped


def test_cli_tolerance_flag(tmp_path, capsys):
    path = tmp_path / "p.json"
    save_problem(hand_built(), path)
    cpsat = ["--solver", "cpsat"]  # its tolerance stop; the default (auto) proves this one
    assert main(["solve", str(path), *cpsat, "--tolerance-ns", "1000", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "FEASIBLE" and 0 < doc["proven_within_ns"] <= 1000
    assert main(["solve", str(path), *cpsat]) == 0
    assert "proven within" in capsys.readouterr().out
    assert main(["solve", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["solver"] == "auto" and doc["params"]["proved_by"] == "structured"
    assert main(["solve", str(path), "--tolerance-ns", "-5"]) == 2
