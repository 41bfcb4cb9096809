"""Simulator parts: traces, target rules, policies (exact with fallback), metrics, plan files,
snapshots read back by the gap-study generator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stepopt.errors import InputError, UnknownNameError
from stepopt.io import load_problem
from stepopt.model import EngineConfig
from stepopt.simulate import (
    AdaptiveTarget,
    ExactPolicy,
    FixedTarget,
    SimConfig,
    load_trace,
    make_policy,
    make_trace,
    parse_target_rule,
    request_columns,
    simulate,
    summarize,
)
from stepopt.simulate.snapshots import SnapshotWriter
from stepopt.solvers.base import SolveResult, SolveStatus
from stepopt.testing.factories import linear_latency

MS = 1_000_000
LIN = linear_latency(per_token_ns=50_000, base_ns=5 * MS, decode_context_ps=2_000)


def small_trace(n=12, seed=1):
    rng = np.random.default_rng(seed)
    return make_trace(
        rng.integers(20, 300, n), rng.integers(1, 12, n), np.sort(rng.uniform(0, 0.3, n))
    )


# ---- traces ---------------------------------------------------------------------------------
def test_trace_csv_columns_order_and_cuts(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.5,10,3\n0.0,20,4\n2.0,30,5\n")
    tr = load_trace(p)
    assert tr.arrivals_ns.tolist() == [0, 500_000_000, 2_000_000_000]  # sorted by arrival
    assert tr.prompt_tokens.tolist() == [20, 10, 30]
    assert tr.ids == ["r0", "r1", "r2"]
    assert len(tr.cut(duration_s=1.0)) == 2
    assert len(tr.cut(max_requests=1)) == 1


def test_trace_without_times_needs_a_rate(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("prompt_tokens,output_tokens\n10,3\n20,4\n30,5\n")
    with pytest.raises(InputError, match="rate"):
        load_trace(p)
    a = load_trace(p, rate=2.0, seed=5)
    b = load_trace(p, rate=2.0, seed=5)
    assert a.arrivals_ns.tolist() == b.arrivals_ns.tolist()
    assert a.arrivals_ns[0] == 0 and np.all(np.diff(a.arrivals_ns) >= 0)
    assert load_trace(p, rate=2.0, seed=6).arrivals_ns.tolist() != a.arrivals_ns.tolist()


def test_poisson_rate_is_respected():
    tr = make_trace([10] * 4000, [1] * 4000, rate=20.0, seed=0)
    mean_gap_s = np.diff(tr.arrivals_ns).mean() / 1e9
    assert mean_gap_s == pytest.approx(1 / 20.0, rel=0.05)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("num_prefill_tokens\n10\n", "num_decode_tokens"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,0,3\n", "line 2.num_prefill_tokens"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,0\n", "line 2.num_decode_tokens"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\nx,5,3\n", "line 2"),
    ],
)
def test_bad_traces_name_the_field(tmp_path, text, field):
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=field):
        load_trace(p)


# ---- target rules ---------------------------------------------------------------------------
def test_target_rules():
    assert parse_target_rule("40")(100, 0) == 40.0
    assert parse_target_rule("fixed:40").spec == "fixed:40"
    lin = parse_target_rule("adaptive:base=50,min=25,queue=64")
    assert [lin(w, 0) for w in (0, 32, 64, 500)] == [50.0, 37.5, 25.0, 25.0]
    step = parse_target_rule("adaptive:base=50,min=25,queue=64,shape=step")
    assert [step(w, 0) for w in (63, 64)] == [50.0, 25.0]
    assert parse_target_rule(lin.spec) == lin


@pytest.mark.parametrize(
    "text",
    [
        "adaptive:base=50",
        "adaptive:base=50,min=60,queue=4",
        "adaptive:base=50,min=25,queue=0",
        "adaptive:base=50,min=25,queue=4,speed=2",
        "magic:3",
        "fixed:-1",
        "fast",
    ],
)
def test_bad_target_rules(text):
    with pytest.raises(InputError, match="target"):
        parse_target_rule(text)


def test_adaptive_target_follows_the_waiting_queue():
    rule = AdaptiveTarget(base=40.0, min=10.0, queue=4)
    tr = make_trace([200] * 10, [3] * 10, [0.0] * 10)
    res = simulate(tr, make_policy("three-stage"), LIN, rule, SimConfig())
    assert res.steps["target_ms"] == [rule(w, 0) for w in res.steps["n_waiting"]]
    assert len(set(res.steps["target_ms"])) > 2


# ---- policies -------------------------------------------------------------------------------
def test_unknown_policy_lists_valid_names():
    with pytest.raises(UnknownNameError, match="three-stage"):
        make_policy("fastest")
    with pytest.raises(UnknownNameError, match="cpsat"):
        make_policy("exact:nosuch")


class _NoSolution:
    name = "fake-none"

    def solve(self, problem, time_limit=None, **params):
        return SolveResult(SolveStatus.NO_SOLUTION, self.name, time_limit_s=time_limit)


def test_exact_policy_falls_back_and_counts(monkeypatch):
    import stepopt.solvers.base as base

    base.solver_names()  # load the built-ins before adding the fake
    info = base.SolverInfo("fake-none", _NoSolution, frozenset({"target_tolerance_ns"}))
    monkeypatch.setitem(base._SOLVERS, "fake-none", info)
    tr = small_trace(5)
    pol = ExactPolicy("fake-none", time_limit=0.5)
    res = simulate(tr, pol, LIN, FixedTarget(20.0), SimConfig())
    st = res.stats["policy"]
    assert st["fallbacks"] == res.num_steps == st["solver_statuses"]["NO_SOLUTION"]
    assert set(res.steps["source"]) == {"fallback"}
    # The fallback is the heuristic itself: the run equals a plain three-stage run.
    plain = simulate(tr, make_policy("three-stage"), LIN, FixedTarget(20.0), SimConfig())
    assert plain.steps["time_ns"] == res.steps["time_ns"]


def test_exact_policy_with_cpsat_is_never_worse_per_step():
    from stepopt.evaluate import evaluate, rank_key
    from stepopt.heuristics import get_heuristic

    seen = []

    class Spy(ExactPolicy):
        def decide(self, problem):
            d, src = super().decide(problem)
            seen.append((problem, d))
            return d, src

    tr = make_trace([120, 64, 200], [3, 2, 2], [0.0, 0.0, 0.01])
    res = simulate(tr, Spy("cpsat", time_limit=5.0), LIN, FixedTarget(12.0), SimConfig())
    assert res.stats["finished"] == 3
    assert res.stats["policy"]["solver_statuses"].get("OPTIMAL", 0) > 0
    ts = get_heuristic("three-stage")
    for prob, d in seen:
        assert rank_key(prob, evaluate(prob, d)) <= rank_key(prob, evaluate(prob, ts(prob)))


# ---- metrics --------------------------------------------------------------------------------
def test_per_request_tbt_matches_numpy():
    res = simulate(small_trace(30), make_policy("sarathi"), LIN, FixedTarget(15.0), SimConfig())
    cols = request_columns(res)
    for k, s in enumerate(res.requests):
        gaps = np.diff(np.asarray(s.times, dtype=np.int64)) / MS
        if len(gaps) == 0:
            assert np.isnan(cols["tbt_p99_ms"][k])
            continue
        assert cols["tbt_p50_ms"][k] == pytest.approx(np.percentile(gaps, 50))
        assert cols["tbt_p99_ms"][k] == pytest.approx(np.percentile(gaps, 99))
        assert cols["tbt_max_ms"][k] == pytest.approx(gaps.max())


def test_summary_slo_attainment_and_goodput():
    res = simulate(small_trace(30), make_policy("sarathi"), LIN, FixedTarget(15.0), SimConfig())
    cols = request_columns(res)
    ttft_slo = float(np.median(cols["ttft_ms"]))
    s = summarize(res, slo_ttft_ms=ttft_slo, slo_tbt_ms=None)
    want = np.mean(cols["ttft_ms"] <= ttft_slo)
    assert s["ttft_attainment"] == pytest.approx(want)
    assert s["slo_attainment"] == pytest.approx(want)
    assert s["goodput_rps"] == pytest.approx(want * 30 / s["makespan_s"])
    assert s["throughput_rps"] == pytest.approx(30 / s["makespan_s"])
    tight = summarize(res, slo_ttft_ms=1e9, slo_tbt_ms=1e-6)
    multi = np.sum(cols["emitted_tokens"] > 1)
    assert tight["tbt_attainment"] == pytest.approx((30 - multi) / 30)
    assert summarize(res)["slo_attainment"] is None


# ---- plans ----------------------------------------------------------------------------------
def test_plan_files(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from stepopt.simulate.plan import write_plan

    cfg = SimConfig(engine=EngineConfig(max_num_scheduled_tokens=256), record_decisions=True)
    res = simulate(small_trace(), make_policy("three-stage"), LIN, FixedTarget(15.0), cfg)
    steps_path, req_path = write_plan(res, tmp_path / "plan.parquet")
    assert req_path.name == "plan.requests.parquet"
    steps = pq.read_table(steps_path).to_pylist()
    assert len(steps) == res.num_steps
    for row in steps:
        tokens = json.loads(row["decision"])
        assert sum(tokens.values()) == row["scheduled_tokens"]
        assert len(tokens) == row["batch_size"]
        assert row["end_s"] == pytest.approx(row["time_s"] + row["latency_ms"] / 1000)
    reqs = pq.read_table(req_path).to_pylist()
    assert [r["id"] for r in reqs] == [s.id for s in res.requests]
    assert all(r["ttft_ms"] <= r["e2e_ms"] for r in reqs)
    meta = json.loads(pq.read_schema(steps_path).metadata[b"stepopt"])
    assert meta["policy"] == "three-stage"


# ---- snapshots ------------------------------------------------------------------------------
def test_snapshots_round_trip_into_the_study_generator(tmp_path):
    from stepopt.scenarios.common import GenerateOptions
    from stepopt.scenarios.snapshot import generate

    snaps = SnapshotWriter(tmp_path / "snaps", every=3)
    res = simulate(
        small_trace(),
        make_policy("three-stage"),
        LIN,
        FixedTarget(15.0),
        SimConfig(),
        snapshots=snaps,
    )
    manifest = json.loads((tmp_path / "snaps" / "manifest.json").read_text())
    rows = manifest["problems"]
    assert [r["step"] for r in rows] == list(range(0, res.num_steps, 3))
    for r in rows:
        prob = load_problem(tmp_path / "snaps" / r["file"])
        assert (len(prob.running), len(prob.waiting)) == (r["n_running"], r["n_waiting"])
        assert (r["n_running"], r["n_waiting"]) == (
            res.steps["n_running"][r["step"]],
            res.steps["n_waiting"][r["step"]],
        )
    scen = generate(GenerateOptions(count=2, seed=1), str(tmp_path / "snaps"))
    assert len(scen) == 2
    assert all(s.meta["source"] == "snapshot:snaps" and "step" in s.meta for s in scen)


def test_snapshot_sampling_is_seeded(tmp_path):
    def files(seed, d):
        w = SnapshotWriter(tmp_path / d, probability=0.3, seed=seed)
        simulate(small_trace(), make_policy("three-stage"), LIN, FixedTarget(15.0), snapshots=w)
        return [r["step"] for r in w.rows]

    assert files(1, "a") == files(1, "b")
    assert files(1, "a") != files(2, "c")
    with pytest.raises(InputError, match="snapshot"):
        SnapshotWriter(tmp_path / "x")


def test_policy_specs_with_parameters():
    from stepopt.simulate.policies import parse_policy_spec, split_policies

    assert split_policies("a,sarathi[chunk_size=512,x=y],exact:cpsat") == [
        "a",
        "sarathi[chunk_size=512,x=y]",
        "exact:cpsat",
    ]
    # The spec keeps text; make_policy types it by the heuristic's signature.
    assert parse_policy_spec("three-stage[full-scan=true]") == (
        "three-stage",
        {"full_scan": "true"},
    )
    pol = make_policy("sarathi[chunk_size=64]")
    assert pol.name == "sarathi[chunk_size=64]"
    res = simulate(small_trace(), pol, LIN, FixedTarget(15.0), SimConfig())
    assert max(res.steps["scheduled_tokens"]) <= 64
    wide = simulate(small_trace(), make_policy("sarathi"), LIN, FixedTarget(15.0), SimConfig())
    assert max(wide.steps["scheduled_tokens"]) > 64
    for bad in ("sarathi[speed=3]", "sarathi[chunk_size]", "sarathi[", "exact[x=1]"):
        with pytest.raises(InputError, match="policy"):
            make_policy(bad)
