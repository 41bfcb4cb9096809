"""Hand-checked behaviour of the heuristics and of their hot-path arithmetic."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepopt.errors import InputError, UnknownNameError
from stepopt.evaluate import Rule, evaluate
from stepopt.heuristics import get_heuristic, heuristic_names
from stepopt.heuristics.sarathi import sarathi
from stepopt.heuristics.three_stage import plan, three_stage
from stepopt.heuristics.vllm_v1 import vllm_v1
from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.latency.step import attention_fn, fast_curve, token_inverse
from stepopt.model import Request
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill, waiting
from stepopt.testing.strategies import curves

# ---- hot-path arithmetic equals the latency model's -----------------------------------------


@settings(max_examples=400)
@given(curves(max_x=300, max_y_ns=10_000_000, max_points=6), st.integers(0, 400), st.data())
def test_token_inverse_is_the_largest_x_under_y(curve, max_x, data):
    y = data.draw(st.integers(-1_000_000, 12_000_000))
    expect = max((x for x in range(max_x + 1) if curve(x) <= y), default=-1)
    assert token_inverse(curve, max_x).largest_at_most(y) == expect


@settings(max_examples=300)
@given(curves(max_x=5000, max_y_ns=10_000_000), st.integers(-50, 6000))
def test_fast_curve_equals_curve(curve, x):
    assert fast_curve(curve)(x) == curve(x)


@settings(max_examples=400)
@given(
    st.sampled_from([0.0, 1.3, 2.6, 150.5]),
    st.sampled_from([0.0, 1.3, 40.0, 611.0]),
    st.sampled_from([(4, 8, 16, 32), (64, 128, 256, 512, 1024, 2048), (1, 3, 100)]),
    st.integers(0, 5000),
    st.integers(1, 3000),
    st.data(),
)
def test_attention_fn_equals_prefill_attention(alpha, beta, grid, cached, remaining, data):
    model = PrefillAttention(alpha, beta, grid)
    chunk = data.draw(st.integers(0, remaining))
    assert attention_fn(model)(chunk, cached, remaining) == model(chunk, cached, remaining)


# ---- registry ------------------------------------------------------------------------------


def test_registry_lists_every_heuristic_and_rejects_unknown_names():
    assert {"three-stage", "vllm-v1", "vllm-v1-priority", "sarathi"} <= set(heuristic_names())
    with pytest.raises(UnknownNameError, match="three-stage"):
        get_heuristic("fifo")


# ---- vLLM V1 -------------------------------------------------------------------------------


def _vllm_test_config(**kw):
    return {"max_num_scheduled_tokens": 1024, "long_prefill_token_threshold": 400, **kw}


def test_vllm_concurrent_partial_prefills_example():
    # vLLM's tests/v1/core/test_scheduler.py::test_schedule_concurrent_partial_requests:
    # three 800-token prompts, budget 1024, threshold 400.
    step1 = make_problem(
        [], [waiting(f"r{k}", 800, arrival_time=k) for k in range(3)], **_vllm_test_config()
    )
    assert vllm_v1(step1).tokens == {"r0": 400, "r1": 400, "r2": 224}
    step2 = make_problem(
        [prefill("r0", 800, 400), prefill("r1", 800, 400), prefill("r2", 800, 224)],
        **_vllm_test_config(),
    )
    assert vllm_v1(step2).tokens == {"r0": 400, "r1": 400, "r2": 224}
    # r0 and r1 finished their prompts (decode), r2 has 800 - 224 - 224 = 352 left.
    step3 = make_problem(
        [Request("r0", 800, 800), Request("r1", 800, 800), prefill("r2", 800, 448)],
        **_vllm_test_config(),
    )
    assert vllm_v1(step3).tokens == {"r0": 1, "r1": 1, "r2": 352}


def test_vllm_lifts_the_threshold_for_a_lone_request_and_the_evaluator_says_so():
    p = make_problem([], [waiting("solo", 800)], **_vllm_test_config())
    d = vllm_v1(p)
    assert d.tokens == {"solo": 800}
    assert Rule.PHASE in evaluate(p, d).rules()  # stepopt caps every chunk at the threshold


def test_vllm_ignores_min_prefill_chunk():
    p = make_problem(
        [decode("d0")], [waiting("w0", 500)], max_num_scheduled_tokens=21, min_prefill_chunk=64
    )
    d = vllm_v1(p)
    assert d.tokens == {"d0": 1, "w0": 20}
    assert Rule.PHASE in evaluate(p, d).rules()


def test_vllm_serves_running_in_admission_order_even_before_decodes():
    p = make_problem([prefill("p0", 900, 100), decode("d0")], max_num_scheduled_tokens=256)
    d = vllm_v1(p)
    assert d.tokens == {"p0": 256}
    assert Rule.DECODE_FIRST in evaluate(p, d).rules()


def test_vllm_fcfs_preempts_the_last_running_request():
    # bs 16, no free block: a (context 16) needs a new block; b (context 20) does not.
    p = make_problem(
        [decode("a", 16), decode("b", 20)], [waiting("w", 10)], block_size=16, num_free_blocks=0
    )
    d = vllm_v1(p)
    assert d.preempted == ("b",) and d.tokens == {"a": 1}  # no admission after a preemption


def test_vllm_preemption_when_the_request_itself_is_last():
    p = make_problem(
        [decode("x", 20, priority=5), decode("y", 16, priority=0)],
        block_size=16,
        num_free_blocks=0,
    )
    fcfs = vllm_v1(p)
    assert fcfs.tokens == {"x": 1} and fcfs.preempted == ("y",)
    # priority: the victim is the least urgent running request, x, already scheduled this
    # step: its token goes back to the budget and its blocks to the pool; y then fits.
    prio = vllm_v1(p, policy="priority")
    assert prio.tokens == {"y": 1} and prio.preempted == ("x",)


def test_vllm_waiting_policy():
    w = [
        waiting("late", 100, priority=1, arrival_time=0),
        waiting("urgent", 100, priority=0, arrival_time=1),
    ]
    p = make_problem([decode("d0")], w, max_num_running_reqs=2)
    assert vllm_v1(p).tokens == {"d0": 1, "late": 100}
    assert get_heuristic("vllm-v1-priority")(p).tokens == {"d0": 1, "urgent": 100}
    ev = evaluate(p, vllm_v1(p))
    assert Rule.WAITING_ORDER in ev.rules()


def test_vllm_full_prompt_kv_gate():
    # 100-token prompt = 7 blocks; 5 free: the first 64-token chunk would fit, the prompt not.
    p = make_problem([], [waiting("w", 100)], max_num_scheduled_tokens=64, num_free_blocks=5)
    assert vllm_v1(p).tokens == {}
    assert sarathi(p).tokens == {}
    d = three_stage(p)  # stepopt's rule counts the chunk's blocks only
    assert d.tokens == {"w": 64} and evaluate(p, d).feasible


def test_vllm_rejects_an_unknown_policy():
    with pytest.raises(InputError, match="policy"):
        vllm_v1(make_problem(), policy="lifo")


# ---- Sarathi-Serve -------------------------------------------------------------------------


def test_sarathi_decodes_then_partial_then_new_prefills():
    p = make_problem(
        [prefill("p0", 300, 100), decode("d0"), decode("d1")],
        [waiting("w0", 500), waiting("w1", 500, arrival_time=1)],
        max_num_scheduled_tokens=512,
    )
    assert sarathi(p).tokens == {"d0": 1, "d1": 1, "p0": 200, "w0": 310}
    assert sarathi(p, chunk_size=128).tokens == {"d0": 1, "d1": 1, "p0": 126}


def test_sarathi_never_starts_a_prefill_while_a_decode_waits():
    p = make_problem([decode("d0"), decode("d1"), prefill("p0")], max_num_scheduled_tokens=1)
    d = sarathi(p)
    assert d.tokens == {"d0": 1} and evaluate(p, d).feasible


def test_sarathi_respects_threshold_and_min_chunk():
    p = make_problem(
        [decode("d0")],
        [waiting("w0", 1000), waiting("w1", 1000, arrival_time=1)],
        max_num_scheduled_tokens=1000,
        long_prefill_token_threshold=600,
        min_prefill_chunk=500,
    )
    d = sarathi(p)  # w0 gets 600; 399 left is under w1's smallest chunk (500)
    assert d.tokens == {"d0": 1, "w0": 600} and evaluate(p, d).feasible


def test_sarathi_rejects_a_bad_chunk_size():
    with pytest.raises(InputError, match="chunk_size"):
        sarathi(make_problem(), chunk_size=0)


# ---- three-stage ---------------------------------------------------------------------------


def test_three_stage_hits_a_reachable_target_exactly():
    # 5 ms + 50 us per token: T = 10 ms is 100 tokens: 4 decodes and a 96-token chunk.
    for objective in ("target", "goodput"):
        p = make_problem(
            [decode(f"d{k}") for k in range(4)],
            [waiting("w0", 200), waiting("w1", 200, arrival_time=1)],
            latency=linear_latency(),
            target_ms=10.0,
            objective=objective,
        )
        d = three_stage(p)
        ev = evaluate(p, d)
        assert ev.feasible and ev.latency_ns == 10_000_000
        assert d.tokens == {"d0": 1, "d1": 1, "d2": 1, "d3": 1, "w0": 96}


def test_three_stage_target_may_overshoot_when_closer():
    # 40 tokens of budget left is under the 64-token min chunk: 104 tokens (10.2 ms) is closer
    # to T = 10.15 ms than 4 decodes alone (5.2 ms).
    p = make_problem(
        [decode(f"d{k}") for k in range(4)],
        [waiting("w0", 200)],
        latency=linear_latency(),
        target_ms=10.15,
        min_prefill_chunk=100,
    )
    d = three_stage(p)
    assert d.tokens == {"d0": 1, "d1": 1, "d2": 1, "d3": 1, "w0": 100}


def test_three_stage_finds_the_dip_of_a_non_monotone_curve():
    # F_tok rises to 10 ms at 100 tokens, drops to 5 ms at 101 (a tile boundary), then climbs.
    lat = LatencyModel(
        tokens=PiecewiseLinear((0, 100, 101, 400), (0, 10_000_000, 5_000_000, 20_000_000))
    )
    p = make_problem(
        [],
        [waiting("w0", 500)],
        latency=lat,
        target_ms=8.0,
        objective="goodput",
        min_prefill_chunk=1,
    )
    # Largest S with F(S) <= 8 ms: 5 ms + 15 ms * (S - 101) / 299 <= 8 ms -> S = 160.
    assert three_stage(p).tokens == {"w0": 160}


def test_three_stage_stage2_order_and_running_first():
    # Running prefills by priority then most remaining; the budget runs out inside them, so
    # no waiting request is admitted.
    p = make_problem(
        [
            decode("d0"),
            prefill("small", 200, 100),
            prefill("big", 900, 100),
            prefill("late", 900, 100, priority=1),
        ],
        [waiting("w0", 100)],
        latency=linear_latency(),
        target_ms=1000.0,
        max_num_scheduled_tokens=1000,
    )
    d = three_stage(p)
    assert d.tokens == {"d0": 1, "big": 800, "small": 100, "late": 99}
    assert evaluate(p, d).feasible


def test_three_stage_skips_a_running_chunk_below_min_but_fills_smaller_ones():
    p = make_problem(
        [decode("d0"), prefill("big", 900, 100), prefill("tiny", 110, 100)],
        latency=linear_latency(),
        target_ms=1000.0,
        max_num_scheduled_tokens=40,
        min_prefill_chunk=64,
    )
    # 39 tokens left: big's smallest chunk is 64, tiny's whole remainder (10) fits.
    assert three_stage(p).tokens == {"d0": 1, "tiny": 10}


def test_three_stage_stops_admitting_when_kv_blocks_run_out():
    p = make_problem(
        [decode("d0", 32)],
        [waiting("w0", 64), waiting("w1", 64, arrival_time=1)],
        latency=linear_latency(),
        target_ms=1000.0,
        block_size=16,
        num_free_blocks=6,
        min_prefill_chunk=16,
    )
    # d0 needs 1 block, w0 4 blocks, 1 block left: w1 gets one block's worth (16 tokens).
    d = three_stage(p)
    assert d.tokens == {"d0": 1, "w0": 64, "w1": 16}
    assert evaluate(p, d).new_blocks == 6
    # With a 64-token smallest chunk, w1 cannot start in one block.
    p64 = p.with_changes(config=replace(p.config, min_prefill_chunk=64))
    assert three_stage(p64).tokens == {"d0": 1, "w0": 64}


def test_three_stage_plan_reports_its_latency_and_candidates():
    p = make_problem(
        [decode(f"d{k}") for k in range(8)],
        [waiting(f"w{k}", 300, arrival_time=k) for k in range(6)],
        target_ms=40.0,
    )
    pl = plan(p)
    assert pl.latency_ns == evaluate(p, pl.decision).latency_ns
    assert pl.candidates >= 1 and 0 <= pl.slots <= 6


def test_three_stage_below_the_running_count_bisects_on_decodes():
    # An overloaded step: k decodes cost 1 ms + k * 51.095 us, so T = 1.169 ms fits 3 of 4.
    lat = linear_latency(per_token_ns=21_355, base_ns=1_000_000, per_request_ns=29_740)
    p = make_problem(
        [decode(f"d{k}", 40, priority=k % 2) for k in range(4)],
        latency=lat,
        target_ms=1.169,
        objective="goodput",
    )
    d = three_stage(p)
    assert d.tokens == {"d0": 1, "d2": 1, "d1": 1}  # by priority, then queue order
    assert evaluate(p, d).feasible


def _weighted_gap_state(priority_mode: str):
    # The gap-study pattern: a large min chunk, a running prefill and the first waiting
    # requests too big for the target, a small prompt later in the queue.
    return make_problem(
        [decode(f"d{k}") for k in range(4)] + [prefill("big", 1000, 0)],
        [
            waiting("w0", 4000),
            waiting("w1", 2000, arrival_time=1),
            waiting("w2", 100, arrival_time=2),
        ],
        latency=linear_latency(),  # 5 ms + 50 us per token
        target_ms=10.2,  # 4 decodes + 100 tokens
        long_prefill_token_threshold=512,
        min_prefill_chunk=512,
        priority_mode=priority_mode,
    )


def test_three_stage_weighted_mode_skips_what_does_not_fit():
    strict = _weighted_gap_state("strict")
    # Strict: Running > Waiting and the waiting order bind; big's 512-token chunk overshoots
    # by 20.6 ms, so the decodes alone (5.2 ms) are the closest.
    assert three_stage(strict).tokens == {f"d{k}": 1 for k in range(4)}
    # Weighted: big, w0 and w1 do not fit under the target and are skipped; w2 does.
    weighted = _weighted_gap_state("weighted")
    d = three_stage(weighted)
    assert d.tokens == {**{f"d{k}": 1 for k in range(4)}, "w2": 100}
    ev = evaluate(weighted, d)
    assert ev.feasible and ev.deviation_ns == 0
    assert ev.deviation_ns < evaluate(weighted, three_stage(strict)).deviation_ns


def test_three_stage_weighted_mode_skips_a_request_short_of_kv_blocks():
    p = make_problem(
        [decode("d0", 32)],
        [waiting("w0", 64), waiting("w1", 640, arrival_time=1), waiting("w2", 32, arrival_time=2)],
        latency=linear_latency(),
        target_ms=1000.0,
        block_size=16,
        num_free_blocks=6,
        min_prefill_chunk=32,
        priority_mode="weighted",
    )
    # d0 1 block, w0 4: one block left, under w1's 32-token smallest chunk (2 blocks)...
    assert three_stage(p.with_changes(priority_mode="strict")).tokens == {"d0": 1, "w0": 64}
    # ... and under w2's (2 blocks) too; with 7 blocks w1 is skipped and w2 fits.
    p7 = p.with_changes(config=replace(p.config, num_free_blocks=7))
    assert three_stage(p7.with_changes(priority_mode="strict")).tokens == {
        "d0": 1,
        "w0": 64,
        "w1": 32,
    }
    p7m = p7.with_changes(config=replace(p7.config, min_prefill_chunk=48))
    # min chunk 48: w1 needs 3 blocks (skipped), w2's whole 32-token prompt needs 2.
    assert three_stage(p7m.with_changes(priority_mode="strict")).tokens == {"d0": 1, "w0": 64}
    d = three_stage(p7m)
    assert d.tokens == {"d0": 1, "w0": 64, "w2": 32}
    assert evaluate(p7m, d).feasible


def test_three_stage_reserve_full_prompt_gates_admission():
    p = make_problem(
        [decode("d0", 32)],
        [waiting("w0", 64), waiting("w1", 640, arrival_time=1), waiting("w2", 32, arrival_time=2)],
        latency=linear_latency(),
        target_ms=1000.0,
        block_size=16,
        num_free_blocks=10,
        min_prefill_chunk=16,
    )
    # By the chunk's blocks: w1 gets the 5 blocks left (80 tokens).
    assert three_stage(p).tokens == {"d0": 1, "w0": 64, "w1": 80}
    # Its whole prompt needs 40 blocks: with the gate it is not admitted, and strict mode
    # stops there; weighted mode goes on to w2 (2 blocks).
    assert three_stage(p, reserve_full_prompt=True).tokens == {"d0": 1, "w0": 64}
    pw = p.with_changes(priority_mode="weighted")
    d = three_stage(pw, reserve_full_prompt=True)
    assert d.tokens == {"d0": 1, "w0": 64, "w2": 32}
    assert evaluate(pw, d).feasible
    # The tokens scheduled stay the chunk: a 640-token prompt that fits is cut by the budget.
    big = p.with_changes(
        config=replace(p.config, num_free_blocks=100, max_num_scheduled_tokens=200)
    )
    assert three_stage(big, reserve_full_prompt=True).tokens == {"d0": 1, "w0": 64, "w1": 135}
    # Without a KV limit the gate changes nothing.
    free = p.with_changes(config=replace(p.config, num_free_blocks=None))
    assert three_stage(free, reserve_full_prompt=True) == three_stage(free)


def test_three_stage_rejects_a_non_boolean_flag():
    with pytest.raises(InputError, match="reserve_full_prompt"):
        three_stage(make_problem(), reserve_full_prompt="maybe")
