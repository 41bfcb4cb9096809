"""The simulator: request lifecycle and clock by hand, KV preemption, validation, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from stepopt.errors import InputError
from stepopt.model import Decision, EngineConfig, StepProblem
from stepopt.simulate import (
    FixedTarget,
    HeuristicPolicy,
    Policy,
    SimConfig,
    SimulationError,
    make_trace,
    request_columns,
    simulate,
    summarize,
)
from stepopt.simulate.engine import FINISHED
from stepopt.testing.factories import linear_latency

MS = 1_000_000
LIN = linear_latency(per_token_ns=50_000, base_ns=5 * MS)  # 5 ms + 0.05 ms per token


def cfg(**kw) -> SimConfig:
    engine = {k: kw.pop(k) for k in list(kw) if k in EngineConfig.__dataclass_fields__}
    return SimConfig(engine=EngineConfig(**engine), **kw)


def run(trace, policy="three-stage", target=1000.0, **kw):
    pol = policy if isinstance(policy, Policy) else HeuristicPolicy(policy)
    return simulate(trace, pol, LIN, FixedTarget(target), cfg(**kw))


def token_times_ms(res, k: int) -> list[float]:
    return [t / MS for t in res.requests[k].times]


def test_lifecycle_by_hand():
    # One request, prompt 100, 3 output tokens: the prefill step (10 ms) emits the first token,
    # then one decode step (5.05 ms) per further token.
    res = run(make_trace([100], [3], [0.0]))
    assert res.num_steps == 3
    assert res.steps["scheduled_tokens"] == [100, 1, 1]
    assert res.steps["latency_ns"] == [10 * MS, 5_050_000, 5_050_000]
    assert token_times_ms(res, 0) == [10.0, 15.05, 20.1]
    cols = request_columns(res)
    assert cols["ttft_ms"][0] == pytest.approx(10.0)
    assert cols["e2e_ms"][0] == pytest.approx(20.1)
    assert cols["tbt_p50_ms"][0] == pytest.approx(5.05)
    assert cols["status"][0] == "finished"


def test_chunked_prefill_and_budget():
    # Budget 64: the 100-token prompt takes chunks of 64 and 36; TTFT = 8.2 + 6.8 ms.
    res = run(make_trace([100], [2], [0.0]), max_num_scheduled_tokens=64)
    assert res.steps["prefill_tokens"][:2] == [64, 36]
    assert token_times_ms(res, 0)[0] == pytest.approx(15.0)


def test_idle_engine_jumps_to_next_arrival():
    res = run(make_trace([100, 100], [1, 1], [0.0, 10.0]))
    assert res.steps["time_ns"] == [0, 10_000_000_000]
    assert token_times_ms(res, 1) == [10_010.0]
    assert res.stats["idle_jumps"] >= 1


def test_one_output_token_finishes_with_its_prompt():
    res = run(make_trace([40, 40], [1, 5], [0.0, 0.0]))
    cols = request_columns(res)
    assert list(cols["emitted_tokens"]) == [1, 5]
    assert cols["finish_s"][0] == cols["first_token_s"][0]


def test_concurrency_cap_holds_requests_back():
    res = run(make_trace([10] * 5, [4] * 5, [0.0] * 5), max_num_running_reqs=2)
    assert (
        max(r + a for r, a in zip(res.steps["n_running"], res.steps["n_admitted"], strict=True))
        <= 2
    )
    assert res.stats["finished"] == 5


@pytest.mark.parametrize("policy", ["three-stage", "sarathi", "vllm-v1", "vllm-v1-priority"])
def test_kv_preemption_recomputes_and_everyone_finishes(policy):
    # 3 requests of 100 + 100 tokens need 13 blocks each; 20 blocks force preemptions.
    tr = make_trace([100, 100, 100], [100, 100, 100], [0.0, 0.0, 0.0])
    res = run(tr, policy, block_size=16, kv_blocks=20)
    assert res.stats["finished"] == 3
    assert res.stats["preemptions"] > 0
    assert min(res.steps["free_blocks"]) >= 0
    cols = request_columns(res)
    assert list(cols["emitted_tokens"]) == [100, 100, 100]
    # Recompute: the prompt tokens processed exceed the prompts by what was thrown away.
    assert sum(res.steps["prefill_tokens"]) > 300
    # A preempted request waited: its largest gap is far above a normal decode step.
    k = int(np.argmax(cols["preemptions"]))
    assert cols["tbt_max_ms"][k] > 4 * cols["tbt_p50_ms"][k]


def test_request_larger_than_the_kv_cache_is_rejected():
    res = run(make_trace([10, 400], [5, 5], [0.0, 0.0]), block_size=16, kv_blocks=10)
    cols = request_columns(res)
    assert list(cols["status"]) == ["finished", "rejected"]
    assert summarize(res, 1000, 1000)["slo_attainment"] == 0.5


class _Fixed(Policy):
    """A test policy that returns a chosen decision at step 0, then defers to three-stage."""

    def __init__(self, first):
        super().__init__()
        self.name = "fixed"
        self._first = first
        self._next = HeuristicPolicy("three-stage")

    def decide(self, problem: StepProblem):
        if self._first is not None:
            d, self._first = self._first(problem), None
            return d, self.name
        return self._next.decide(problem)


def test_validate_names_the_step_and_the_rule():
    tr = make_trace([50, 50], [2, 2], [0.0, 0.0])
    skip_first = _Fixed(lambda p: Decision.of({p.waiting_order[1].id: 50}))
    with pytest.raises(SimulationError, match=r"step 0 .*rule priority_waiting_order"):
        run(tr, skip_first)
    # Without validation the engine applies it: the step is physically possible.
    res = run(tr, _Fixed(lambda p: Decision.of({p.waiting_order[1].id: 50})), validate=False)
    assert res.stats["finished"] == 2


@pytest.mark.parametrize(
    ("decision", "rule"),
    [
        (lambda p: Decision.of({p.waiting[0].id: 51}), "phase"),
        (lambda p: Decision.of({"nobody": 5}), "unknown_request"),
        (lambda p: Decision.of({p.waiting[0].id: 50, p.waiting[1].id: 50}), "budget"),
        (lambda p: Decision(tokens={p.waiting[0].id: 50}, preempted=("x",)), "preemption"),
    ],
)
def test_physical_rules_hold_without_validation(decision, rule):
    tr = make_trace([50, 50], [2, 2], [0.0, 0.0])
    with pytest.raises(SimulationError, match=f"step 0 .*rule {rule}"):
        run(tr, _Fixed(decision), validate=False, max_num_scheduled_tokens=64)


def test_a_policy_that_never_schedules_is_an_error_not_a_hang():
    # Target far below the cheapest step: three-stage's closest step is the empty one.
    with pytest.raises(SimulationError, match="rule progress"):
        run(make_trace([100], [3], [0.0]), target=0.001)


def test_deterministic_for_a_seed():
    base = make_trace(list(range(20, 420, 20)), [5] * 20, rate=50.0, seed=3)
    a = run(base, target=20.0, kv_blocks=40, block_size=16)
    b = run(
        make_trace(list(range(20, 420, 20)), [5] * 20, rate=50.0, seed=3),
        target=20.0,
        kv_blocks=40,
        block_size=16,
    )
    for col in a.steps:
        if col != "decide_us":
            assert a.steps[col] == b.steps[col], col
    ca, cb = request_columns(a), request_columns(b)
    np.testing.assert_array_equal(ca["ttft_ms"], cb["ttft_ms"])
    other = make_trace(list(range(20, 420, 20)), [5] * 20, rate=50.0, seed=4)
    assert run(other, target=20.0).steps["time_ns"] != a.steps["time_ns"]


def test_steps_tile_the_clock_and_match_the_latency_model():
    res = run(make_trace([300, 200, 80], [6, 9, 3], [0.0, 0.004, 0.02]), target=12.0)
    t = res.steps["time_ns"]
    lat = res.steps["latency_ns"]
    for k in range(1, len(t)):
        assert t[k] >= t[k - 1] + lat[k - 1]  # equal unless the engine idled
    # Every finished request's tokens are at step ends.
    ends = {a + b for a, b in zip(t, lat, strict=True)}
    assert all(x in ends for s in res.requests for x in s.times)
    assert all(s.where == FINISHED for s in res.requests)


def test_sim_config_rejects_bad_values():
    with pytest.raises(InputError, match="kv_blocks"):
        SimConfig(kv_blocks=0)
    with pytest.raises(InputError, match="objective"):
        SimConfig(objective="fast")  # type: ignore[arg-type]


def test_priorities_order_admission_and_choose_victims():
    # r2 arrives last but is more urgent than r0: strict waiting order admits it before r0.
    tr = make_trace([64, 64, 64], [40, 40, 40], [0.0, 0.0, 0.001], [2, 1, 0])
    res = run(tr, max_num_running_reqs=1)
    first = {s.id: s.first_ns for s in res.requests}
    assert first["r1"] < first["r2"] < first["r0"]  # r1 beats r0 at t=0; r2 then beats r0
    # r0 (priority 2) is admitted first, r1 (priority 0) later; 11 blocks cannot hold both
    # lives (6 blocks each): the least urgent is evicted, not the last admitted (FCFS).
    tr = make_trace([64, 64], [20, 20], [0.0, 0.001], [2, 0])
    res = run(tr, block_size=16, kv_blocks=11)
    counts = {s.id: s.preemptions for s in res.requests}
    assert counts["r0"] >= 1 and counts["r1"] == 0
    assert res.stats["finished"] == 2
