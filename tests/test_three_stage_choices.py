"""Three-stage's decode choice (overloaded steps), its age guard and the prefill fallback:
hand-built problems where the seed's choices lose, checked against exact optima."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepopt.errors import InputError
from stepopt.evaluate import evaluate, rank_key
from stepopt.heuristics.base import coerce_params, get_heuristic
from stepopt.heuristics.decode_choice import DecodeChoice, largest_count
from stepopt.heuristics.three_stage import plan, three_stage
from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.model import Decision, Request, StepProblem
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill, waiting
from stepopt.testing.strategies import problems

SEED = {"decode_order": "queue", "prefill_fallback": False}  # the seed's behaviour


def _solve(problem: StepProblem, solver: str):
    from stepopt.solvers.base import SolveStatus, solve, solver_names

    if solver not in solver_names():
        pytest.skip(f"exact solver {solver} not registered")
    res = solve(problem, solver, time_limit=20.0)
    assert res.status == SolveStatus.OPTIMAL, res.message
    return res.evaluation


def _overloaded(objective: str, target_ms: float) -> StepProblem:
    # 6 long-context decodes first in the queue (one of 6,141 tokens), then 41 short ones:
    # 5 ms + 50 us per token + 1 ns per context token; all 47 together take 30.1 ms.
    longs = [decode(f"L{k}", c) for k, c in enumerate((6141, 2000, 1500, 1203, 1100, 1000))]
    shorts = [decode(f"s{k:02d}", 100 + k) for k in range(41)]
    return make_problem(
        longs + shorts,
        [waiting("w0", 300)],
        latency=linear_latency(decode_context_ps=1_000_000),
        target_ms=target_ms,
        objective=objective,
    )


def test_overloaded_goodput_takes_the_short_contexts():
    p = _overloaded("goodput", 12.5)
    seed = evaluate(p, three_stage(p, **SEED))
    d = three_stage(p)
    ev = evaluate(p, d)
    # By hand: k decodes cost 5 ms + 50 us k + their contexts; the 41 short ones (4,920
    # context tokens) take 5 + 2.05 + 4.92 = 11.97 ms, and adding the shortest long one
    # (1,000) busts 12.5 ms. The seed's queue order fits only the first (6,141: 11.19 ms).
    assert seed.feasible and seed.scheduled_tokens == 1
    assert ev.feasible and set(d.tokens) == {f"s{k:02d}" for k in range(41)}
    opt = _solve(p, "cpsat")
    assert rank_key(p, ev) == rank_key(p, opt)


def test_overloaded_target_fills_the_gap_with_a_swap():
    p = _overloaded("target", 12.5)
    seed = evaluate(p, three_stage(p, **SEED))
    ev = evaluate(p, three_stage(p))
    assert ev.feasible
    # The 41 short decodes reach 11.97 ms, 42 decodes 13.02 ms; swapping the shortest for the
    # 1,000-token context gives 12.83 ms, the closest with 41 tokens. The seed: 2 decodes,
    # 13.24 ms.
    assert ev.scheduled_tokens == 41 and ev.latency_ns == 12_830_000
    assert seed.scheduled_tokens == 2 and ev.deviation_ns < seed.deviation_ns


def test_overloaded_target_is_optimal_on_small_cases():
    # Contexts 10..320: the target asks for 3 decodes with contexts summing to 370 tokens,
    # which only a swap reaches (the 3 cheapest sum to 70).
    ctx = (10, 20, 40, 80, 160, 320)
    p = make_problem(
        [decode(f"d{k}", c) for k, c in enumerate(ctx)],
        latency=linear_latency(per_token_ns=100_000, decode_context_ps=10_000_000),
        target_ms=5.0 + 0.3 + 3.7,
        max_num_scheduled_tokens=3,
    )
    ev = evaluate(p, three_stage(p))
    assert ev.feasible and ev.deviation_ns == 0 and ev.scheduled_tokens == 3
    assert rank_key(p, ev) == rank_key(p, _solve(p, "brute"))
    assert evaluate(p, three_stage(p, **SEED)).deviation_ns > 0


def test_overloaded_with_kv_limits_and_no_inverted_budget():
    # Decodes on a block boundary need a block; 2 free blocks. With KV limits on, the seed
    # skipped its bisection on the decode count and kept stage 1's budgets: 1 decode. The
    # decode choice keeps at most 2 decodes needing a block and takes the cheapest: 6.
    running = [decode(f"d{k}", 16 * (k + 1)) for k in range(6)]  # all need a block
    running += [decode(f"e{k}", 17 * (k + 1)) for k in range(6)]  # none does
    p = make_problem(
        running,
        latency=linear_latency(decode_context_ps=2_000_000),
        target_ms=5.9,
        objective="goodput",
        num_free_blocks=2,
        block_size=16,
    )
    assert len(three_stage(p, **SEED).tokens) == 1
    d = three_stage(p)
    ev = evaluate(p, d)
    assert ev.feasible and ev.new_blocks == 2 and ev.scheduled_tokens == 6
    assert rank_key(p, ev) == rank_key(p, _solve(p, "brute"))


def test_fair_share_serves_the_oldest_decodes_first():
    # Long contexts arrived first. Cheapest first skips them all; with the guard the oldest
    # always runs (its cost is the guard's price), then the cheapest that still fit.
    running = [decode(f"old{k}", 3000, arrival_time=k) for k in range(4)]
    running += [decode(f"new{k:02d}", 100, arrival_time=10 + k) for k in range(20)]
    p = make_problem(
        running,
        latency=linear_latency(decode_context_ps=1_000_000),
        target_ms=10.0,
        objective="goodput",
    )
    plain = three_stage(p)
    assert len(plain.tokens) == 20 and not any(k.startswith("old") for k in plain.tokens)
    for share in (0.1, 0.5, 1.0):
        d = three_stage(p, fair_share=share)
        ev = evaluate(p, d)
        # old0 + m new: 5 + 0.05 (1 + m) + 3 + 0.1 m <= 10 ms: m = 13
        assert ev.feasible and ev.latency_ns == 10_000_000
        assert {k for k in d.tokens if k.startswith("old")} == {"old0"} and len(d.tokens) == 14


def test_decode_sequence_interleaves_the_age_order():
    # Among the first m decodes of the sequence, ceil(share * m) are taken by age.
    running = [decode(f"d{k}", 1000 - k, arrival_time=k) for k in range(12)]
    seq = DecodeChoice(running, "cheapest", Fraction(1, 4), None, None, 16, 0, 1000).seq
    ids = [r.id for r in seq]
    # age picks at positions 0, 4, 8 (d0, d1, d2); cost picks: shortest context first (d11..)
    assert ids == ["d0", "d11", "d10", "d9", "d1", "d8", "d7", "d6", "d2", "d5", "d4", "d3"]
    queue = DecodeChoice(running, "queue", Fraction(0), None, None, 16, 0, 1000).seq
    assert [r.id for r in queue] == [f"d{k}" for k in range(12)]


def _two_prefills(target_ms: float) -> StepProblem:
    # 4 decodes; a running prefill on a 2,750-token context (more left: stage 2 puts it
    # first) and one on a 476-token context; attention 10 ns per chunk token per cached token.
    lat = LatencyModel(
        tokens=PiecewiseLinear((0, 65_536), (5_000_000, 5_000_000 + 50_000 * 65_536)),
        batch=PiecewiseLinear((0, 1024), (0, 0)),
        decode_context_ps=0,
        prefill=PrefillAttention(10.0, 0.0, grid=(16, 32, 64, 128)),
        name="linear+attention",
    )
    return make_problem(
        [decode(f"d{k}") for k in range(4)]
        + [prefill("long", 2750 + 90, 2750), prefill("short", 476 + 80, 476)],
        [waiting("w0", 100)],
        latency=lat,
        target_ms=target_ms,
        objective="goodput",
    )


def test_prefill_fallback_tries_the_cheaper_chunk():
    # A 64-token chunk on "long" costs 1.76 ms of attention and busts 8.755 ms; on "short",
    # 0.30 ms: 4 decodes + 64 tokens = 8.705 ms fits. The seed tries only "long".
    p = _two_prefills(8.755)
    assert three_stage(p, **SEED).tokens == {f"d{k}": 1 for k in range(4)}
    d = three_stage(p)
    assert d.tokens == {**{f"d{k}": 1 for k in range(4)}, "short": 64}
    ev = evaluate(p, d)
    assert ev.feasible
    assert rank_key(p, ev) == rank_key(p, _solve(p, "brute"))
    p_target = p.with_changes(objective="target")
    ev_t = evaluate(p_target, three_stage(p_target))
    assert rank_key(p_target, ev_t) == rank_key(p_target, _solve(p_target, "brute"))


def _decode_and_prefill(lat: LatencyModel, prompt: int, target_ms: float) -> StepProblem:
    """A goodput step: one decode and one fresh running prefill of ``prompt`` tokens."""
    return make_problem(
        [decode("d0", 40), prefill("p0", prompt, 0)],
        latency=lat,
        target_ms=target_ms,
        objective="goodput",
        min_prefill_chunk=16,
    )


def test_prefill_fallback_bisects_where_more_budget_buys_no_tokens():
    # The token curve falls after 140 tokens: the inverted budget (205) gives the prefill its
    # whole 150 tokens, 151 in all at 13.82 ms > 13.5 ms, and every re-inversion lands on the
    # same decision. The seed fell back to the empty step; bisecting on the budget between
    # the decode alone and that decision finds 1 + 134 tokens (10 + 4 * 35 / 40 = 13.5 ms).
    lat = LatencyModel(
        tokens=PiecewiseLinear(
            (0, 100, 140, 200, 400), (5_000_000, 10_000_000, 14_000_000, 13_000_000, 30_000_000)
        ),
        name="falling",
    )
    p = _decode_and_prefill(lat, 150, 13.5)
    assert three_stage(p, **SEED).tokens == {}
    d = three_stage(p)
    assert d.tokens == {"d0": 1, "p0": 134}
    assert rank_key(p, evaluate(p, d)) == rank_key(p, _solve(p, "brute"))


def test_prefill_fallback_bisects_when_the_re_inversions_stop_short():
    # Quadratic attention (50 ns per chunk token squared): the first budget busts 17.05 ms,
    # re-inverted with that chunk's attention it leaves 1.25 ms unused (7 %), the next one
    # busts again. Bisecting between them finds the largest chunk under the target.
    lat = LatencyModel(
        tokens=PiecewiseLinear((0, 65_536), (5_000_000, 5_000_000 + 50_000 * 65_536)),
        prefill=PrefillAttention(0.0, 50.0, grid=tuple(range(16, 400, 16))),
        name="quadratic attention",
    )
    p = _decode_and_prefill(lat, 400, 17.05)
    assert three_stage(p, **SEED).tokens == {"d0": 1, "p0": 182}
    d = three_stage(p)
    assert d.tokens == {"d0": 1, "p0": 199}
    assert rank_key(p, evaluate(p, d)) == rank_key(p, _solve(p, "brute"))


def test_largest_count_finds_a_dip_after_a_step():
    # Latency by count: rises to a step at 10, falls back at 12 (a tile boundary), then rises.
    lat = {k: 10 * k for k in range(10)} | {10: 500, 11: 400, 12: 95, 13: 100, 14: 200}
    ctx = list(range(15))
    assert largest_count(lambda k, c: lat[k], ctx, 14, 100, knots=(10, 12)) == 13
    assert largest_count(lambda k, c: lat[k], ctx, 14, 99, knots=(10, 12)) == 12
    assert largest_count(lambda k, c: lat[k], ctx, 9, 100, knots=(10, 12)) == 9
    assert largest_count(lambda k, c: 1 + lat[k], ctx, 14, 0, knots=()) == -1


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"decode_order": "fastest"}, "decode_order"),
        ({"fair_share": 1.5}, "fair_share"),
        ({"fair_share": True}, "fair_share"),
        ({"prefill_fallback": "yes"}, "prefill_fallback"),
    ],
)
def test_bad_parameters_are_one_line_errors(params, needle):
    with pytest.raises(InputError, match=needle):
        three_stage(make_problem(), **params)


def test_text_parameters_are_typed():
    fn = get_heuristic("three-stage")
    got = coerce_params(
        fn, {"decode_order": "queue", "fair_share": "0.25", "prefill_fallback": "false"}, "p"
    )
    assert got == {"decode_order": "queue", "fair_share": 0.25, "prefill_fallback": False}
    with pytest.raises(InputError, match="fair_share takes a finite number"):
        coerce_params(fn, {"fair_share": "some"}, "p")


VARIANTS = (
    {},
    SEED,
    {"fair_share": 0.3},
    {"decode_order": "queue"},
    {"prefill_fallback": False},
    {"fair_share": 1.0, "reserve_full_prompt": True},
)


@settings(max_examples=400)
@given(problems(max_requests=7), st.sampled_from(VARIANTS))
def test_every_variant_passes_the_hard_rules(problem: StepProblem, params: dict):
    p = plan(problem, **params)
    ev = evaluate(problem, p.decision)
    assert ev.hard_feasible, [v.message for v in ev.violations]
    assert p.latency_ns == ev.latency_ns
    if problem.objective == "goodput" and evaluate(problem, Decision()).within_target:
        assert ev.within_target


@settings(max_examples=100)
@given(problems(max_requests=40, preset="h100/llama-2-7b/tp1"), st.sampled_from(VARIANTS))
def test_every_variant_passes_the_hard_rules_at_engine_scale(problem: StepProblem, params):
    p = plan(problem, **params)
    ev = evaluate(problem, p.decision)
    assert ev.hard_feasible, [v.message for v in ev.violations]
    assert p.latency_ns == ev.latency_ns


@st.composite
def decode_only_problems(draw) -> StepProblem:
    """Strict goodput steps of running decodes with varied contexts under a linear latency
    model: the optimum is the longest run of the shortest contexts that fits."""
    n = draw(st.integers(1, 10))
    running = [
        Request(f"d{k}", 1, draw(st.integers(1, 4000)), draw(st.integers(0, 2)), float(k))
        for k in range(n)
    ]
    latency = linear_latency(
        per_token_ns=draw(st.integers(10_000, 100_000)),
        base_ns=1_000_000,
        per_request_ns=draw(st.integers(0, 50_000)),
        decode_context_ps=draw(st.integers(100_000, 2_000_000)),
    )
    return make_problem(
        running,
        latency=latency,
        objective="goodput",
        target_ms=draw(st.integers(1_000, 6_000)) / 1000,
        max_num_scheduled_tokens=draw(st.integers(1, 12)),
    )


@settings(max_examples=200)
@given(decode_only_problems())
def test_overloaded_goodput_is_optimal_on_linear_models(problem: StepProblem):
    # Cheapest contexts first reaches the exact optimum: the most decodes, and among those
    # the lowest latency (goodput's tie-break). The seed's queue order does not.
    ev = evaluate(problem, three_stage(problem))
    assert rank_key(problem, ev) == rank_key(problem, _solve(problem, "brute"))
