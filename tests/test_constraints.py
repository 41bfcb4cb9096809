"""Each constraint family on tiny cases: a decision that breaks only that family's rule is
rejected by its check and by both encoders (the decision fixed in the model makes it
infeasible); a compliant neighbour passes all three."""

from __future__ import annotations

import pulp
import pytest
from ortools.sat.python import cp_model

from stepopt.constraints import (
    FAMILIES,
    Rule,
    budget,
    concurrency,
    kv,
    latency_cap,
    phase,
    priority,
)
from stepopt.evaluate import evaluate
from stepopt.formulation import build
from stepopt.formulation.cpsat import encode as cpsat_encode
from stepopt.formulation.milp import encode as milp_encode
from stepopt.model import Decision
from stepopt.solvers.pulp_backends import _Highs
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill, waiting

LAT = linear_latency(per_token_ns=10_000, base_ns=1_000_000)

# family, problem, a decision breaking only the family's rule, a compliant one
CASES = {
    "budget": (
        budget,
        make_problem([prefill("p", 400, 0)], latency=LAT, max_num_scheduled_tokens=100),
        {"p": 150},
        {"p": 100},
    ),
    "concurrency": (
        concurrency,
        make_problem(
            [decode("d")],
            [waiting("w1", 64), waiting("w2", 64, arrival_time=1.0)],
            latency=LAT,
            max_num_running_reqs=2,
        ),
        {"d": 1, "w1": 64, "w2": 64},
        {"d": 1, "w1": 64},
    ),
    "phase": (
        phase,
        make_problem([prefill("p", 400, 0)], latency=LAT, min_prefill_chunk=64),
        {"p": 10},
        {"p": 64},
    ),
    "priority": (
        priority,
        make_problem([decode("d"), prefill("p", 400, 0)], latency=LAT),
        {"p": 64},
        {"d": 1, "p": 64},
    ),
    "kv": (
        kv,
        make_problem([prefill("p", 400, 0)], latency=LAT, block_size=16, num_free_blocks=4),
        {"p": 65},
        {"p": 64},
    ),
    "latency_cap": (
        latency_cap,
        make_problem([prefill("p", 400, 0)], latency=LAT, target_ms=2.0, objective="goodput"),
        {"p": 101},
        {"p": 100},
    ),
}


def test_every_family_is_covered_and_rules_are_disjoint():
    assert {f.__name__.rsplit(".", 1)[1] for f in FAMILIES} == set(CASES)
    rules = [r for f in FAMILIES for r in f.RULES]
    assert len(rules) == len(set(rules))
    # The rest are the decision's own well-formedness, judged by the evaluator directly.
    assert set(Rule) - set(rules) == {Rule.UNKNOWN_REQUEST, Rule.NEGATIVE_TOKENS, Rule.PREEMPTION}


def _cpsat_accepts(problem, tokens) -> bool:
    enc = cpsat_encode(build(problem))
    for it, c in zip(enc.form.items, enc.c, strict=True):
        enc.model.add(c == tokens.get(it.id, 0))
    s = cp_model.CpSolver()
    s.parameters.num_workers = 1
    return s.solve(enc.model) in (cp_model.OPTIMAL, cp_model.FEASIBLE)


def _milp_accepts(problem, tokens) -> bool:
    enc = milp_encode(build(problem))
    for it, c in zip(enc.form.items, enc.c, strict=True):
        enc.prob += c == tokens.get(it.id, 0)
    enc.prob += pulp.lpSum([])  # a pure feasibility problem
    # stepopt's own HiGHS set-up: a plain pulp.HiGHS solve of an infeasible model leaves the
    # next HiGHS solve in this process 'Not Solved' (seen with HiGHS 1.16 / PuLP 3).
    enc.prob.solve(_Highs().make(None, None))
    return pulp.LpStatus[enc.prob.status] == "Optimal"


@pytest.mark.parametrize("name", sorted(CASES))
def test_family_rejects_its_breach_and_accepts_the_neighbour(name):
    family, problem, bad, good = CASES[name]
    broken = evaluate(problem, Decision.of(bad))
    assert {v.rule for v in broken.violations} <= set(family.RULES) and broken.violations
    assert evaluate(problem, Decision.of(good)).feasible
    assert not _cpsat_accepts(problem, bad) and _cpsat_accepts(problem, good)
    assert not _milp_accepts(problem, bad) and _milp_accepts(problem, good)


def test_priority_family_reports_each_strict_rule():
    p = make_problem(
        [prefill("r", 400, 0)],
        [waiting("w1", 64), waiting("w2", 64, arrival_time=1.0)],
        latency=LAT,
    )
    ev = evaluate(p, Decision.of({"r": 64, "w2": 64}))
    assert ev.rules() == {Rule.RUNNING_FIRST, Rule.WAITING_ORDER}
    weighted = p.with_changes(priority_mode="weighted")
    assert evaluate(weighted, Decision.of({"r": 64, "w2": 64})).feasible


def test_every_rule_has_a_hint_for_test_reports():
    from stepopt.testing.assertions import HINTS

    assert set(HINTS) == set(Rule)
    assert all(set(f.HINTS) == set(f.RULES) for f in FAMILIES)
