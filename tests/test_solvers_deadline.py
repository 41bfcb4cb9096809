"""Time limits bound the whole call (model building included) and never give less than the
greedy decision; strict mode leaves never-admissible waiting requests out of the model."""

from __future__ import annotations

import random
import time

import pytest

from stepopt.evaluate import evaluate, rank_key
from stepopt.solvers import SolveStatus, solve
from stepopt.solvers.common import admissible
from stepopt.solvers.hint import greedy_hint
from stepopt.testing.factories import decodes, make_problem, waitings

LIMIT_S = 2.0


def large(mode: str, n_wait: int):
    rng = random.Random(1)
    prompts = [rng.randint(20, 3000) for _ in range(n_wait)]
    return make_problem(
        decodes(1024, 300),
        waitings(prompts),
        target_ms=60.0,
        priority_mode=mode,
        max_num_scheduled_tokens=2048,
        max_num_running_reqs=1536,
    )


HIGHS_OVERRUN = pytest.mark.xfail(
    reason="HiGHS 1.x overruns its own time_limit on a busy machine (1,280 requests, limit 2 s: "
    "3.1-5.5 s after PuLP's copy); bounding it needs the solve in a killable child process",
    strict=False,
)


CBC_OVERRUN = pytest.mark.xfail(
    reason="CBC overran a 2 s limit (3.8 s) at load 8 on 2 cores, 1.7 s when the machine was "
    "quieter; not yet bounded under heavy load",
    strict=False,
)


@pytest.mark.parametrize(
    ("name", "mode", "n_wait"),
    [
        *((n, m, w) for n in ("cpsat",) for m, w in (("weighted", 256), ("strict", 20_000))),
        pytest.param("cbc", "weighted", 256, marks=CBC_OVERRUN),
        ("cbc", "strict", 20_000),
        pytest.param("highs", "weighted", 256, marks=HIGHS_OVERRUN),
        pytest.param("highs", "strict", 20_000, marks=HIGHS_OVERRUN),
    ],
)
def test_time_limit_bounds_the_whole_call(name, mode, n_wait):
    problem = large(mode, n_wait)
    t = time.perf_counter()
    res = solve(problem, name, time_limit=LIMIT_S)
    wall = time.perf_counter() - t
    assert wall <= 1.2 * LIMIT_S + 0.5, (name, wall)
    # Never worse than the heuristic start, and never an empty schedule when greedy is better.
    assert res.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE), res.message
    greedy = evaluate(problem, greedy_hint(problem))
    assert rank_key(problem, res.evaluation) <= rank_key(problem, greedy)


def test_strict_pruning_keeps_every_admissible_request():
    problem = large("strict", 5_000)
    pruned = admissible(problem)
    # 512 free slots, and the first waiting requests' smallest chunks within the budget
    assert 0 < len(pruned.waiting) <= 512
    kept = {r.id for r in pruned.waiting}
    order = [r.id for r in problem.waiting_order]
    assert set(order[: len(kept)]) == kept  # a prefix of the admission order
    assert admissible(problem.with_changes(priority_mode="weighted")).waiting == problem.waiting
