"""Minimal reproductions of the replay differences docs/vllm.md lists (real vLLM, CPU)."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="needs the optional vLLM package: pip install 'stepopt[vllm]'")

from stepopt.heuristics.vllm_v1 import vllm_v1
from stepopt.integrations import vllm as adapter
from stepopt.integrations.vllm_testing import fake_output, make_request, make_scheduler
from stepopt.latency.presets import load_preset

pytestmark = pytest.mark.vllm
DEMO = load_preset("demo")


def read(s):
    return adapter.problem_from_scheduler(s, latency=DEMO, target_latency_ms=50.0)


def test_a_lone_new_request_while_anothers_last_token_is_in_flight():
    """(a) Async scheduling: "a" (max_tokens 1) has its only token in flight, so vLLM's running
    loop skips it and the problem leaves it out; "b" arrives. vLLM counts two requests and caps
    b at the threshold (64); the problem shows b alone. The adapter reads vLLM's threshold, so
    the replay must not lift it again for a lone request: ``lone_request_rule=False``."""
    s = make_scheduler(max_num_batched_tokens=512, long_prefill_token_threshold=64)
    s.add_request(make_request("a", 10, max_tokens=1))
    first = s.schedule()  # a's prefill; its sampled token is in flight (no output yet)
    s.add_request(make_request("b", 600, arrival_time=1.0))
    view = read(s)
    assert view.skipped_running == ("a",) and [r.id for r in view.problem.requests] == ["b"]
    assert view.problem.config.long_prefill_token_threshold == 64
    # The replay with the lone-request rule re-applied (the old behaviour) gives b 512...
    assert vllm_v1(view.problem).tokens == {"b": 512}
    # ...without it, what vLLM does.
    predicted = vllm_v1(view.problem, lone_request_rule=False)
    out = s.schedule()
    assert dict(out.num_scheduled_tokens) == dict(predicted.tokens) == {"b": 64}
    s.update_from_output(first, fake_output(s, first))


def test_the_optimized_scheduler_steers_with_vllms_threshold_in_that_case():
    """The steered step of (a) uses the problem's threshold (64) and is carried out exactly."""
    from stepopt.integrations.vllm_settings import SchedulerSettings

    s = make_scheduler(
        adapter.OptimizedScheduler,
        max_num_batched_tokens=512,
        long_prefill_token_threshold=64,
        stepopt_settings=SchedulerSettings(
            target_ms=1000.0, objective="goodput", log_interval=0, fast_whole_steps=False
        ),
    )
    s.add_request(make_request("a", 10, max_tokens=1))
    s.schedule()
    s.add_request(make_request("b", 600, arrival_time=1.0))
    out = s.schedule()
    assert dict(out.num_scheduled_tokens) == {"b": 64} and s.stepopt.last["exact"]


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_b_a_request_whose_last_token_is_in_flight_can_be_the_victim(policy):
    """(b) Async scheduling, KV full: "x" (lowest priority, admitted last) has its only token
    in flight, so the running loop skips it and the problem leaves it out. "a" needs a new
    block for its next token: vLLM preempts x (the tail under FCFS, the lowest priority under
    the priority policy); the replay, which cannot see x, preempts a itself. Documented, not
    fixed: the step problem has no request that holds blocks but gets no tokens."""
    s = make_scheduler(num_blocks=4, max_num_batched_tokens=512, policy=policy)  # 3 usable
    s.add_request(make_request("a", 32, max_tokens=50, priority=0))
    s.add_request(make_request("x", 10, max_tokens=1, priority=5, arrival_time=1.0))
    s.schedule()  # a: 2 blocks, x: 1 block; their sampled tokens are in flight
    view = read(s)
    assert view.skipped_running == ("x",) and view.problem.config.num_free_blocks == 0
    predicted = vllm_v1(view.problem, policy, lone_request_rule=False)
    out = s.schedule()
    assert set(out.preempted_req_ids) == {"x"} and dict(out.num_scheduled_tokens) == {"a": 1}
    assert predicted.preempted == ("a",) and predicted.tokens == {}
