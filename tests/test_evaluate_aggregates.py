"""The evaluator's one-pass aggregates agree with their definitions on arbitrary decisions
(unknown ids, zero and negative counts, any key order, preemptions): the latency model's own
breakdown, ``StepProblem.new_blocks``/``weights``, and the phase and priority rules read over
every scheduled entry rather than only the non-trivial ones."""

from hypothesis import given, settings
from hypothesis import strategies as st

from stepopt.constraints import phase, priority
from stepopt.evaluate import _view, evaluate
from stepopt.model import Decision
from stepopt.testing.factories import decode, linear_latency, make_problem, waiting
from stepopt.testing.strategies import problems

LAT = linear_latency(per_token_ns=10_000, base_ns=1_000_000, per_request_ns=0)


@st.composite
def problem_and_decision(draw):
    p = draw(problems(max_requests=8))
    ids = [r.id for r in p.requests] + ["ghost"]
    chosen = draw(st.lists(st.sampled_from(ids), unique=True))  # any order
    tokens = {rid: draw(st.integers(-2, 50)) for rid in chosen}
    running = [r.id for r in p.running] + ["ghost"]
    preempted = tuple(draw(st.lists(st.sampled_from(running), max_size=3)))
    return p, Decision(tokens=tokens, preempted=preempted)


@settings(max_examples=300, deadline=None)
@given(problem_and_decision())
def test_one_pass_aggregates_match_their_definitions(case):
    p, d = case
    ev = evaluate(p, d)
    clean = {r.id: d.tokens[r.id] for r in p.requests if d.tokens.get(r.id, 0) > 0}
    assert ev.latency_breakdown_ns == p.latency.breakdown_ns(p, d.tokens)
    assert ev.latency_ns == p.latency.predict_ns(p, d.tokens)
    assert ev.scheduled_tokens == sum(clean.values())
    assert ev.batch_size == len(clean)
    assert ev.weighted_tokens == sum(p.weights[k] * n for k, n in clean.items())
    assert ev.new_blocks == sum(p.new_blocks(p.by_id[k], n) for k, n in clean.items())
    view = _view(p, d)[0]
    assert list(view.tokens) == list(clean)  # request order, whatever the decision's order
    full = _view(p, d)[0]
    full.unusual = None  # the rules then read every scheduled entry
    full.latency_ns = view.latency_ns
    for family in (phase, priority):
        assert family.check(view) == family.check(full)


def test_a_repeated_id_counts_once():
    # Only a hand-built problem can repeat an id (the loader rejects it); the request the id
    # names is the one ``by_id`` holds, as everywhere else.
    p = make_problem([decode("a", 100), decode("b", 40)], [waiting("a", 300)], latency=LAT)
    d = Decision({"a": 64, "b": 1})
    ev = evaluate(p, d)
    assert (ev.scheduled_tokens, ev.batch_size) == (65, 2)
    assert ev.latency_breakdown_ns == p.latency.breakdown_ns(p, d.tokens)
    assert ev.new_blocks == p.new_blocks(p.by_id["a"], 64) + p.new_blocks(p.by_id["b"], 1)
