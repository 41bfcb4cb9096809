"""Every exact solver on hand-built problems whose optimum is known in closed form."""

from __future__ import annotations

import pytest

from stepopt.evaluate import evaluate
from stepopt.latency.model import LatencyModel
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.model import Decision
from stepopt.solvers import SolveStatus, solve, solver_names
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill, waiting

SOLVERS = solver_names()
MS = 1_000_000
STRICT_ONLY = {"structured"}  # refuses weighted priority (``auto`` falls back to CP-SAT)


def refused(name, problem, res) -> bool:
    """A strict-only solver on a weighted problem: it must say so, never claim a proof."""
    if name not in STRICT_ONLY or problem.priority_mode == "strict":
        return False
    assert res.status in (SolveStatus.FEASIBLE, SolveStatus.NO_SOLUTION), res.status
    assert "unsupported: weighted priority" in res.message
    if res.decision is not None:
        assert evaluate(problem, res.decision).feasible
    return True


def test_every_exact_solver_is_registered():
    assert set(SOLVERS) >= {"cpsat", "cbc", "highs", "brute"}


def check(res, problem):
    """The invariants of any result with a decision."""
    assert res.decision is not None, res.message
    ev = evaluate(problem, res.decision)
    assert ev.feasible, ev.violations
    assert res.params["model_latency_ns"] == ev.latency_ns
    return ev


def flat_then_linear(per_token_ns: int = 50_000, base_ns: int = 5 * MS) -> LatencyModel:
    return linear_latency(per_token_ns=per_token_ns, base_ns=base_ns)


@pytest.fixture(params=SOLVERS)
def name(request):
    return request.param


@pytest.mark.parametrize("objective", ["target", "goodput"])
def test_empty_problem(name, objective):
    lat = flat_then_linear()
    p = make_problem(latency=lat, target_ms=20.0, objective=objective)
    res = solve(p, name)
    assert res.status == SolveStatus.OPTIMAL
    ev = check(res, p)
    assert res.decision.scheduled() == {}
    assert ev.latency_ns == 5 * MS  # F_tok(0) + F_seq(0)
    if objective == "target":
        assert res.objective == pytest.approx(15.0)


def test_goodput_below_the_empty_step_is_infeasible(name):
    lat = flat_then_linear()  # increasing: every batch costs at least F_tok(0) = 5 ms
    p = make_problem([decode("d0")], [waiting("w0", 100)], latency=lat, objective="goodput")
    p = p.with_changes(target_latency_ms=4.9)
    res = solve(p, name)
    assert res.status == SolveStatus.INFEASIBLE
    assert res.decision is None


def test_running_queue_over_the_limit_is_infeasible(name):
    p = make_problem([decode("d0"), decode("d1")], max_num_running_reqs=1)
    assert solve(p, name).status == SolveStatus.INFEASIBLE


def test_goodput_fills_a_linear_model_up_to_the_target(name):
    # 5 ms + 50 us per token, T = 5 ms + 37 tokens: exactly 37 tokens fit.
    lat = flat_then_linear()
    p = make_problem(
        [decode("d0"), decode("d1")],
        [waiting("w0", 100)],
        latency=lat,
        objective="goodput",
        target_ms=5.0 + 37 * 0.05,
        min_prefill_chunk=1,
    )
    res = solve(p, name)
    assert res.status == SolveStatus.OPTIMAL
    ev = check(res, p)
    assert ev.scheduled_tokens == 37
    assert res.decision.tokens == {"d0": 1, "d1": 1, "w0": 35}


def test_kv_capacity_limits_the_chunk(name):
    # A fresh request: 3 free blocks of 16 tokens hold 48 tokens.
    p = make_problem(
        [],
        [waiting("w0", 500)],
        latency=flat_then_linear(),
        objective="goodput",
        target_ms=1000.0,
        block_size=16,
        num_free_blocks=3,
        min_prefill_chunk=1,
    )
    res = solve(p, name)
    ev = check(res, p)
    assert res.decision.tokens == {"w0": 48}
    assert ev.new_blocks == 3


