"""The toolkit's assertions: what passes, and that broken heuristics fail with messages a user
can act on (the rule, the decision, the problem, commands that reproduce it)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from hypothesis import strategies as st

from stepopt.cli import main
from stepopt.evaluate import evaluate
from stepopt.io import load_decision, load_problem, problem_from_dict, problem_hash
from stepopt.model import Decision, StepProblem
from stepopt.solvers.base import SolveResult, SolveStatus, solve
from stepopt.testing import assert_feasible, assert_gap_within, gap, problems
from stepopt.testing.assertions import quantile_of
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill, waiting
from stepopt.testing.oracle import OracleCache


def _problem(**changes) -> StepProblem:
    p = make_problem(
        [decode("d0", 100), decode("d1", 120), prefill("p0", 300, 100)],
        [waiting("w0", 200, arrival_time=0.0), waiting("w1", 50, arrival_time=1.0)],
        latency=linear_latency(per_token_ns=50_000, base_ns=5_000_000),
        target_ms=20.0,
        max_num_scheduled_tokens=256,
        min_prefill_chunk=16,
        block_size=16,
    )
    return p.with_changes(**changes) if changes else p


# ---- deliberately broken heuristics ---------------------------------------------------------
def over_budget(p: StepProblem) -> Decision:
    return Decision.of({r.id: p.hi(r) for r in p.requests})


def wrong_phase(p: StepProblem) -> Decision:
    return Decision.of({r.id: 2 for r in p.running_decodes})


def skips_priority(p: StepProblem) -> Decision:
    """Admits the shortest waiting prompt, jumping the (priority, arrival) queue."""
    tokens = {r.id: p.hi(r) for r in p.running}
    shortest = min(p.waiting, key=lambda r: r.prompt_tokens)
    tokens[shortest.id] = min(p.hi(shortest), 16)
    return Decision.of(tokens)


def starves_decodes(p: StepProblem) -> Decision:
    return Decision.of({r.id: p.lo(r) for r in p.running_prefills})


def empty(p: StepProblem) -> Decision:
    return Decision()


BROKEN = [
    (over_budget, ["budget", "max_num_scheduled_tokens=256", "sum to at most"]),
    (wrong_phase, ["phase", "d0: 2 tokens, decode allows 0 or 1..1", "a decode gets 0 or 1"]),
    (skips_priority, ["priority_waiting_order", "w1 before w0", "prefix of"]),
    (starves_decodes, ["priority_decode_first", "every running decode"]),
]


def _commands(message: str) -> list[list[str]]:
    return [
        shlex.split(m)[1:]
        for m in re.findall(r"^  (?:PYTHONPATH=\S+ )?(stepopt .+)$", message, re.M)
    ]


def _problem_json(message: str) -> StepProblem:
    line = next(x for x in message.splitlines() if x.startswith("problem file JSON: "))
    return problem_from_dict(json.loads(line.removeprefix("problem file JSON: ")))


@pytest.mark.parametrize(("heuristic", "needles"), BROKEN, ids=lambda v: getattr(v, "__name__", ""))
def test_assert_feasible_names_the_rule_and_reproduces(heuristic, needles, tmp_path, capsys):
    p = _problem()
    with pytest.raises(AssertionError) as info:
        assert_feasible(p, heuristic(p), save_dir=tmp_path)
    msg = str(info.value)
    assert msg.startswith("infeasible decision:")
    for needle in needles:
        assert needle in msg
    assert problem_hash(_problem_json(msg)) == problem_hash(p)
    (cmd,) = _commands(msg)
    assert cmd[0] == "evaluate"
    assert load_decision(cmd[2]) == heuristic(p)
    assert main(cmd) == 1  # the CLI reports the same infeasibility
    assert needles[0] in capsys.readouterr().out


@pytest.mark.parametrize(("heuristic", "needles"), BROKEN, ids=lambda v: getattr(v, "__name__", ""))
def test_assert_gap_within_fails_outright_on_infeasible(heuristic, needles, tmp_path):
    oracle = OracleCache()
    with pytest.raises(AssertionError) as info:
        assert_gap_within(
            heuristic,
            [_problem(), _problem(target_latency_ms=12.0)],
            max_gap=1.0,
            oracle=oracle,
            save_dir=tmp_path,
        )
    msg = str(info.value)
    assert f"heuristic {heuristic.__name__!r} returned an infeasible decision on 2 of 2" in msg
    for needle in needles:
        assert needle in msg
    assert oracle.solver_calls == 0  # infeasibility is found before any solve
    # The import path is offered for the heuristic CLI; the evaluate command reproduces.
    assert f"--name {__name__}:{heuristic.__name__}" in msg
    evaluate_cmd = next(c for c in _commands(msg) if c[0] == "evaluate")
    assert main(evaluate_cmd) == 1


def test_feasible_decision_passes_and_returns_the_evaluation():
    p = _problem()
    dec = solve(p, "cpsat", time_limit=10).decision
    ev = assert_feasible(p, dec)
    assert ev == evaluate(p, dec)
    assert assert_feasible(p, dec.scheduled()).feasible  # a plain mapping is accepted


def test_gap_definition():
    p = _problem()
    opt = solve(p, "cpsat", time_limit=10)
    assert opt.status == SolveStatus.OPTIMAL
    h = evaluate(p, Decision.of({"d0": 1, "d1": 1}))
    expected = (h.deviation_ns - opt.evaluation.deviation_ns) / p.target_ns
    assert gap(p, h, opt.evaluation) == pytest.approx(expected)
    assert gap(p, opt.evaluation, opt.evaluation) == 0.0
    g = _problem(objective="goodput")
    opt = solve(g, "cpsat", time_limit=10).evaluation
    h = evaluate(g, Decision.of({"d0": 1, "d1": 1}))
    assert gap(g, h, opt) == pytest.approx((opt.weighted_tokens - 2) / opt.weighted_tokens)
    # Both schedule nothing: no gap.
    none = evaluate(g, Decision())
    assert gap(g, none, none) == 0.0


def test_gap_failure_shows_worst_problem_both_decisions_and_commands(tmp_path, capsys):
    probs = [_problem(), _problem(target_latency_ms=12.0), _problem(target_latency_ms=8.0)]
    with pytest.raises(AssertionError) as info:
        assert_gap_within(empty, probs, max_gap=0.01, save_dir=tmp_path, oracle=OracleCache())
    msg = str(info.value)
    worst = _problem()  # the loosest target: the empty batch is furthest from it
    assert "heuristic 'empty': gap quantile 1 = " in msg
    assert "3 of 3 scored problems above max_gap" in msg
    assert "heuristic decision: {} -> latency 5.0000 ms" in msg
    assert "optimal decision (cpsat OPTIMAL): {" in msg
    ev_h = evaluate(worst, Decision())
    opt = solve(worst, "cpsat", time_limit=10).evaluation
    g = gap(worst, ev_h, opt)
    assert f"gap: (|L_h - T| - |L_* - T|) / T = (15.0000 - {opt.deviation_ns / 1e6:.4f})" in msg
    assert f"worst gap {g:.4g}" in msg
    assert problem_hash(_problem_json(msg)) == problem_hash(worst)
    cmds = _commands(msg)
    assert [c[0] for c in cmds] == ["evaluate", "evaluate", "solve", "heuristic"]
    assert cmds[2][2:] == ["--solver", "cpsat", "--time-limit", "10"]
    assert problem_hash(load_problem(cmds[0][1])) == problem_hash(worst)
    assert load_decision(cmds[1][2]).scheduled() == solve(worst, "cpsat").decision.scheduled()
    assert main(cmds[0]) == 0 and main(cmds[1]) == 0 and main(cmds[2]) == 0
    capsys.readouterr()
    # The heuristic's import path resolves in a fresh process from any directory.
    pythonpath, name = re.search(
        r"PYTHONPATH=(\S+) stepopt heuristic \S+ --name (\S+)", msg
    ).groups()
    assert name == f"{__name__}:empty"
    code = f"from stepopt.heuristics.base import get_heuristic as r; r({name!r})"
    env = {**os.environ, "PYTHONPATH": pythonpath}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True)


def test_quantile_lets_a_share_of_problems_exceed_max_gap():
    probs = [_problem(target_latency_ms=t) for t in (8.0, 9.0, 10.0, 11.0, 12.0)]
    bad = problem_hash(probs[0])

    def optimal_but_one(p):
        return Decision() if problem_hash(p) == bad else solve(p, "cpsat").decision

    oracle = OracleCache()
    report = assert_gap_within(optimal_but_one, probs, max_gap=0.0, quantile=0.8, oracle=oracle)
    assert len(report.scored) == 5 and report.quantile_gap == 0.0
    assert max(report.gaps) > 0
    with pytest.raises(AssertionError, match=r"1 of 5 scored problems above max_gap"):
        assert_gap_within(optimal_but_one, probs, max_gap=0.0, quantile=1.0, oracle=oracle)
    assert oracle.solver_calls == 5  # the second assertion reuses the optima


def test_quantile_is_nearest_rank():
    values = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert quantile_of(values, 0.9) == 0.8
    assert quantile_of(values, 0.95) == 0.9
    assert quantile_of(values, 1.0) == 0.9
    assert quantile_of(values, 0.05) == 0.0


class _Unproven(OracleCache):
    """An oracle whose solver never proves optimality (a time limit hit)."""

    def solve(self, problem, solver="cpsat", time_limit=None, **params):
        res = super().solve(problem, solver, time_limit, **params)
        return SolveResult(SolveStatus.FEASIBLE, solver, res.decision, res.evaluation, bound=0.0)


def test_only_proven_optima_count():
    with pytest.raises(AssertionError, match=r"no problem could be scored.*FEASIBLE 2"):
        assert_gap_within(
            empty, [_problem(), _problem(target_latency_ms=9.0)], max_gap=1.0, oracle=_Unproven()
        )


def test_goodput_cap_nobody_can_meet_is_left_out_not_failed():
    impossible = _problem(objective="goodput", target_latency_ms=1.0)  # below the base latency
    fine = _problem(objective="goodput")

    def decodes_only(p):
        return Decision.of({r.id: 1 for r in p.running_decodes})

    report = assert_gap_within(decodes_only, [impossible, fine], max_gap=1.0, oracle=OracleCache())
    assert [problem_hash(c.problem) for c in report.no_feasible] == [problem_hash(impossible)]
    assert len(report.scored) == 1
    # Over the cap where a feasible decision exists: a violation, not a gap.
    tight = _problem(objective="goodput", target_latency_ms=8.0)

    def too_long(p):
        return Decision.of({"d0": 1, "d1": 1, "p0": 200})

    assert evaluate(tight, too_long(tight)).hard_feasible
    with pytest.raises(AssertionError) as info:
        assert_gap_within(too_long, [tight], max_gap=1.0, oracle=OracleCache())
    msg = str(info.value)
    assert "rules broken: latency_cap x1" in msg
    assert "predicted latency 15.100 ms exceeds the target 8.000 ms" in msg


def test_heuristic_contract_errors_are_clear(tmp_path):
    with pytest.raises(AssertionError, match=r"must return a stepopt.model.Decision.*got dict"):
        assert_gap_within(lambda p: {"d0": 1}, [_problem()], max_gap=1.0)

    def crashes(p):
        raise KeyError("w9")

    with pytest.raises(AssertionError) as info:
        assert_gap_within(crashes, [_problem()], max_gap=1.0, save_dir=tmp_path)
    msg = str(info.value)
    assert "heuristic 'crashes' raised KeyError: 'w9'" in msg
    assert problem_hash(_problem_json(msg)) == problem_hash(_problem())
    assert (tmp_path / f"{problem_hash(_problem())}.problem.json").is_file()


def test_named_heuristic_and_strategy_input():
    strategy = problems(max_requests=3, objective="target", priority_mode="strict", preset="demo")
    a = assert_gap_within("three-stage", strategy, max_gap=1.0, max_examples=5)
    b = assert_gap_within("three-stage", strategy, max_gap=1.0, max_examples=5)
    # The same problems every run (derandomized), and no duplicates.
    ha = [problem_hash(c.problem) for c in a.scored]
    assert ha == [problem_hash(c.problem) for c in b.scored]
    assert len(set(ha)) == len(ha) >= 2
    with pytest.raises(Exception, match="unknown heuristic 'nope'"):
        assert_gap_within("nope", [_problem()], max_gap=1.0)
    with pytest.raises(TypeError, match="StepProblems"):
        assert_gap_within(empty, st.just(1), max_gap=1.0, max_examples=1)
