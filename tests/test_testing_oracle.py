"""The oracle cache: a second run does not solve again; the key covers every setting; only
proven results are kept; the pytest plugin's fixture and option."""

from __future__ import annotations

import json
import re

import pytest

import stepopt
import stepopt.solvers.base as solvers_base
from stepopt.model import Decision
from stepopt.solvers.base import SolveStatus
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill, waiting
from stepopt.testing.oracle import OracleCache

pytest_plugins = ["pytester"]


def _problem(target_ms: float = 20.0):
    return make_problem(
        [decode("d0", 100), prefill("p0", 300, 100)],
        [waiting("w0", 200)],
        latency=linear_latency(per_token_ns=50_000, base_ns=5_000_000),
        target_ms=target_ms,
        max_num_scheduled_tokens=256,
        min_prefill_chunk=16,
    )


@pytest.fixture
def solver_calls(monkeypatch):
    """Counts the real solver invocations (the cache must not reach them)."""
    calls: list[str] = []
    real = solvers_base.solve

    def counting(problem, solver="cpsat", time_limit=None, **params):
        calls.append(solver)
        return real(problem, solver, time_limit=time_limit, **params)

    monkeypatch.setattr(solvers_base, "solve", counting)
    return calls


def test_second_run_does_not_solve_again(tmp_path, solver_calls):
    problems = [_problem(t) for t in (9.0, 12.0, 20.0)]
    first = OracleCache(tmp_path)
    results = [first.solve(p, "cpsat", time_limit=10) for p in problems]
    assert len(solver_calls) == 3 and first.solver_calls == 3
    second = OracleCache(tmp_path)  # a new process, the same directory
    again = [second.solve(p, "cpsat", time_limit=10) for p in problems]
    assert len(solver_calls) == 3 and second.solver_calls == 0 and second.hits == 3
    for a, b in zip(results, again, strict=True):
        assert b.status == a.status == SolveStatus.OPTIMAL
        assert b.decision == a.decision
        assert b.evaluation == a.evaluation  # re-judged by the evaluator on load
    assert "oracle cache" in again[0].message


def test_key_covers_solver_settings_and_version(tmp_path, monkeypatch, solver_calls):
    cache = OracleCache(tmp_path)
    p = _problem()
    cache.solve(p, "cpsat", time_limit=10)
    cache.solve(p, "cpsat", time_limit=10)
    assert len(solver_calls) == 1
    cache.solve(p, "cpsat", time_limit=5)
    cache.solve(p, "brute", time_limit=10)
    cache.solve(p, "brute", time_limit=10, max_requests=10)
    cache.solve(_problem(19.0), "cpsat", time_limit=10)
    assert len(solver_calls) == 5
    monkeypatch.setattr(stepopt, "__version__", "999.0")
    OracleCache(tmp_path).solve(p, "cpsat", time_limit=10)
    assert len(solver_calls) == 6
    keys = {
        cache.key(p, "cpsat", 10),
        cache.key(p, "cpsat", 5),
        cache.key(p, "highs", 10),
        cache.key(p, "cpsat", 10, num_workers=1),
    }
    assert len(keys) == 4


def test_unproven_results_are_not_kept(tmp_path, monkeypatch, solver_calls):
    real = solvers_base.solve

    def time_limited(problem, solver="cpsat", time_limit=None, **params):
        res = real(problem, solver, time_limit=time_limit, **params)
        return solvers_base.SolveResult(
            SolveStatus.FEASIBLE, solver, res.decision, res.evaluation, bound=0.0
        )

    monkeypatch.setattr(solvers_base, "solve", time_limited)
    cache = OracleCache(tmp_path)
    cache.solve(_problem(), "cpsat", time_limit=1)
    cache.solve(_problem(), "cpsat", time_limit=1)
    assert cache.solver_calls == 2
    assert not list(tmp_path.rglob("*.json"))


