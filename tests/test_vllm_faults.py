"""Faults injected at every stage of the optimized scheduler (real vLLM on the CPU): no fault
of stepopt's may make ``schedule()`` raise, lose a step or leave vLLM's state changed.

Before vLLM's ``schedule()`` (reading, deciding, planning, applying) a fault leaves the step to
vLLM: the run is step for step plain vLLM's. After it (restoring, recording, logging) the step
stands: the run is step for step the fault-free optimized run's.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="needs the optional vLLM package: pip install 'stepopt[vllm]'")

from stepopt.integrations import vllm as adapter
from stepopt.integrations import vllm_scheduler
from stepopt.integrations.vllm_settings import SchedulerSettings
from stepopt.integrations.vllm_testing import make_scheduler, random_scenario, run_scenario

pytestmark = pytest.mark.vllm


def _boom(*args, **kwargs):
    raise OSError(28, "No space left on device")


def _apply_then_fail(sched, steering):
    adapter.apply_steering(sched, steering)  # vLLM's limits changed, then the fault
    raise RuntimeError("fault while applying")


def _restore_then_fail(sched, saved):
    raise RuntimeError("fault while restoring")


# stage: (patch target in vllm_scheduler or on the controller, replacement)
BEFORE = {
    "reading": ("problem_from_scheduler", _boom),
    "checking": ("_check_supported", _boom),
    "bounding": ("whole_step_bound_ns", _boom),
    "deciding": ("heuristic", _boom),
    "planning": ("plan_steering", _boom),
    "applying": ("apply_steering", _apply_then_fail),
}
AFTER = {
    "restoring": ("restore_steering", _restore_then_fail),
    "recording": ("_record", _boom),
    "logging": ("_write", _boom),
}


def _run(scenario, cls=None, settings=None, patch=None, monkeypatch=None):
    kw = dict(scenario["kwargs"], async_scheduling=scenario["lag"])
    if settings is not None:
        kw["stepopt_settings"] = settings
    s = make_scheduler(cls, **kw)
    if patch is not None:
        name, fn = patch
        if hasattr(vllm_scheduler, name):
            monkeypatch.setattr(vllm_scheduler, name, fn)
        else:  # an attribute of this scheduler's controller
            monkeypatch.setattr(s.stepopt, name, fn)
    steps = []
    limits = (s.max_num_scheduled_tokens, s.max_num_active_reqs)

    def on_step(out):
        steps.append((dict(out.num_scheduled_tokens), sorted(out.preempted_req_ids)))
        assert (s.max_num_scheduled_tokens, s.max_num_active_reqs) == limits

    run_scenario(s, scenario, on_step=on_step)
    assert not s.has_requests()  # every request finished: no step lost its output
    return s, steps


def _settings(**kw):
    return SchedulerSettings(target_ms=25.0, objective="goodput", log_interval=0, **kw)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("stage", list(BEFORE))
def test_a_fault_before_vllms_step_leaves_the_step_to_vllm(stage, seed, monkeypatch):
    sc = random_scenario(seed)
    _, plain = _run(sc)
    opt, got = _run(sc, adapter.OptimizedScheduler, _settings(), BEFORE[stage], monkeypatch)
    assert got == plain
    assert sum(opt.stepopt.fallbacks.values()) >= 10


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("stage", list(AFTER))
def test_a_fault_after_vllms_step_keeps_the_step(stage, seed, monkeypatch, tmp_path):
    sc = random_scenario(seed)
    # (Recording arms the decode-only fast path: off, so that both runs ask the same rule.)
    st = _settings(step_log=str(tmp_path / "steps.jsonl"), fast_decode_steps=0)
    _, clean = _run(sc, adapter.OptimizedScheduler, st)
    opt, got = _run(sc, adapter.OptimizedScheduler, st, AFTER[stage], monkeypatch)
    assert got == clean
    if stage != "restoring" or opt.stepopt.steered:
        assert sum(opt.stepopt.errors.values()) > 0
    assert not opt.stepopt.fallbacks


def test_a_full_disk_under_the_step_log_loses_no_step():
    """The issue's case: the step log on a full disk (``/dev/full``: every write fails)."""
    sc = random_scenario(3)
    _, clean = _run(sc, adapter.OptimizedScheduler, _settings())
    opt, got = _run(sc, adapter.OptimizedScheduler, _settings(step_log="/dev/full"))
    assert got == clean
    assert any("No space left" in k for k in opt.stepopt.errors)
    opt.shutdown()  # closing the log fails too, quietly


# Planning ahead (after update_from_output) and keeping the plan on an arrival: a fault there
# drops the plan, so schedule() plans inline and the run is step for step the fault-free one.
AHEAD = {
    "fingerprint": "state_key",  # planning ahead fails at its end
    "planning ahead": "Ahead",  # the plan is made, then keeping it fails
    "keeping on arrival": "_keeps",  # an arrival that would keep the plan fails to
}


@pytest.mark.parametrize("seed", [7, 12])  # FCFS: some arrivals keep the plan
@pytest.mark.parametrize("stage", list(AHEAD))
def test_a_fault_while_planning_ahead_moves_the_planning_to_schedule(stage, seed, monkeypatch):
    sc = random_scenario(seed)
    _, clean = _run(sc, adapter.OptimizedScheduler, _settings())
    opt, got = _run(sc, adapter.OptimizedScheduler, _settings(), (AHEAD[stage], _boom), monkeypatch)
    assert got == clean
    assert not opt.stepopt.fallbacks and not opt.stepopt.errors and opt.stepopt.kept == 0
    if stage != "keeping on arrival":
        assert opt.stepopt.ahead_used == 0


@pytest.mark.parametrize("seed", [7, 12])
def test_those_scenarios_keep_plans_on_arrivals_without_faults(seed):
    """(So that the fault above is reached.)"""
    opt, _ = _run(random_scenario(seed), adapter.OptimizedScheduler, _settings())
    assert opt.stepopt.kept > 0 and opt.stepopt.ahead_used > 0
