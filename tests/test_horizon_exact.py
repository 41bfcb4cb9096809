"""The exact window model against a brute-force oracle on tiny windows, every plan judged by
the window evaluator (which judges each step with the step evaluator)."""

from __future__ import annotations

import copy
import itertools
import random

import pytest

from stepopt.horizon import (
    Slo,
    WindowProblem,
    WindowRequest,
    WindowState,
    evaluate_window,
    replay_policy,
    solve_window,
)
from stepopt.horizon.evaluate import judge
from stepopt.latency.model import LatencyModel
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.model import EngineConfig

MS = 1_000_000
# A knee (flat floor then steep) so that how a prompt is split changes the step times.
LAT = LatencyModel(
    PiecewiseLinear((0, 4, 12), (3 * MS, 4 * MS, 12 * MS)),
    PiecewiseLinear((0, 3), (0, 600_000)),
    decode_context_ps=50_000,
)


def walk(w: WindowProblem, visit) -> None:
    """Every plan, step by step: each request 0 or any count its phase allows; the window
    state judges every step (infeasible branches are cut). ``visit(state, plan, lats)`` sees
    every prefix, the complete plans last on their branch."""

    def rec(st: WindowState, plan: list, lats: list) -> None:
        visit(st, plan, lats)
        if len(plan) == w.steps:
            return
        problem = st.problem()
        opts = [[0, *range(problem.lo(r), problem.hi(r) + 1)] for r in problem.requests]
        for combo in itertools.product(*opts):
            tokens = {r.id: c for r, c in zip(problem.requests, combo, strict=True) if c}
            nxt = copy.deepcopy(st)
            lat, bad = nxt.apply(problem, tokens)
            if not bad:
                rec(nxt, [*plan, tokens], [*lats, lat])

    rec(WindowState(w), [], [])


def brute(w: WindowProblem) -> tuple[tuple[int, int, int], list]:
    """The best key over every plan (:func:`walk`) and a plan that has it."""
    best: list = [None, None]

    def visit(st: WindowState, plan: list, lats: list) -> None:
        if len(plan) == w.steps:
            ev = judge(w, st, lats, [])
            if best[0] is None or ev.key > best[0]:
                best[0], best[1] = ev.key, list(plan)

    walk(w, visit)
    return best[0], best[1]


def tiny_window(seed: int) -> WindowProblem:
    rng = random.Random(seed)
    reqs = []
    n = rng.choice([2, 3])
    for i in range(n):
        prompt = rng.randint(1, 6)
        out = rng.randint(1, 3)
        if i == 0 and rng.random() < 0.5:  # one running decode
            reqs.append(
                WindowRequest(
                    "r0",
                    prompt,
                    out + 1,
                    0,
                    computed_tokens=prompt,
                    emitted_tokens=1,
                    first_token_ns=0,
                    last_token_ns=0,
                    running=True,
                    priority=rng.randint(0, 1),
                )
            )
            continue
        arrival = 0 if rng.random() < 0.5 else rng.randint(1, 8) * MS
        reqs.append(
            WindowRequest(
                f"q{i}",
                prompt,
                out,
                arrival,
                priority=rng.randint(0, 1),
                ttft_ms=rng.choice([6.0, 9.0, 14.0]),
            )
        )
    cfg = EngineConfig(
        max_num_scheduled_tokens=rng.choice([4, 6]),
        max_num_running_reqs=rng.choice([2, 3]),
        long_prefill_token_threshold=rng.choice([0, 3]),
        min_prefill_chunk=2,
        block_size=2,
        num_free_blocks=rng.choice([None, 3, 5]),
    )
    return WindowProblem(
        start_ns=0,
        requests=tuple(reqs),
        config=cfg,
        latency=LAT,
        slo=Slo(ttft_ms=10.0, tbt_ms=rng.choice([5.0, 8.0])),
        steps=rng.choice([3, 4]),
        priority_mode=rng.choice(["strict", "weighted"]),
        slo_weights=rng.choice(["unweighted", "priority"]),
    )


@pytest.mark.parametrize("seed", range(10))
def test_exact_matches_brute_force(seed):
    w = tiny_window(seed)
    key, _ = brute(w)
    res = solve_window(w, time_limit_s=30)
    assert res.status == "OPTIMAL"
    ev = evaluate_window(w, res.plan)
    assert ev.feasible, ev.violations
    assert ev.key == key  # SLOs met, tokens, busy time: all three equal the oracle's
    assert res.slo_bound == key[0]


def test_bound_is_an_upper_bound_on_every_policy():
    # Two requests whose deadlines a FCFS order cannot both meet: the plan reorders them.
    w = WindowProblem(
        0,
        (
            WindowRequest("long", 10, 1, 0, ttft_ms=100.0),
            WindowRequest("short", 2, 1, 0, ttft_ms=5.0),
        ),
        EngineConfig(4, 2, 0, 2, 2, None),
        LAT,
        Slo(ttft_ms=100.0, tbt_ms=50.0),
        4,
        priority_mode="weighted",
    )
    res = solve_window(w, time_limit_s=30)
    assert res.status == "OPTIMAL" and res.evaluation.met_count == 2
    for policy in ("three-stage", "vllm-v1", "sarathi"):
        _, ev = replay_policy(w, policy, target_ms=50.0)
        assert ev.feasible, (policy, ev.violations)
        assert ev.met_weighted <= res.slo_bound


