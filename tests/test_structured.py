"""The structured solver: proofs that agree with brute force and CP-SAT, refusals that say so,
and the ``auto`` portfolio that falls back to CP-SAT only when needed."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings

from stepopt.evaluate import evaluate
from stepopt.solvers import SolveStatus, solve
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill, waiting
from stepopt.testing.strategies import problems
from stepopt.testing.structured_check import check_against


def sample(n: int) -> settings:
    return settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


@pytest.mark.parametrize("objective", ["target", "goodput"])
def test_every_answer_is_honest_against_brute_force(objective):
    """A fast sample of benchmarks/structured_check.py: small strict problems with non-convex
    curves, KV limits, thresholds and min chunks."""
    statuses: Counter = Counter()

    @sample(150)
    @given(problems(objective=objective, priority_mode="strict"))
    def run(p):
        res = solve(p, "structured")
        check_against(p, res, solve(p, "brute"))
        statuses[str(res.status)] += 1

    run()
    assert statuses["OPTIMAL"] >= 50, statuses  # it proves most of them
    if objective == "goodput":  # the exact program settles every position the bounds leave
        assert statuses["OPTIMAL"] + statuses["INFEASIBLE"] == 150, statuses
    # target: test_structured_target.py has a state whose bounds do not close


def test_engine_scale_answers_agree_with_cpsat():
    @sample(25)
    @given(problems(max_requests=24, priority_mode="strict", preset="demo"))
    def run(p):
        check_against(p, solve(p, "structured"), solve(p, "cpsat", time_limit=10))

    run()


def _strict_goodput():
    # Linear model: 5 ms + 50 us/token, cap 20 ms -> 300 tokens. The decodes (2 tokens), the
    # running prefill in full (200) and 98 tokens of the first waiting request.
    return make_problem(
        [decode("d0"), decode("d1"), prefill("p0", prompt=328, computed=128)],
        [waiting("w0", 500), waiting("w1", 100)],
        latency=linear_latency(),
        target_ms=20.0,
        objective="goodput",
        min_prefill_chunk=16,
    )


def test_proves_a_strict_goodput_step():
    p = _strict_goodput()
    res = solve(p, "structured")
    assert res.status == SolveStatus.OPTIMAL
    got = res.decision.scheduled()
    assert sum(got.values()) == 300 and {k: got[k] for k in ("d0", "d1", "p0")} == {
        "d0": 1,
        "d1": 1,
        "p0": 200,
    }  # the waiting tokens may split between w0 and w1 at the same latency (a tie)
    ref = solve(p, "brute")
    assert (res.objective, res.evaluation.latency_ns) == (ref.objective, ref.evaluation.latency_ns)
    assert res.params["model_latency_ns"] == evaluate(p, res.decision).latency_ns == 20_000_000


def test_everything_at_its_most_is_proven_at_once_and_only_when_it_fits():
    """Light load: every request at ``hi`` within T is the one decision with the most tokens.
    A KV limit one block short (or a target just below its latency) sends it to the layers."""
    p = _strict_goodput().with_changes(target_latency_ms=60.0)
    res = solve(p, "structured")
    assert res.status == SolveStatus.OPTIMAL and res.params["layer"] == "all"
    assert res.decision.scheduled() == {"d0": 1, "d1": 1, "p0": 200, "w0": 500, "w1": 100}
    assert res.objective == solve(p, "brute").objective
    need = evaluate(p, res.decision).new_blocks
    lat = res.evaluation.latency_ns
    for changes in (
        {"config": replace(p.config, num_free_blocks=need - 1)},
        {"target_latency_ms": (lat - 1) / 1e6},
    ):
        q = p.with_changes(**changes)
        other = solve(q, "structured")
        assert other.params.get("layer") != "all"
        check_against(q, other, solve(q, "cpsat", time_limit=10))


def test_weighted_priority_is_refused_not_guessed():
    p = _strict_goodput().with_changes(priority_mode="weighted")
    res = solve(p, "structured")
    assert res.status == SolveStatus.FEASIBLE
    assert "unsupported: weighted priority" in res.message
    assert res.proven_within_ns is None and res.bound is None
    assert evaluate(p, res.decision).feasible  # its best decision, judged by the evaluator


def test_negative_decode_cost_is_refused():
    lat = replace(linear_latency(), decode_context_ps=-1_000)
    p = _strict_goodput().with_changes(latency=lat)
    res = solve(p, "structured")
    assert res.status != SolveStatus.OPTIMAL
    assert "negative decode attention cost" in res.message


def _floors_problem():
    """Floors let chunk splits differ by a few ns that the envelope bound does not see."""
    lat = linear_latency(per_token_ns=20_000, alpha_ns=0.05, beta_ns=0.3)
    running = [decode(f"d{k}", 600 + 37 * k) for k in range(4)] + [
        prefill("p0", 4000, 574),
        prefill("p1", 4311, 1117),
        prefill("p2", 4622, 1539),
        prefill("p3", 4933, 2108),
    ]
    return make_problem(
        running,
        [],
        latency=lat,
        target_ms=12.5653,
        objective="goodput",
        max_num_scheduled_tokens=1200,
        min_prefill_chunk=64,
    )


def test_the_floor_tie_break_is_proven_by_the_exact_program():
    p = _floors_problem()
    res = solve(p, "structured")
    ref = solve(p, "cpsat", time_limit=20)
    assert ref.status == SolveStatus.OPTIMAL
    check_against(p, res, ref)
    assert res.status == SolveStatus.OPTIMAL
    assert res.evaluation.latency_ns == ref.evaluation.latency_ns
    assert res.params["exact_positions"] >= 1  # the envelope bound alone left it open


def test_a_tie_break_the_program_cannot_settle_is_not_claimed(monkeypatch):
    """With no room for the exact program the positions the bounds leave stay open: nothing is
    claimed beyond a valid bound, and ``auto`` gets the proof from CP-SAT."""
    import stepopt.solvers.structured_exact as exact

    monkeypatch.setattr(exact, "MAX_CELLS", 0)
    p = _floors_problem()
    res = solve(p, "structured")
    ref = solve(p, "cpsat", time_limit=20)
    check_against(p, res, ref)
    assert res.status == SolveStatus.FEASIBLE and "not proven" in res.message
    assert res.bound >= ref.objective  # a valid bound on the tokens all the same
    auto = solve(p, "auto", time_limit=20)
    assert auto.status == SolveStatus.OPTIMAL and auto.params["proved_by"] == "cpsat"
    assert auto.evaluation.latency_ns == ref.evaluation.latency_ns


def test_running_queue_over_the_slot_limit_is_infeasible():
    p = make_problem(
        [decode("d0"), decode("d1")], [], latency=linear_latency(), max_num_running_reqs=1
    )
    res = solve(p, "structured")
    assert res.status == SolveStatus.INFEASIBLE and "max_num_running_reqs" in res.message


def test_auto_answers_from_structured_when_it_proves():
    res = solve(_strict_goodput(), "auto")
    assert res.status == SolveStatus.OPTIMAL
    assert res.solver == "auto"
    assert res.params["backends"] == ["structured"] and res.params["proved_by"] == "structured"


def test_auto_falls_back_to_cpsat_warm_started():
    p = _strict_goodput().with_changes(priority_mode="weighted")
    res = solve(p, "auto", time_limit=10)
    assert res.status == SolveStatus.OPTIMAL
    assert res.params["backends"] == ["structured", "cpsat"]
    assert res.params["proved_by"] == "cpsat"
    assert res.objective == solve(p, "cpsat", time_limit=10).objective


def test_auto_keeps_a_time_limit_too_short_for_cpsat():
    """The vLLM plug-in's per-step limit is a promise: with no time left for CP-SAT, auto returns
    the structured answer, unproven, instead of running CP-SAT past the limit."""
    p = _strict_goodput().with_changes(priority_mode="weighted")
    res = solve(p, "auto", time_limit=0.004)
    assert res.params["backends"] == ["structured"]
    assert res.params["proved_by"] is None
    assert res.status != SolveStatus.OPTIMAL and "time limit" in res.message


def test_unknown_parameter_is_a_clean_error():
    from stepopt.errors import InputError

    with pytest.raises(InputError, match="structured parameters"):
        solve(_strict_goodput(), "structured", num_workers=2)


def test_program_options_over_the_kv_limit_are_dropped_not_misread():
    """A chunk needing more KV blocks than are left is no option (an earlier packing of the
    (zeros, blocks) shift read it as a zero chunk of another item)."""
    import numpy as np

    from stepopt.solvers.structured_exact import INF, _step

    cost = np.full((2, 3, 1), INF, dtype=np.int64)
    cost[0, 0, 0] = 0
    opts = np.asarray([[5, 10, 0, 4], [5, 20, 0, 1]], dtype=np.int64)  # (c, g, zeros, blocks)
    new = _step(cost, opts, 0, 0, 5, nb=3)
    assert new[0, 1, 5] == 20
    assert (new[1] == INF).all() and (new[0, 0] == INF).all() and (new[0, 2] == INF).all()


@pytest.mark.parametrize(("slice_cells", "runs"), [(0, False), (10**9, False), (0, True)])
def test_min_plus_step_matches_the_definition_by_either_strategy(monkeypatch, slice_cells, runs):
    """``_step`` gathers every option's window at once, takes one slice minimum per option, or
    (consecutive chunks) one strided minimum over runs of old cells; which one depends on the
    sizes: all give ``new[z + dz, b + db, t + c] = min(cost[z, b, t] + g)`` exactly, read off a
    plain loop."""
    import numpy as np

    from stepopt.solvers import structured_exact
    from stepopt.solvers.structured_exact import INF, _step

    monkeypatch.setattr(structured_exact, "SLICE_MIN_CELLS", slice_cells)
    used = []
    run_min = structured_exact._run_min
    monkeypatch.setattr(structured_exact, "_run_min", lambda *a: used.append(1) or run_min(*a))
    rng = np.random.default_rng(5)
    for _ in range(40):
        nz, nb, old_w = (int(v) for v in rng.integers(1, [4, 4, 30]))
        cost = rng.integers(0, 10**6, (nz, nb, old_w)).astype(np.int64)
        cost[rng.random(cost.shape) < 0.3] = INF
        k = int(rng.integers(1, 12))
        c = np.sort(rng.choice(np.arange(1, 40), k, replace=False)).astype(np.int64)
        if runs:  # one run of consecutive chunks, long enough for the strided minimum
            k = int(rng.integers(structured_exact.RUN_MIN, 40))
            c = np.arange(k, dtype=np.int64) + int(rng.integers(0, 5))
        dz, db = rng.integers(0, 2, k), rng.integers(0, nb + 1, k)
        if runs:  # one shift for every option: a single run
            dz, db = np.full(k, dz[0]), np.full(k, min(int(db[0]), nb - 1))
        opts = np.stack([c, rng.integers(0, 10**4, k), dz, db], axis=1)
        lo_old = int(rng.integers(0, 10))
        lo_new = lo_old + int(rng.integers(0, 20))
        hi_new = lo_new + int(rng.integers(0, 40))
        want = np.full((nz, nb, hi_new - lo_new + 1), INF, dtype=np.int64)
        for z, b, t in zip(*np.nonzero(cost < INF), strict=True):
            for ck, g, dz, db in opts:
                tt = lo_old + t + ck - lo_new
                if z + dz < nz and b + db < nb and 0 <= tt < want.shape[2]:
                    v = cost[z, b, t] + g
                    want[z + dz, b + db, tt] = min(want[z + dz, b + db, tt], v)
        assert (_step(cost, opts, lo_old, lo_new, hi_new, nb) == want).all()
    assert bool(used) == runs
