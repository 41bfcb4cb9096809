"""The integer latency arithmetic: floor interpolation, non-convex curves, every term."""

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepopt.latency.documents import model_from_dict
from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.latency.presets import load_preset, preset_names
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.latency.serialize import model_to_dict
from stepopt.testing.factories import decode, make_problem, prefill, waiting
from stepopt.testing.strategies import problems


def test_floor_interpolation_rounds_down_not_to_nearest():
    f = PiecewiseLinear((0, 3), (0, 2))  # slope 2/3
    assert [f(x) for x in range(4)] == [0, 0, 1, 2]


def test_floor_on_a_falling_segment_rounds_towards_minus_infinity():
    f = PiecewiseLinear((0, 3), (10, 8))  # slope -2/3: 10, 9.33, 8.67, 8
    assert [f(x) for x in range(4)] == [10, 9, 8, 8]


def test_non_convex_curve_with_a_step_and_a_dip():
    # flat floor, knee, a tile step up, then a dip: any shape must evaluate exactly.
    f = PiecewiseLinear((0, 100, 200, 201, 300), (5_000, 5_000, 9_000, 15_000, 12_000))
    assert f(0) == 5_000 and f(50) == 5_000 and f(100) == 5_000
    assert f(150) == 7_000
    assert f(200) == 9_000 and f(201) == 15_000
    assert f(250) == 15_000 + (-3_000 * 49) // 99
    assert f(300) == 12_000


def test_end_segments_extend_outwards():
    f = PiecewiseLinear((10, 20), (100, 200))
    assert f(30) == 300 and f(0) == 0
    assert PiecewiseLinear.constant(7)(12345) == 7


def test_non_monotone_breakpoints_are_rejected():
    with pytest.raises(ValueError, match="increase strictly"):
        PiecewiseLinear((0, 5, 5), (0, 1, 2))


@given(
    xs=st.lists(st.integers(0, 10_000), min_size=2, max_size=6, unique=True),
    data=st.data(),
)
def test_value_matches_exact_rational_floor(xs, data):
    xs = sorted(xs)
    ys = [data.draw(st.integers(-(10**9), 10**9)) for _ in xs]
    f = PiecewiseLinear(tuple(xs), tuple(ys))
    x = data.draw(st.integers(xs[0], xs[-1]))
    k = max(i for i in range(len(xs) - 1) if xs[i] <= x) if x < xs[-1] else len(xs) - 2
    from fractions import Fraction

    exact = Fraction(ys[k]) + Fraction(ys[k + 1] - ys[k], xs[k + 1] - xs[k]) * (x - xs[k])
    assert f(x) == math.floor(exact)
    # Every piece that covers x by its closed sub-domain gives the same value.
    for seg, a, b in f.pieces(x, x):
        assert a <= x <= b and seg.value(x) == f(x)


def test_pieces_cover_the_domain_and_keep_original_endpoints():
    f = PiecewiseLinear((0, 10, 20, 30), (0, 7, 3, 50))
    pieces = f.pieces(5, 25)
    assert [(a, b) for _, a, b in pieces] == [(5, 10), (10, 20), (20, 25)]
    assert pieces[-1][0].x1 == 30  # clipped domain, original interpolation


def test_prefill_attention_table_and_interpolation():
    att = PrefillAttention(alpha_ns=2.0, beta_ns=0.5, grid=(64, 128, 256))
    curve = att.curve(cached=1000, remaining=200)
    assert curve.xs == (0, 64, 128, 200)
    assert curve.ys == tuple(math.floor(2.0 * x * 1000 + 0.5 * x * x) for x in curve.xs)
    # between grid points: floor of the chord, which over-estimates the convex quadratic
    assert att(100, 1000, 200) == curve(100) >= att.exact_ns(100, 1000)
    assert att(0, 1000, 200) == 0


def test_decode_term_is_exact_integer_picoseconds():
    m = LatencyModel(tokens=PiecewiseLinear.constant(0), decode_context_ps=1_500)
    assert m.decode_ns(999) == 1_498  # 1,498.5 ns floored
    assert m.decode_ns(1000) == 1_500


def test_breakdown_sums_the_four_terms():
    lat = LatencyModel(
        tokens=PiecewiseLinear((0, 100), (1_000_000, 2_000_000)),
        batch=PiecewiseLinear((0, 10), (0, 100_000)),
        decode_context_ps=2_000,
        prefill=PrefillAttention(1.0, 1.0, (8, 16)),
    )
    p = make_problem(
        [decode("d", context=300), prefill("p", prompt=50, computed=10)],
        [waiting("w", prompt=20)],
        latency=lat,
    )
    parts = lat.breakdown_ns(p, {"d": 1, "p": 12, "w": 5, "ghost": 9})
    assert parts["tokens"] == 1_000_000 + 18 * 10_000
    assert parts["batch"] == 30_000
    assert parts["decode_attention"] == 600
    expect_p = lat.prefill.curve(10, 40)(12)
    expect_w = lat.prefill.curve(0, 20)(5)
    assert parts["prefill_attention"] == expect_p + expect_w
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")
    assert lat.predict_ns(p, {"d": 1, "p": 12, "w": 5}) == parts["total"]


def test_empty_batch_costs_the_curves_at_zero():
    p = make_problem([decode("d")], preset="demo")
    lat = p.latency
    assert lat.predict_ns(p, {}) == lat.tokens(0) + lat.batch(0)


def test_demo_preset_is_listed_and_round_trips():
    assert "demo" in preset_names()
    m = load_preset("demo")
    again = model_from_dict(model_to_dict(m))
    assert again == m
    # The demo curve is non-convex: the per-token slope falls after 1024 tokens.
    slopes = [s.dy / s.dx for s in m.tokens.segments]
    assert any(b < a for a, b in itertools.pairwise(slopes))


@given(problems(max_requests=6), st.data())
def test_fast_step_latency_equals_the_model_on_every_decision(problem, data):
    """latency.step sums the terms for every hot loop; the evaluator's model is the judge."""
    from stepopt.latency.step import step_latency

    fast = step_latency(problem.latency)
    tokens = {
        r.id: data.draw(st.sampled_from([0, problem.lo(r), problem.hi(r)]))
        for r in problem.requests
    }
    s = b = ctx = att = 0
    for r in problem.requests:
        c = tokens[r.id]
        if c == 0:
            continue
        s, b = s + c, b + 1
        if r.is_decode:
            ctx += r.computed_tokens
        else:
            att += fast.attention(c, r.computed_tokens, r.remaining_prompt)
    want = problem.latency.predict_ns(problem, tokens)
    assert fast.total(s, b, ctx, att) == want == problem.latency.step_ns(s, b, ctx, att)
    assert fast.decode(ctx) == problem.latency.decode_ns(ctx)


def test_the_simulator_takes_its_latency_from_latency_step_not_from_heuristics():
    import ast
    import inspect

    import stepopt.simulate.engine as engine

    tree = ast.parse(inspect.getsource(engine))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "stepopt.latency.step" in modules
    assert not any(m and m.startswith("stepopt.heuristics") for m in modules)