def test_kv_slack_in_a_partly_filled_block_is_free(name):
    # 10 cached tokens: 6 slots left in the last block, then 1 free block of 16 -> 22 tokens.
    p = make_problem(
        [prefill("p0", prompt=200, computed=10)],
        latency=flat_then_linear(),
        objective="goodput",
        target_ms=1000.0,
        block_size=16,
        num_free_blocks=1,
        min_prefill_chunk=1,
    )
    res = solve(p, name)
    check(res, p)
    assert res.decision.tokens == {"p0": 22}


def test_long_prefill_threshold_caps_the_chunk(name):
    p = make_problem(
        [prefill("p0", prompt=600, computed=100)],
        latency=flat_then_linear(),
        objective="goodput",
        target_ms=1000.0,
        long_prefill_token_threshold=64,
    )
    res = solve(p, name)
    check(res, p)
    assert res.decision.tokens == {"p0": 64}


def test_min_chunk_forces_all_or_nothing_near_the_target(name):
    # Every token costs 50 us; T asks for 10 tokens but a new request needs at least 64:
    # scheduling 64 tokens misses T by 54 tokens (2.7 ms), scheduling none by 10 (0.5 ms).
    p = make_problem(
        [],
        [waiting("w0", 300)],
        latency=flat_then_linear(),
        target_ms=5.0 + 10 * 0.05,
        min_prefill_chunk=64,
    )
    res = solve(p, name)
    check(res, p)
    assert res.decision.scheduled() == {}
    assert res.objective == pytest.approx(0.5)
    # Closer to 64 than to 0: the chunk is exactly the minimum.
    q = p.with_changes(target_latency_ms=5.0 + 40 * 0.05)
    res = solve(q, name)
    check(res, q)
    assert res.decision.tokens == {"w0": 64}


def test_target_ties_prefer_more_tokens(name):
    # A flat latency: every decision has the same |L - T|; the tie-break takes all tokens.
    lat = LatencyModel(tokens=PiecewiseLinear.constant(7 * MS))
    p = make_problem(
        [decode("d0"), prefill("p0", prompt=90, computed=30)],
        [waiting("w0", 40)],
        latency=lat,
        target_ms=3.0,
        max_num_scheduled_tokens=80,
        min_prefill_chunk=1,
    )
    res = solve(p, name)
    ev = check(res, p)
    assert res.objective == pytest.approx(4.0)
    assert ev.scheduled_tokens == 80


def test_goodput_ties_prefer_lower_latency(name):
    # Two requests worth the same tokens; the cheaper attention wins the tie.
    lat = linear_latency(per_token_ns=10_000, base_ns=1 * MS, alpha_ns=50.0)
    p = make_problem(
        [prefill("cheap", prompt=110, computed=10), prefill("dear", prompt=1100, computed=1000)],
        latency=lat,
        objective="goodput",
        target_ms=100.0,
        max_num_scheduled_tokens=100,
        min_prefill_chunk=100,
    )
    res = solve(p, name)
    check(res, p)
    assert res.decision.tokens == {"cheap": 100}


def test_decodes_come_before_prefills(name):
    # Budget 3: two decodes and one prefill token; never the prefill without every decode.
    p = make_problem(
        [decode("d0"), decode("d1"), prefill("p0", prompt=300, computed=10)],
        latency=flat_then_linear(),
        objective="goodput",
        target_ms=1000.0,
        max_num_scheduled_tokens=3,
        min_prefill_chunk=1,
    )
    res = solve(p, name)
    check(res, p)
    assert res.decision.tokens == {"d0": 1, "d1": 1, "p0": 1}


@pytest.mark.parametrize("mode", ["strict", "weighted"])
def test_waiting_order_binds_in_strict_mode_only(name, mode):
    # Target = 40 tokens, budget 40, min chunk 64. The queue head needs at least 64 tokens,
    # so strict mode can admit nobody (|L - T| = 40 tokens = 2 ms); weighted mode admits the
    # second request whole and hits the target.
    p = make_problem(
        [],
        [
            waiting("first", 100, priority=0, arrival_time=0.0),
            waiting("second", 40, priority=0, arrival_time=1.0),
        ],
        latency=flat_then_linear(),
        target_ms=5.0 + 40 * 0.05,
        max_num_scheduled_tokens=40,
        min_prefill_chunk=64,
        priority_mode=mode,
    )
    res = solve(p, name)
    if refused(name, p, res):
        return
    ev = check(res, p)
    if mode == "strict":
        assert res.decision.scheduled() == {}
        assert res.objective == pytest.approx(2.0)
    else:
        assert res.decision.tokens == {"second": 40}
        assert ev.deviation_ns == 0


