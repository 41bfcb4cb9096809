"""Every rule of the evaluator, one at a time, on hand-built problems."""

import pytest

from stepopt.evaluate import Rule, evaluate, rank_key
from stepopt.model import Decision
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill, waiting

LAT = linear_latency(per_token_ns=10_000, base_ns=1_000_000, per_request_ns=0)


def problem(**kw):
    kw.setdefault("latency", LAT)
    running = kw.pop("running", [decode("d1", 100), decode("d2", 200), prefill("p", 500, 100)])
    waiting_ = kw.pop(
        "waiting",
        [
            waiting("w1", 300, arrival_time=1.0),
            waiting("w2", 300, arrival_time=2.0),
            waiting("w0", 50, priority=-1, arrival_time=5.0),
        ],
    )
    return make_problem(running, waiting_, **kw)


def rules(p, tokens):
    return evaluate(p, Decision(tokens)).rules()


def test_a_clean_decision_is_feasible_with_exact_aggregates():
    p = problem(target_ms=5.0)
    ev = evaluate(p, Decision({"d1": 1, "d2": 1, "p": 400, "w0": 50, "w1": 64}))
    assert ev.feasible and ev.violations == ()
    assert ev.scheduled_tokens == 516 and ev.batch_size == 5 and ev.num_admitted == 2
    assert ev.latency_ns == 1_000_000 + 516 * 10_000
    assert ev.objective == pytest.approx(abs(ev.latency_ns - 5_000_000) / 1e6)
    assert ev.tiebreak == 516


def test_unknown_request_and_negative_tokens():
    p = problem()
    assert Rule.UNKNOWN_REQUEST in rules(p, {"nope": 3})
    ev = evaluate(p, Decision({"d1": -1}))
    assert Rule.NEGATIVE_TOKENS in ev.rules() and "d1=-1" in ev.violations[0].message


def test_budget():
    p = problem(max_num_scheduled_tokens=300)
    assert Rule.BUDGET in rules(p, {"d1": 1, "d2": 1, "p": 299})
    assert Rule.BUDGET not in rules(p, {"d1": 1, "d2": 1, "p": 298})


def test_concurrency_counts_running_requests_that_get_nothing():
    p = problem(max_num_running_reqs=4)
    ok = {"d1": 1, "d2": 1, "p": 400, "w0": 50}
    assert Rule.CONCURRENCY not in rules(p, ok)
    assert Rule.CONCURRENCY in rules(p, {**ok, "w1": 300})


@pytest.mark.parametrize(
    ("tokens", "bad"),
    [
        ({"d1": 2}, True),  # a decode takes exactly one token
        ({"d1": 1, "d2": 1, "p": 401}, True),  # more than the remaining prompt
        ({"d1": 1, "d2": 1, "p": 63}, True),  # under min_prefill_chunk
        ({"d1": 1, "d2": 1, "p": 64}, False),
    ],
)
def test_phase(tokens, bad):
    assert (Rule.PHASE in rules(problem(), tokens)) is bad


def test_threshold_caps_the_chunk_and_a_short_remainder_may_go_under_the_min_chunk():
    p = problem(long_prefill_token_threshold=128)
    assert Rule.PHASE in rules(p, {"d1": 1, "d2": 1, "p": 129})
    short = make_problem([prefill("q", 110, 100)], latency=LAT)  # 10 left < min chunk 64
    assert Rule.PHASE not in rules(short, {"q": 10})


def test_decode_first_in_both_modes():
    for mode in ("strict", "weighted"):
        p = problem(priority_mode=mode)
        assert Rule.DECODE_FIRST in rules(p, {"d1": 1, "p": 100})
        assert Rule.DECODE_FIRST not in rules(p, {"d1": 1, "d2": 1, "p": 100})
        assert Rule.DECODE_FIRST not in rules(p, {"d1": 1})  # decodes alone: no rule


def test_running_first_only_in_strict_mode():
    tokens = {"d1": 1, "d2": 1, "p": 100, "w0": 50}  # p gets less than its full 400
    assert Rule.RUNNING_FIRST in rules(problem(), tokens)
    assert Rule.RUNNING_FIRST not in rules(problem(priority_mode="weighted"), tokens)


