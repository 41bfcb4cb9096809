"""The warm start given to CBC and HiGHS is a point of the MILP: every variable within its
bounds and every constraint satisfied at the greedy decision, with the model's latency equal to
the evaluator's."""

from __future__ import annotations

from hypothesis import given, settings

from stepopt.evaluate import evaluate
from stepopt.formulation import build
from stepopt.formulation.milp import encode
from stepopt.formulation.milp_start import set_start
from stepopt.solvers.hint import greedy_hint
from stepopt.testing.strategies import problems


@settings(max_examples=60, deadline=None)
@given(problems())
def test_greedy_start_satisfies_every_constraint(problem):
    _check_start(problem)


@settings(max_examples=20, deadline=None)
@given(problems(max_requests=12, preset="demo"))
def test_greedy_start_on_engine_scale_curves(problem):
    _check_start(problem)


def _check_start(problem):
    dec = greedy_hint(problem)
    form = build(problem)
    if dec is None or form.free_slots < 0 or not form.items:
        return
    enc = encode(form)
    set_start(enc, dec.scheduled())
    for v in enc.prob.variables():
        assert v.varValue is not None, v.name
        assert v.lowBound is None or v.varValue >= v.lowBound - 1e-9, v.name
        assert v.upBound is None or v.varValue <= v.upBound + 1e-9, v.name
    broken = [n for n, con in enumerate(enc.prob.constraints()) if not con.valid(1e-6)]
    assert not broken, broken[:5]
    ev = evaluate(problem, dec)
    assert round(enc.latency.value()) == ev.latency_ns
    if enc.deviation is not None:
        assert round(enc.deviation.value()) == ev.deviation_ns