def test_running_requests_get_their_full_chunk_before_admissions(name):
    # Strict mode: admitting w0 needs p0 at its full 50 tokens, which the budget of 40
    # forbids, so all 40 tokens go to p0.
    p = make_problem(
        [prefill("p0", prompt=150, computed=100)],
        [waiting("w0", 30)],
        latency=flat_then_linear(),
        objective="goodput",
        target_ms=1000.0,
        max_num_scheduled_tokens=40,
        min_prefill_chunk=1,
    )
    res = solve(p, name)
    check(res, p)
    assert res.decision.tokens == {"p0": 40}
    # With room for the full chunk, the rest goes to the admitted request.
    q = p.with_changes(config=p.config.__class__(max_num_scheduled_tokens=60, min_prefill_chunk=1))
    res = solve(q, name)
    check(res, q)
    assert res.decision.tokens == {"p0": 50, "w0": 10}


def test_weighted_mode_prefers_urgent_requests(name):
    # Budget for one request; weights 1 + max_priority - priority favour priority 0.
    p = make_problem(
        [],
        [waiting("late", 50, priority=2, arrival_time=0.0), waiting("urgent", 50, priority=0)],
        latency=flat_then_linear(),
        objective="goodput",
        target_ms=1000.0,
        max_num_scheduled_tokens=50,
        min_prefill_chunk=50,
        priority_mode="weighted",
    )
    res = solve(p, name)
    if refused(name, p, res):
        return
    check(res, p)
    assert res.decision.tokens == {"urgent": 50}
    assert res.objective == 150  # weight 3 * 50 tokens


def test_non_convex_curve_beats_the_greedy_fill(name):
    # F_tok rises to 10 ms at 100 tokens, drops to 5 ms at 101 (a new kernel tile), then
    # rises by 10 ms per 99 tokens. Under T = 9 ms a greedy fill stops before 100 tokens;
    # the optimum is the largest S >= 101 with 5 ms + floor(10 ms (S - 101) / 99) <= 9 ms,
    # i.e. S = 140.
    lat = LatencyModel(
        tokens=PiecewiseLinear((0, 100, 101, 200), (1 * MS, 10 * MS, 5 * MS, 15 * MS))
    )
    p = make_problem(
        [],
        [waiting("w0", 500)],
        latency=lat,
        objective="goodput",
        target_ms=9.0,
        max_num_scheduled_tokens=200,
        min_prefill_chunk=1,
    )
    res = solve(p, name)
    ev = check(res, p)
    assert res.decision.tokens == {"w0": 140}
    assert ev.latency_ns == 5 * MS + (10 * MS * 39) // 99
    greedy = max(s for s in range(1, 101) if lat.tokens(s) <= 9 * MS)
    assert evaluate(p, Decision.of({"w0": greedy})).weighted_tokens < ev.weighted_tokens


def test_floor_arithmetic_matches_the_evaluator_to_the_nanosecond(name):
    # Odd slopes everywhere so the floors matter: tokens, batch, decode context, attention.
    lat = LatencyModel(
        tokens=PiecewiseLinear((0, 7, 61, 130), (1_000_003, 1_000_010, 2_333_337, 2_100_001)),
        batch=PiecewiseLinear((0, 3, 9), (11, 1_234_567, 1_300_001)),
        decode_context_ps=37_501,
        prefill=linear_latency(alpha_ns=1.3, beta_ns=40.0).prefill,
    )
    p = make_problem(
        [decode("d0", 333), decode("d1", 517), prefill("p0", prompt=95, computed=7)],
        [waiting("w0", 33), waiting("w1", 21)],
        latency=lat,
        target_ms=2.2,
        max_num_scheduled_tokens=120,
        min_prefill_chunk=5,
        priority_mode="weighted",
    )
    res = solve(p, name)
    if refused(name, p, res):
        return
    assert res.status == SolveStatus.OPTIMAL
    check(res, p)