def test_waiting_order_is_priority_then_arrival_then_id():
    full = {"d1": 1, "d2": 1, "p": 400}
    p = problem()
    assert [r.id for r in p.waiting_order] == ["w0", "w1", "w2"]
    assert Rule.WAITING_ORDER in rules(p, {**full, "w1": 64})  # skips w0
    assert Rule.WAITING_ORDER in rules(p, {**full, "w0": 50, "w2": 64})  # skips w1
    assert Rule.WAITING_ORDER not in rules(p, {**full, "w0": 50, "w1": 64})
    assert Rule.WAITING_ORDER not in rules(problem(priority_mode="weighted"), {**full, "w2": 64})


def test_kv_capacity_counts_new_blocks_only():
    # d1: 100 -> 101 tokens stays in 7 blocks of 16; d2: 208 -> 209 needs a 14th block.
    running = [decode("d1", 100), decode("d2", 208), prefill("p", 500, 100)]
    p = problem(running=running, num_free_blocks=1, block_size=16)
    ev = evaluate(p, Decision({"d1": 1, "d2": 1}))
    assert ev.new_blocks == 1 and ev.feasible
    ev = evaluate(p, Decision({"d1": 1, "d2": 1, "p": 64}))  # p: 100 -> 164: 4 new blocks
    assert ev.new_blocks == 5 and Rule.KV_CAPACITY in ev.rules()


def test_goodput_latency_cap_is_a_violation_not_a_hard_one():
    p = problem(objective="goodput", target_ms=2.0)
    ev = evaluate(p, Decision({"d1": 1, "d2": 1, "p": 400}))
    assert ev.latency_ns == 1_000_000 + 402 * 10_000
    assert ev.rules() == {Rule.LATENCY_CAP} and not ev.feasible and ev.hard_feasible
    assert ev.objective == 402  # goodput objective: weighted tokens


def test_target_objective_has_no_latency_cap():
    p = problem(objective="target", target_ms=2.0)
    assert evaluate(p, Decision({"d1": 1, "d2": 1, "p": 400})).feasible


def test_weights_favour_urgent_requests_in_weighted_mode_only():
    p = problem(priority_mode="weighted", objective="goodput", target_ms=1000)
    assert p.weights["w0"] == 2 and p.weights["w1"] == 1
    ev = evaluate(p, Decision({"d1": 1, "d2": 1, "p": 400, "w0": 50}))
    assert ev.weighted_tokens == 2 + 400 + 2 * 50
    assert problem().weights["w0"] == 1


def test_rank_key_orders_feasible_first_then_objective_then_tiebreak():
    p = problem(target_ms=5.0)
    a = evaluate(p, Decision({"d1": 1, "d2": 1, "p": 398}))  # 5.0 ms exactly
    b = evaluate(p, Decision({"d1": 1, "d2": 1, "p": 300}))
    bad = evaluate(p, Decision({"d1": 2}))
    assert a.deviation_ns == 0
    assert rank_key(p, a) < rank_key(p, b) < rank_key(p, bad)


def test_preemption_frees_slot_and_blocks_and_leaves_the_priority_rules():
    running = [decode("d1", 100), decode("d2", 208), prefill("p", 500, 100)]
    p = problem(running=running, num_free_blocks=2, max_num_running_reqs=3, block_size=16)
    tokens = {"d2": 1, "p": 64, "w0": 50}  # 1 + 4 + 4 new blocks, one admission
    ev = evaluate(p, Decision(tokens))
    assert {Rule.KV_CAPACITY, Rule.CONCURRENCY, Rule.DECODE_FIRST} <= ev.rules()
    # Preempting d1 (100 cached tokens = 7 blocks) gives back its slot and its blocks, and a
    # preempted decode no longer has to be served first.
    ev = evaluate(p, Decision(tokens, preempted=("d1",)))
    assert not ev.rules() & {Rule.KV_CAPACITY, Rule.CONCURRENCY, Rule.DECODE_FIRST}


def test_preempted_ids_must_be_running_requests_that_get_nothing():
    p = problem()
    assert Rule.PREEMPTION in evaluate(p, Decision({"d1": 1}, preempted=("d1",))).rules()
    assert Rule.PREEMPTION in evaluate(p, Decision({}, preempted=("w1",))).rules()
    assert Rule.PREEMPTION not in evaluate(p, Decision({}, preempted=("d1",))).rules()
