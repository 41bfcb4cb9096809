"""From a decision to vLLM's knobs, without vLLM: the steering plan and its undo."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepopt.errors import MissingExtraError
from stepopt.integrations.vllm import (
    SchedulerView,
    apply_steering,
    plan_steering,
    restore_steering,
)
from stepopt.integrations.vllm_read import _make_request
from stepopt.model import Decision, Request
from stepopt.testing.factories import decode, make_problem, prefill, waiting
from stepopt.testing.strategies import problems


def view(running=(), waits=(), **config):
    config.setdefault("min_prefill_chunk", 1)
    return SchedulerView(make_problem(running, waits, **config), "fcfs")


RUNNING = [decode("d0", 300), prefill("p1", 900, 100), decode("d2", 500), prefill("p3", 600, 0)]
WAITING = [waiting("w0", 300, arrival_time=1.0), waiting("w1", 500, arrival_time=2.0)]


def test_full_running_and_a_waiting_prefix_is_exact_without_reordering():
    v = view(RUNNING, WAITING, long_prefill_token_threshold=400)
    d = Decision.of({"d0": 1, "p1": 400, "d2": 1, "p3": 400, "w0": 300, "w1": 120})
    s = plan_steering(v, d)
    assert s.exact and s.reason == ""
    assert s.token_budget == 1222 and s.admit == 2 and s.order is None
    assert dict(s.tokens) == d.tokens
    assert s.predicted_ns == v.problem.latency.predict_ns(v.problem, d.tokens)


def test_one_partial_running_request_is_served_after_the_full_ones():
    v = view(RUNNING, WAITING)
    d = Decision.of({"d0": 1, "p1": 50, "d2": 1})
    s = plan_steering(v, d)
    assert s.exact
    assert s.order == ("d0", "d2", "p1", "p3")  # p3 gets nothing: the budget ends before it
    assert s.token_budget == 52 and s.admit == 0


@pytest.mark.parametrize(
    ("tokens", "why"),
    [
        ({"d0": 1, "d2": 1, "p1": 50, "p3": 60}, "2 running requests get partial chunks"),
        ({"d0": 1, "d2": 1, "p1": 800, "p3": 600, "w1": 500}, "not a prefix"),
        ({"d0": 1, "d2": 1, "p1": 800, "p3": 600, "w0": 200, "w1": 100}, "not the last admitted"),
        ({"d0": 1, "p1": 800, "p3": 600, "w0": 300}, "running ones get less than a full chunk"),
        ({"d0": 1, "d2": 1, "p1": 900, "p3": 600}, "p1 gets 900 > 800 tokens"),
    ],
)
def test_shapes_vllm_greedy_cannot_produce_are_flagged(tokens, why):
    v = view(RUNNING, WAITING)
    s = plan_steering(v, Decision.of(tokens))
    assert not s.exact
    assert why in s.reason
    assert s.token_budget == sum(tokens.values())
    assert s.predicted_ns == v.problem.latency.predict_ns(v.problem, tokens)


def fake_scheduler(ids):
    reqs = [SimpleNamespace(request_id=i) for i in ids]
    return SimpleNamespace(
        running=reqs, max_num_scheduled_tokens=2048, max_num_active_reqs=64
    ), reqs


def test_apply_then_restore_puts_back_limits_and_admission_order():
    sched, reqs = fake_scheduler(["d0", "p1", "d2", "p3"])
    running_list = sched.running
    s = plan_steering(view(RUNNING, WAITING), Decision.of({"d0": 1, "p1": 50, "d2": 1}))
    saved = apply_steering(sched, s)
    assert [r.request_id for r in sched.running] == ["d0", "d2", "p1", "p3"]
    assert sched.max_num_scheduled_tokens == 52
    assert sched.max_num_active_reqs == 4  # running + 0 admitted
    # During the step vLLM preempts p3 and (say) admits a new request.
    sched.running.remove(reqs[3])
    sched.running.append(SimpleNamespace(request_id="w0"))
    restore_steering(sched, saved)
    assert sched.running is running_list  # the same list object, edited in place
    assert [r.request_id for r in sched.running] == ["d0", "p1", "d2", "w0"]
    assert sched.max_num_scheduled_tokens == 2048 and sched.max_num_active_reqs == 64


def test_admission_limit_never_exceeds_vllms_own():
    sched, _ = fake_scheduler(["d0", "p1", "d2", "p3"])
    sched.max_num_active_reqs = 5
    tokens = {"d0": 1, "d2": 1, "p1": 800, "p3": 600, "w0": 300, "w1": 10}
    saved = apply_steering(sched, plan_steering(view(RUNNING, WAITING), Decision.of(tokens)))
    assert sched.max_num_active_reqs == 5
    restore_steering(sched, saved)


def test_scheduler_class_without_vllm_is_a_clear_missing_extra(monkeypatch):
    import stepopt.integrations
    import stepopt.integrations.vllm as adapter

    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")] + ["vllm"]:
        monkeypatch.setitem(sys.modules, name, None)  # importing vllm now fails
    monkeypatch.delitem(sys.modules, "stepopt.integrations.vllm_scheduler", raising=False)
    monkeypatch.delattr(stepopt.integrations, "vllm_scheduler", raising=False)
    monkeypatch.delitem(vars(adapter), "OptimizedScheduler", raising=False)
    with pytest.raises(MissingExtraError, match=r"stepopt\[vllm\]"):
        adapter.OptimizedScheduler  # noqa: B018
    with pytest.raises(AttributeError):
        adapter.NoSuchThing  # noqa: B018


def test_fast_request_constructor_builds_equal_requests():
    assert _make_request is not Request  # the fast path is in use
    fast = _make_request("a", 900, 100, 2, 1.5)
    assert fast == Request("a", 900, 100, 2, 1.5)
    assert hash(fast) == hash(Request("a", 900, 100, 2, 1.5))
    assert fast.output_tokens is None and not fast.is_decode and fast.remaining_prompt == 800
    with pytest.raises(AttributeError):
        fast.prompt_tokens = 1  # still frozen


@given(data=st.data(), problem=problems(max_requests=8, preset="demo"))
@settings(max_examples=150)
def test_plan_predicts_exactly_the_latency_model(data, problem):
    """Any decision, steerable or not: the plan's prediction is the latency model's."""
    ids = [r.id for r in problem.requests] + ["ghost"]
    tokens = data.draw(st.dictionaries(st.sampled_from(ids), st.integers(-2, 3000)))
    s = plan_steering(SchedulerView(problem, "fcfs"), Decision(tokens=tokens))
    positive = {k: v for k, v in tokens.items() if v > 0}
    assert s.predicted_ns == problem.latency.predict_ns(problem, positive)
    assert s.token_budget == sum(positive.values())


def test_no_reorder_when_vllm_may_preempt_so_its_victim_stays_the_newest():
    # p1 gets a partial chunk; with ample blocks it moves behind the decodes...
    d = Decision.of({"d0": 1, "p1": 50, "d2": 1})
    assert plan_steering(view(RUNNING, WAITING, num_free_blocks=100), d).order is not None
    # ...but when the running requests' blocks may not fit, vLLM's order (and so its FCFS
    # victim, the tail) is kept, and the step is flagged as not the decision.
    s = plan_steering(view(RUNNING, WAITING, num_free_blocks=2), d)  # p1 needs 3
    assert s.order is None and not s.exact and "preemption victim" in s.reason


class _Refusing(SimpleNamespace):
    """A scheduler whose admission limit cannot be set (a fault half-way through applying)."""

    def __setattr__(self, name, value):
        if name == "max_num_active_reqs" and value != 64 and "max_num_active_reqs" in vars(self):
            raise RuntimeError("refused")
        super().__setattr__(name, value)


def test_apply_is_all_or_nothing():
    reqs = [SimpleNamespace(request_id=i) for i in ["d0", "p1", "d2", "p3"]]
    sched = _Refusing(running=list(reqs), max_num_scheduled_tokens=2048, max_num_active_reqs=64)
    s = plan_steering(view(RUNNING, WAITING), Decision.of({"d0": 1, "p1": 50, "d2": 1}))
    assert s.order is not None
    with pytest.raises(RuntimeError, match="refused"):
        apply_steering(sched, s)
    assert sched.running == reqs  # admission order back
    assert sched.max_num_scheduled_tokens == 2048 and sched.max_num_active_reqs == 64