def test_bad_cache_files_are_solved_again(tmp_path, solver_calls):
    p = _problem()
    cache = OracleCache(tmp_path)
    good = cache.solve(p, "cpsat", time_limit=10)
    (path,) = tmp_path.rglob("*.json")
    doc = json.loads(path.read_text())
    assert doc["problem_hash"] and doc["solver"] == "cpsat" and doc["time_limit"] == 10
    # A decision the evaluator rejects (tampered with) is never served.
    path.write_text(json.dumps({**doc, "tokens": {"d0": 5}}))
    assert OracleCache(tmp_path).solve(p, "cpsat", time_limit=10).decision == good.decision
    path.write_text("{torn")
    res = OracleCache(tmp_path).solve(p, "cpsat", time_limit=10)
    assert res.decision == good.decision and len(solver_calls) == 3


def test_infeasible_problems_are_cached_too(tmp_path, solver_calls):
    p = _problem(1.0).with_changes(objective="goodput")
    assert OracleCache(tmp_path).solve(p, "cpsat").status == SolveStatus.INFEASIBLE
    res = OracleCache(tmp_path).solve(p, "cpsat")
    assert res.status == SolveStatus.INFEASIBLE and res.decision is None
    assert len(solver_calls) == 1


def test_memory_only_without_a_directory(solver_calls):
    cache = OracleCache()
    p = _problem()
    assert cache.solve(p).decision == cache.solve(p).decision != Decision()
    assert len(solver_calls) == 1 and cache.hits == 1


# ---- the pytest plugin ----------------------------------------------------------------------
SUITE = """
from stepopt.testing import assert_gap_within
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill, waiting
from stepopt.testing.oracle import default_oracle

def problems():
    return [
        make_problem(
            [decode("d0", 100), prefill("p0", 300, 100)], [waiting("w0", 200)],
            latency=linear_latency(per_token_ns=50_000, base_ns=5_000_000),
            target_ms=t, max_num_scheduled_tokens=256, min_prefill_chunk=16,
        )
        for t in (9.0, 12.0, 20.0)
    ]

def test_fixture(stepopt_oracle):
    for p in problems():
        stepopt_oracle.solve(p, "cpsat", time_limit=10)
    print("FIXTURE", stepopt_oracle.directory, stepopt_oracle.solver_calls)

def test_default(stepopt_oracle):
    heuristic = lambda p: stepopt_oracle.solve(p, "cpsat", time_limit=10).decision
    assert_gap_within(heuristic, problems(), max_gap=0.0, time_limit=10)
    print("DEFAULT", default_oracle().directory, default_oracle().solver_calls)
"""


def _calls(result, tag):
    m = re.search(rf"{tag} (\S+) (\d+)", result.stdout.str())
    assert m, result.stdout.str()
    return m[1], int(m[2])


def test_plugin_option_and_fixture(pytester, tmp_path):
    pytester.makepyfile(test_suite=SUITE)
    cache = tmp_path / "oracle"
    first = pytester.runpytest("-s", "--stepopt-oracle-cache", str(cache))
    first.assert_outcomes(passed=2)
    assert _calls(first, "FIXTURE") == (str(cache), 3)
    assert _calls(first, "DEFAULT") == (str(cache), 0)  # the fixture already solved them
    second = pytester.runpytest("-s", "--stepopt-oracle-cache", str(cache))
    second.assert_outcomes(passed=2)
    assert _calls(second, "FIXTURE") == (str(cache), 0)
    assert "stepopt oracle cache: " + str(cache) in second.stdout.str()


def test_plugin_default_dir_is_under_pytest_cache(pytester):
    pytester.makepyfile(test_suite=SUITE)
    pytester.runpytest("-s").assert_outcomes(passed=2)
    result = pytester.runpytest("-s")
    directory, calls = _calls(result, "FIXTURE")
    assert calls == 0
    assert directory.endswith("stepopt-oracle") and ".pytest_cache" in directory
    # Without pytest's cache the oracle keeps optima in memory only.
    result = pytester.runpytest("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert _calls(result, "FIXTURE") == ("None", 3)
