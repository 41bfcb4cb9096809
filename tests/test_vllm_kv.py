"""Under KV pressure (real vLLM on the CPU): the steering keeps vLLM's preemption victim, and
the default decision rule admits only what vLLM's whole-prompt admission check lets in."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="needs the optional vLLM package: pip install 'stepopt[vllm]'")

from stepopt.heuristics.base import register_heuristic
from stepopt.heuristics.vllm_v1 import vllm_v1
from stepopt.integrations import vllm as adapter
from stepopt.integrations.vllm_settings import SchedulerSettings
from stepopt.integrations.vllm_testing import make_scheduler, random_scenario, run_scenario
from stepopt.model import Decision

pytestmark = pytest.mark.vllm


def _partial_first(problem):
    """vLLM's own step, except that the first running prefill it serves in full gets 16
    tokens fewer (so the steering must move it behind the others)."""
    tokens = dict(vllm_v1(problem, lone_request_rule=False).tokens)
    for r in problem.running_prefills:
        if tokens.get(r.id, 0) == problem.hi(r) > 32:
            tokens[r.id] -= 16
            break
    return Decision.of(tokens)


@pytest.fixture(autouse=True)
def _registered():
    from stepopt.heuristics import base

    register_heuristic("test-vllm-partial-first")(_partial_first)
    yield
    base._HEURISTICS.pop("test-vllm-partial-first", None)


@pytest.mark.parametrize("seed", [0, 17, 24, 38])  # FCFS scenarios where vLLM preempts
def test_vllms_fcfs_victim_is_kept_the_newest_running_request(seed):
    sc = random_scenario(seed)
    assert sc["kwargs"]["policy"] == "fcfs"
    s = make_scheduler(
        adapter.OptimizedScheduler,
        async_scheduling=sc["lag"],
        stepopt_settings=SchedulerSettings(
            target_ms=1000.0,
            heuristic="test-vllm-partial-first",
            log_interval=0,
            fast_decode_steps=0,
            fast_whole_steps=False,
        ),
        **sc["kwargs"],
    )
    before: list[str] = []
    checked = [0, 0]  # preemptions, of which in steps whose decision wanted a reorder

    def on_step(out):
        victims = list(out.preempted_req_ids)
        if victims:
            # FCFS pops the running queue's tail, as plain vLLM would: the newest admissions.
            assert set(victims) == set(before[len(before) - len(victims) :]), (victims, before)
            checked[0] += 1
            checked[1] += "preemption victim" in (s.stepopt.last or {}).get("reason", "")

    orig = s.schedule

    def schedule(*a, **k):
        before[:] = [r.request_id for r in s.running]
        return orig(*a, **k)

    s.schedule = schedule
    run_scenario(s, sc, on_step=on_step)
    assert checked[1] > 0, checked  # the reorder was declined where vLLM had to preempt


def test_default_rule_admits_only_what_vllm_admits():
    """Three-stage with vLLM's full-prompt admission (the default): on random scenarios under
    KV pressure vLLM carries out nearly every steered step exactly; without it, far fewer."""
    exact = {True: [0, 0], False: [0, 0]}
    for seed in range(6):
        sc = random_scenario(seed)
        for reserve in (True, False):
            rule = "three-stage" if reserve else "three-stage[reserve_full_prompt=false]"
            s = make_scheduler(
                adapter.OptimizedScheduler,
                async_scheduling=sc["lag"],
                stepopt_settings=SchedulerSettings(
                    target_ms=30.0, objective="goodput", heuristic=rule, log_interval=0
                ),
                **sc["kwargs"],
            )
            assert s.stepopt.params.get("reserve_full_prompt") is reserve
            run_scenario(s, sc)
            exact[reserve][0] += s.stepopt.exact
            exact[reserve][1] += s.stepopt.steered
    share = {k: e / n for k, (e, n) in exact.items()}
    assert share[True] >= 0.99, exact
    assert share[False] < share[True] - 0.1, exact
