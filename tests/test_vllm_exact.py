"""The ``exact`` rule steering real vLLM (on the CPU): a solver decides the steered steps,
and vLLM carries out its proven optima."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="needs the optional vLLM package: pip install 'stepopt[vllm]'")

from stepopt.evaluate import evaluate, rank_key
from stepopt.integrations import vllm as adapter
from stepopt.integrations.vllm_settings import SchedulerSettings
from stepopt.integrations.vllm_testing import make_request, make_scheduler, step
from stepopt.solvers.base import SolveStatus, solve

pytestmark = pytest.mark.vllm


@pytest.mark.parametrize("objective", ["goodput", "target"])
def test_exact_rule_steers_steps_with_proven_optima(objective):
    s = make_scheduler(
        adapter.OptimizedScheduler,
        max_num_seqs=16,
        max_num_batched_tokens=1024,
        long_prefill_token_threshold=256,
        stepopt_settings=SchedulerSettings(
            target_ms=25.0,
            objective=objective,
            heuristic="exact",
            time_limit_ms=2000.0,  # generous: every step proven (the machine is shared)
            log_interval=0,
        ),
    )
    for n in range(10):
        s.add_request(make_request(f"r{n}", 200 + 150 * n, max_tokens=8, arrival_time=n))
    decided = []
    rule, stats = s.stepopt.heuristic, s.stepopt.policy.stats

    def spy(problem):
        before = stats.statuses["OPTIMAL"]
        decision = rule(problem)
        decided.append((problem, decision, stats.statuses["OPTIMAL"] > before))
        return decision

    s.stepopt.heuristic = spy
    carried = 0
    for _ in range(30):
        n = len(decided)
        out = step(s)
        if len(decided) == n:
            continue  # left to vLLM (nothing binds) or nothing to do
        problem, decision, proven = decided[-1]
        best = solve(problem, "cpsat", time_limit=10)
        if proven and best.status == SolveStatus.OPTIMAL:  # both proven: the same rank
            assert rank_key(problem, evaluate(problem, decision)) == rank_key(
                problem, best.evaluation
            )
        rec = s.stepopt.last
        if not rec["reason"]:  # a step of vLLM's shape: vLLM carries it out exactly
            assert rec["exact"] and dict(out.num_scheduled_tokens) == dict(decision.tokens)
            carried += 1
    assert len(decided) >= 5 and carried >= 1
    assert stats.decisions == s.stepopt.steered == len(decided)
    proven = sum(p for _, _, p in decided)
    assert proven >= 0.8 * len(decided)  # (a generous share: the machine may be loaded)