def test_evaluator_rejects_a_rule_break():
    w = tiny_window(1)
    bad = [{w.requests[-1].id: 99}] + [{}] * (w.steps - 1)
    ev = evaluate_window(w, bad)
    assert not ev.feasible and "step 1" in ev.violations[0]
    assert ev.met_count == 0


def test_regression_window_where_presolve_probing_lost_two_tokens():
    # Cut from the conversation trace: with CP-SAT's probing on, phase 2 reported 400 tokens
    # as optimal although the three-stage plan (402 tokens, same SLOs) is feasible.
    from stepopt.horizon.windows import without_prefill_attention
    from stepopt.latency.presets import load_preset

    w = WindowProblem(
        403365270,
        (
            WindowRequest("r000", 374, 44, 0, 413, 40, 0, None, 23825304, 403365270, True),
            WindowRequest("r001", 396, 109, 4314579000),
        ),
        EngineConfig(512, 16, 0, 64, 16, None),
        without_prefill_attention(load_preset("a100/llama-2-7b/tp1")),
        Slo(500, 60),
        8,
    )
    res = solve_window(w, time_limit_s=30, hints=[])
    _, heur = replay_policy(w, "three-stage")
    assert res.status == "OPTIMAL"
    assert res.evaluation.key >= heur.key
    assert res.evaluation.tokens == 402


def every_met_set(w: WindowProblem) -> set[frozenset[str]]:
    """The sets of ids whose SLOs a feasible plan of ``w`` meets (full enumeration)."""
    out: set[frozenset[str]] = set()

    def visit(st: WindowState, plan: list, lats: list) -> None:
        if len(plan) == w.steps:
            ev = judge(w, st, lats, [])
            out.add(frozenset(rid for rid, ok in ev.met.items() if ok))

    walk(w, visit)
    return out


def test_requests_ruled_out_alone_are_met_by_no_plan():
    from stepopt.horizon.bounds import hopeless

    flagged = 0
    for seed in range(40):
        w = tiny_window(seed)
        out = hopeless(w)
        if not out:
            continue
        flagged += len(out)
        assert not any(out.keys() & m for m in every_met_set(w)), (seed, out)
        res = solve_window(w, time_limit_s=30)
        assert res.status == "OPTIMAL" and not any(res.evaluation.met[rid] for rid in out)
    assert flagged >= 3  # the relaxation does rule requests out on these windows


def test_clock_and_progress_ceilings_hold_for_every_plan():
    # The model's t and X domains come from these ceilings: a ceiling below some plan
    # would cut feasible plans and could prove a wrong optimum.
    from stepopt.horizon.bounds import clock_ceiling, latency_ceiling, work_clock_ceiling

    tight = 0
    for seed in range(12):
        w = tiny_window(seed)
        clock, ub = work_clock_ceiling(w)
        assert clock <= clock_ceiling(w, latency_ceiling(w))
        top = [-(10**9)] * (w.steps + 1)  # the highest progress - ceiling at each step

        def visit(st: WindowState, plan: list, lats: list, clock=clock, ub=ub, top=top) -> None:
            k = len(plan)
            assert st.t <= clock[k]
            for i, s in enumerate(st.slots):
                assert s.computed <= ub[i][k], (s.req.id, k)
                top[k] = max(top[k], s.computed - ub[i][k])

        walk(w, visit)
        tight += sum(x == 0 for x in top[1:])
    assert tight > 0  # some plan reaches a progress ceiling: the ceilings are not vacuous


def test_pairs_that_the_tbt_capped_clock_rules_out_are_never_both_met():
    from stepopt.horizon.bounds import tbt_conflicts

    checked = 0
    for seed in range(200):
        w = tiny_window(seed)
        pairs, _, _ = tbt_conflicts(w)
        if not pairs:
            continue
        ids = [r.id for r in w.requests]
        sets = every_met_set(w)
        for i, j in pairs:
            assert not any({ids[i], ids[j]} <= m for m in sets), (seed, ids[i], ids[j])
        checked += 1
    assert checked >= 3  # the argument does fire on these windows


def test_an_idle_step_lets_a_late_arrival_in():
    # A decode running and one request arriving at 20 ms: per-step policies keep decoding and
    # never see it within 3 steps; idling once (the TBT bound allows the jump) meets both.
    w = WindowProblem(
        0,
        (
            WindowRequest("r0", 2, 10, 0, 2, 1, 0, None, 0, 0, True),
            WindowRequest("q", 2, 2, 20 * MS, ttft_ms=10.0),
        ),
        EngineConfig(6, 2, 0, 2, 2, None),
        LAT,
        Slo(ttft_ms=10.0, tbt_ms=25.0),
        3,
    )
    _, heur = replay_policy(w, "three-stage")
    assert heur.met_count == 1
    from stepopt.horizon.replay import replay_stretched

    ev = evaluate_window(w, replay_stretched(w, 1, 1))
    assert ev.feasible and ev.met_count == 2
    res = solve_window(w, time_limit_s=30)
    assert res.status == "OPTIMAL" and res.evaluation.met_count == 2
    assert res.phases[0].get("proof") == "a hint meets every SLO"
    assert brute(w)[0] == res.evaluation.key
