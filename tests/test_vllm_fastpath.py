"""The whole-step fast path against real vLLM: a step left to vLLM serves every request its
full chunk, and its predicted latency is within the bound, which is within the target."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="needs the optional vLLM package: pip install 'stepopt[vllm]'")

from stepopt.integrations import vllm as adapter
from stepopt.integrations.vllm_settings import SchedulerSettings
from stepopt.integrations.vllm_testing import make_scheduler, random_scenario, run_scenario
from stepopt.latency.presets import load_preset

pytestmark = pytest.mark.vllm
DEMO = load_preset("demo")


@pytest.mark.parametrize("prefix", [False, True], ids=["plain", "prefix-cache"])
@pytest.mark.parametrize("seed", [2, 5, 9])
def test_steps_left_to_vllm_are_full_and_within_their_bound(seed, prefix):
    sc = random_scenario(seed, kv_pressure=seed % 2 == 1)
    sc["kwargs"]["enable_prefix_caching"] = prefix
    if prefix:
        sc["token"] = 3  # shared prefixes
    target = 30.0
    s = make_scheduler(
        adapter.OptimizedScheduler,
        async_scheduling=sc["lag"],
        stepopt_settings=SchedulerSettings(
            target_ms=target, objective="target", log_interval=0, fast_decode_steps=0
        ),
        **sc["kwargs"],
    )
    seen = {}
    orig = s.schedule

    def schedule(*a, **k):
        seen["view"] = adapter.problem_from_scheduler(
            s, latency=DEMO, target_latency_ms=target, min_prefill_chunk=1, prefix_cache_lookup=True
        )
        return orig(*a, **k)

    s.schedule = schedule
    whole = [0]

    def on_step(out):
        rec = s.stepopt.last
        if not rec or rec.get("path") != "whole":
            return
        whole[0] += 1
        p = seen["view"].problem
        got = out.num_scheduled_tokens
        # Everything the problem shows is served in full (an in-step prefix hit may only
        # shorten an admitted chunk), nothing is preempted.
        assert not out.preempted_req_ids
        assert {r.id for r in p.requests} == set(got)
        assert all(0 < got[r.id] <= p.hi(r) for r in p.requests)
        assert all(got[r.id] == p.hi(r) for r in p.running)
        assert DEMO.predict_ns(p, got) <= rec["predicted_max_ms"] * 1e6 <= target * 1e6

    run_scenario(s, sc, on_step=on_step)
    assert whole[0] >= 1
