"""Generated traces and engines: every policy, validated every step, serves every request
exactly once, within the engine's limits."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stepopt.model import EngineConfig
from stepopt.simulate import FixedTarget, SimConfig, make_policy, make_trace, simulate
from stepopt.simulate.engine import FINISHED, REJECTED
from stepopt.testing.factories import linear_latency

LAT = linear_latency(
    per_token_ns=40_000, base_ns=4_000_000, per_request_ns=30_000, decode_context_ps=5_000
)


@st.composite
def setups(draw):
    n = draw(st.integers(1, 10))
    prompts = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, 15), min_size=n, max_size=n))
    arrivals = sorted(draw(st.lists(st.floats(0, 0.2), min_size=n, max_size=n)))
    prios = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    block = draw(st.sampled_from([4, 16]))
    engine = EngineConfig(
        max_num_scheduled_tokens=draw(st.sampled_from([32, 128, 512])),
        max_num_running_reqs=draw(st.integers(1, 6)),
        long_prefill_token_threshold=draw(st.sampled_from([0, 48])),
        min_prefill_chunk=draw(st.sampled_from([1, 16, 32])),
        block_size=block,
    )
    kv = draw(st.sampled_from([None, 12, 30, 200]))
    policy = draw(st.sampled_from(["three-stage", "sarathi", "vllm-v1", "vllm-v1-priority"]))
    return make_trace(prompts, outputs, arrivals, prios), engine, kv, policy


@settings(max_examples=150)
@given(setups())
def test_every_request_is_served_within_the_limits(setup):
    trace, engine, kv, policy = setup
    cfg = SimConfig(engine=engine, kv_blocks=kv, validate=True)
    # A target far above any step: every policy wants to schedule (none may stall).
    res = simulate(trace, make_policy(policy), LAT, FixedTarget(10_000.0), cfg)
    bs = engine.block_size
    for s in res.requests:
        if kv is not None and -(-(s.prompt + s.output - 1) // bs) > kv:
            assert s.where == REJECTED
            continue
        assert s.where == FINISHED
        assert len(s.times) == s.output
        assert s.first_ns - s.arrival_ns > 0
        assert list(s.times) == sorted(s.times)
    steps = res.steps
    assert max(steps["scheduled_tokens"], default=0) <= engine.max_num_scheduled_tokens
    running_after = np.array([0, *steps["n_running"]]) + np.array([0, *steps["n_admitted"]])
    assert running_after.max() <= engine.max_num_running_reqs
    if kv is not None:
        assert min(steps["free_blocks"], default=0) >= 0
    if res.stats["preemptions"] == 0:
        # Without recompute every prompt token is scheduled exactly once.
        done = [s for s in res.requests if s.where == FINISHED]
        assert sum(steps["prefill_tokens"]) == sum(s.prompt for s in done)
        assert sum(steps["decode_tokens"]) == sum(s.output - 1 for s in done)
