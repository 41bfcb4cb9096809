"""Planning ahead (real vLLM on the CPU): a step planned right after ``update_from_output()``
gets the same decision as one planned inside ``schedule()``, and a plan is dropped whenever
the state changes before ``schedule()``."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="needs the optional vLLM package: pip install 'stepopt[vllm]'")

from vllm.v1.request import RequestStatus

from stepopt.integrations import vllm as adapter
from stepopt.integrations.vllm_settings import SchedulerSettings
from stepopt.integrations.vllm_testing import (
    make_request,
    make_scheduler,
    random_scenario,
    run_scenario,
    step,
)

pytestmark = pytest.mark.vllm


def _run(sc, plan_ahead, objective, target_ms):
    s = make_scheduler(
        adapter.OptimizedScheduler,
        async_scheduling=sc["lag"],
        enable_prefix_caching=sc.get("token") is not None,
        stepopt_settings=SchedulerSettings(
            target_ms=target_ms, objective=objective, log_interval=0, plan_ahead=plan_ahead
        ),
        **sc["kwargs"],
    )
    steps = []
    used = [0, 0]  # steered steps planned ahead, ahead_used so far

    def on_step(out):
        rec = dict(s.stepopt.last or {})
        steps.append((dict(out.num_scheduled_tokens), sorted(out.preempted_req_ids), rec))
        if s.stepopt.ahead_used > used[1] and "exact" in rec:
            used[0] += 1
        used[1] = s.stepopt.ahead_used

    run_scenario(s, sc, on_step=on_step)
    s.steered_ahead = used[0]
    return s, steps


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("objective", "target_ms"), [("goodput", 30.0), ("target", 20.0)])
def test_planning_ahead_gives_the_same_decisions_step_for_step(seed, objective, target_ms):
    sc = random_scenario(seed, kv_pressure=seed % 2 == 0)
    if seed % 3 == 0:
        sc["token"] = 5  # one token for all prompts: shared prefixes, prefix caching on
    inline, a = _run(sc, False, objective, target_ms)
    ahead, b = _run(sc, True, objective, target_ms)
    assert len(a) == len(b)
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x == y, f"step {k}"
    assert inline.stepopt.ahead_used == 0
    # Most steps were planned ahead (arrivals and aborts drop the plan of their step).
    assert ahead.stepopt.ahead_used >= 0.5 * ahead.stepopt.steps
    assert ahead.stepopt.steered == inline.stepopt.steered > 0
    if inline.stepopt.steered >= 10:  # steered steps, not only the fast paths, planned ahead
        assert ahead.steered_ahead >= 0.25 * ahead.stepopt.steered


@pytest.mark.parametrize("seed", [5, 7, 12, 16])  # FCFS under KV pressure, many arrivals kept
def test_arrivals_that_keep_the_plan_change_no_decision(seed):
    sc = random_scenario(seed)
    _, a = _run(sc, False, "goodput", 30.0)
    ahead, b = _run(sc, True, "goodput", 30.0)
    assert a == b
    assert ahead.stepopt.kept >= 5


def _mixed(plan_ahead=True, short=4):
    """4 long prefills that use the whole budget, and ``short`` requests left waiting."""
    s = make_scheduler(
        adapter.OptimizedScheduler,
        max_num_seqs=64,
        max_num_batched_tokens=2048,
        long_prefill_token_threshold=512,
        stepopt_settings=SchedulerSettings(
            target_ms=1000.0, objective="goodput", log_interval=0, plan_ahead=plan_ahead
        ),
    )
    for n in range(4 + short):
        s.add_request(make_request(f"p{n}", 3000 if n < 4 else 300, max_tokens=500))
    step(s)
    return s


def test_a_change_the_plan_may_see_drops_it():
    s = _mixed(short=0)
    assert s.stepopt._ahead is not None  # planned after update_from_output
    s.add_request(make_request("late", 100))  # the plan read the whole (empty) queue
    assert s.stepopt._ahead is None
    step(s)
    assert s.stepopt.ahead_used == 0
    s.finish_requests(["late"], RequestStatus.FINISHED_ABORTED)
    assert s.stepopt._ahead is None
    step(s)
    assert s.stepopt.ahead_used == 0
    step(s)
    assert s.stepopt.ahead_used == 1


def test_an_arrival_past_the_plans_reach_keeps_it():
    outs = []
    for plan_ahead in (True, False):
        s = _mixed(plan_ahead)
        s.add_request(make_request("late", 100))  # behind 4 waiting the budget cannot reach
        outs.append(dict(step(s).num_scheduled_tokens))
        assert s.stepopt.ahead_used == s.stepopt.kept == int(plan_ahead)
        assert s.stepopt.steered == 2  # both steps steered: the budget binds
    assert outs[0] == outs[1]


def test_a_change_past_the_hooks_fails_the_fingerprint():
    s = _mixed()
    assert s.stepopt._ahead is not None
    budget = s.max_num_scheduled_tokens
    s.max_num_scheduled_tokens = 1000  # changed without any scheduler method
    out = step(s)
    assert s.stepopt.ahead_used == 0
    assert out.total_num_scheduled_tokens <= 1000  # planned for the state as it is
    s.max_num_scheduled_tokens = budget
