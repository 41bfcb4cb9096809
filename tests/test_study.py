"""Study runner, store and report: gap arithmetic, resumability, executors, report fields.

The heuristics here are small fakes referenced as ``test_study:NAME`` (the runner accepts
``module:function``), so these tests do not depend on the shipped heuristics; one test runs the
shipped ones when they are registered.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from stepopt.cli import main
from stepopt.errors import InputError
from stepopt.evaluate import evaluate
from stepopt.gap import relative_gap
from stepopt.io import problem_hash, problem_to_dict
from stepopt.model import Decision
from stepopt.scenarios import GenerateOptions, generate
from stepopt.studies import StudyConfig, load_rows, load_study, run_study
from stepopt.studies.report import breakdown, summarize
from stepopt.studies.store import KEY, Store
from stepopt.studies.worker import Task, run_task
from stepopt.testing.factories import decode, linear_latency, make_problem, waiting

FAKES = ("test_study:decodes_only", "test_study:fill_everything")
REPORT_FIELDS = {
    "heuristic",
    "objective",
    "count",
    "share_proven_optimal",
    "share_feasible",
    "gap_mean",
    "gap_median",
    "gap_p95",
    "gap_max",
    "gap_min",
    "decision_ms_median",
    "solve_ms_median",
}


# ---- fake heuristics (importable by worker processes as test_study:NAME) --------------------
def decodes_only(problem):
    """Every running decode, nothing else (feasible, often far from the target)."""
    marker = os.environ.get("STEPOPT_TEST_MARKERS")
    if marker:  # lets the resume test see progress without opening the locked database
        Path(marker, f"{os.getpid()}-{time.perf_counter_ns()}").touch()
        time.sleep(float(os.environ.get("STEPOPT_TEST_SLEEP", "0")))
    return Decision.of({r.id: 1 for r in problem.running_decodes})


def fill_everything(problem):
    """Every request at its full chunk, ignoring every limit (often infeasible)."""
    return Decision.of({r.id: problem.hi(r) for r in problem.requests})


def preempt_last(problem):
    """Preempts the last running request, decodes the others."""
    last = problem.running[-1].id
    toks = {r.id: 1 for r in problem.running_decodes if r.id != last}
    return Decision(tokens=toks, preempted=(last,))


def broken(problem):
    raise RuntimeError("boom")


# ---- gap arithmetic on a hand-checked problem ------------------------------------------------
def _hand_problem(objective: str):
    # L = 5 ms + 0.05 ms per token. 4 decodes: 5.2 ms. T = 10 ms is reached with 100 tokens:
    # 4 decodes + a 96-token chunk of the waiting request.
    return make_problem(
        [decode(f"d{k}", 100) for k in range(4)],
        [waiting("w0", 500)],
        latency=linear_latency(per_token_ns=50_000, base_ns=5_000_000),
        target_ms=10.0,
        objective=objective,
    )


def _task(problem, heuristics, **kw):
    return Task(
        problem_to_dict(problem),
        problem_hash(problem),
        {"regime": "hand"},
        heuristics,
        "cpsat",
        10.0,
        **kw,
    )


def test_target_gap_is_deviation_difference_over_target():
    rows = {r["algorithm"]: r for r in run_task(_task(_hand_problem("target"), FAKES[:1]))}
    exact, h = rows["cpsat"], rows["test_study:decodes_only"]
    assert exact["status"] == "OPTIMAL" and exact["objective_value"] == 0.0
    assert h["gap_kind"] == "optimal"
    assert h["gap"] == pytest.approx(4.8 / 10.0)  # (|5.2 - 10| - 0) / 10
    assert h["gap_abs"] == pytest.approx(4.8)
    assert h["feasible"] and h["latency_ms"] == pytest.approx(5.2)


def test_goodput_gap_and_latency_cap_violation():
    rows = {r["algorithm"]: r for r in run_task(_task(_hand_problem("goodput"), FAKES))}
    assert rows["cpsat"]["objective_value"] == 100.0
    assert rows["test_study:decodes_only"]["gap"] == pytest.approx((100 - 4) / 100)
    over = rows["test_study:fill_everything"]  # 504 tokens: L = 30.2 ms > T
    assert over["gap_kind"] == "violation" and over["gap"] is None
    assert "latency_cap" in over["violations"] and not over["feasible"]


def test_a_failing_heuristic_is_an_error_row_not_a_crash():
    rows = {
        r["algorithm"]: r for r in run_task(_task(_hand_problem("target"), ("test_study:broken",)))
    }
    assert rows["test_study:broken"]["status"] == "ERROR"
    assert "boom" in rows["test_study:broken"]["message"]
    assert rows["cpsat"]["status"] == "OPTIMAL"


def test_a_preempting_decision_gets_no_gap_against_the_non_preempting_optimum():
    rows = {
        r["algorithm"]: r
        for r in run_task(_task(_hand_problem("target"), ("test_study:preempt_last",)))
    }
    h = rows["test_study:preempt_last"]
    assert h["feasible"] and h["n_preempted"] == 1
    assert h["gap_kind"] == "preemption" and h["gap"] is None
    assert rows["cpsat"]["n_preempted"] == 0
    s = {g["heuristic"]: g for g in summarize(list(rows.values()))}["test_study:preempt_last"]
    assert s["count_preempted"] == 1 and s["gap_mean"] is None


def test_relative_gap_edge_cases():
    assert relative_gap("goodput", 0, 0, 10.0) == 0.0
    assert relative_gap("goodput", 30, 40, 10.0) == pytest.approx(0.25)
    assert relative_gap("target", 3.0, 1.0, 20.0) == pytest.approx(0.1)


def test_unproven_reference_gives_bound_gap_not_gap():
    # 0.3 s cannot prove this optimum (weighted priorities); CP-SAT has a bound by then.
    prob = make_problem(
        [decode(f"d{k}", 300 + k) for k in range(30)],
        [waiting(f"w{k}", 200 + 37 * k, priority=k % 3) for k in range(20)],
        preset="demo",
        target_ms=60.0,
        priority_mode="weighted",
    )
    rows = run_task(Task(problem_to_dict(prob), problem_hash(prob), {}, FAKES[:1], "cpsat", 0.3))
    exact, h = rows[0], rows[1]
    if exact["status"] == "OPTIMAL":
        pytest.skip("solved to optimality within the limit on this machine")
    assert h["gap"] is None
    assert h["gap_kind"] in ("bound", "no_reference")
    if exact["status"] == "FEASIBLE":
        assert h["gap_incumbent"] is not None  # against the solver's unproven solution
        if exact["bound"] is not None:
            # The true gap lies between the gap to the solver's solution and to its bound.
            assert h["gap_bound"] >= -1e-9
            assert h["gap_incumbent"] <= h["gap_bound"] + 1e-9
        else:
            assert h["gap_bound"] is None


# ---- runner and store ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def problem_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("problems")
    # Strict priorities keep CP-SAT fast here (weighted problems can take seconds).
    generate(
        "synthetic",
        GenerateOptions(
            count=10,
            seed=11,
            presets=("demo",),
            concurrency=8,
            max_waiting=8,
            priority_mode="strict",
        ),
        d,
    )
    return d


def _cfg(problem_dir, db, **kw):
    base = dict(problems=problem_dir, heuristics=FAKES, time_limit=5.0, db=db, workers=0)
    base.update(kw)
    return StudyConfig(**base)


def test_inline_run_stores_one_row_per_algorithm_and_rerun_adds_nothing(problem_dir, tmp_path):
    db = tmp_path / "s.duckdb"
    first = run_study(_cfg(problem_dir, db))
    assert (first.problems, first.ran, first.rows_written) == (10, 10, 30)
    # The default reference is the auto portfolio; the summary says which backend answered.
    assert sum(first.backends.values()) == 10 and set(first.backends) <= {"structured", "cpsat"}
    again = run_study(_cfg(problem_dir, db))
    assert (again.skipped, again.ran, again.rows_written) == (10, 0, 0)
    rows = load_rows(db)
    assert len(rows) == 30
    assert len({tuple(r[k] for k in KEY) for r in rows}) == 30
    assert {r["regime"] for r in rows} <= {"base", "threshold", "min_chunk", "ncap", "kv", "mixed"}
    # Adding a heuristic runs only the missing rows.
    more = run_study(_cfg(problem_dir, db, heuristics=(*FAKES, "test_study:broken")))
    assert (more.ran, more.rows_written) == (10, 10)
    # Other solver settings are other rows (part of the identity).
    run_study(_cfg(problem_dir, db, heuristics=FAKES[:1], time_limit=4.0))
    assert len(load_rows(db)) == 60
    # Reports read the latest run by default, or the one asked for.
    latest = load_rows(db, "latest")
    assert len(latest) == 20 and {r["settings"] for r in latest} == {
        "auto;time_limit=4.0;target_tolerance_ns=1000;params={}"
    }
    assert len(load_rows(db, "auto;time_limit=5.0;target_tolerance_ns=1000;params={}")) == 40
    # So is the target tolerance: exact proofs only (0) are rows of their own.
    exact = run_study(_cfg(problem_dir, db, heuristics=FAKES[:1], target_tolerance_ns=0))
    assert (exact.ran, exact.rows_written) == (10, 20)
    rows = load_rows(db, "auto;time_limit=5.0;params={}")
    assert len(rows) == 20 and {r["target_tolerance_ns"] for r in rows} == {0}
    with pytest.raises(InputError, match="settings"):
        load_rows(db, "cbc;time_limit=1")


def test_process_pool_gives_the_same_rows_as_inline(problem_dir, tmp_path):
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    run_study(_cfg(problem_dir, a))
    s = run_study(_cfg(problem_dir, b, workers=2))
    assert s.ran == 10

    assert_same_outcomes(load_rows(a), load_rows(b))


def assert_same_outcomes(a, b):
    """Two runs of a study store the same rows, and where the solver proved the optimum in both
    runs the same outcomes. (CP-SAT stops on wall time: on a loaded machine a problem may be
    proven in one run and not in the other; then only the rows' presence is compared.)"""
    ka = {(r["problem_hash"], r["algorithm"]): r for r in a}
    kb = {(r["problem_hash"], r["algorithm"]): r for r in b}
    assert ka.keys() == kb.keys() and len(a) == len(ka) and len(b) == len(kb)
    both = [k for k in ka if ka[k]["ref_status"] == "OPTIMAL" == kb[k]["ref_status"]]
    assert len(both) >= len(ka) // 2
    for k in both:
        ra, rb = ka[k], kb[k]
        assert (ra["status"], ra["objective_value"], ra["gap"], ra["feasible"]) == (
            rb["status"],
            rb["objective_value"],
            rb["gap"],
            rb["feasible"],
        ), k


def test_study_toml_with_scenarios_section(tmp_path):
    (tmp_path / "study.toml").write_text(
        '[study]\nproblems = "probs"\ndb = "out.duckdb"\nworkers = 0\ntime_limit = 5\n'
        'heuristics = ["test_study:decodes_only"]\n'
        '[scenarios]\nsource = "synthetic"\ncount = 3\nseed = 2\npresets = ["demo"]\n'
        'objective = "target"\npriority_mode = "strict"\nconcurrency = 6\n'
    )
    assert main(["study", "run", str(tmp_path / "study.toml"), "--quiet"]) == 0
    rows = load_rows(tmp_path / "out.duckdb")
    assert len(rows) == 6 and {r["objective"] for r in rows} == {"target"}
    assert len(list((tmp_path / "probs").glob("p*.json"))) == 3
    (tmp_path / "bad.toml").write_text('[study]\nproblem = "x"\n')
    with pytest.raises(Exception, match="unknown key"):
        load_study(tmp_path / "bad.toml")


def test_cli_errors_are_one_line_exit_2(problem_dir, tmp_path, capsys):
    db = str(tmp_path / "e.duckdb")
    assert (
        main(
            [
                "study",
                "run",
                "--problems",
                str(problem_dir),
                "--db",
                db,
                "--heuristics",
                "no-such-heuristic",
                "-q",
            ]
        )
        == 2
    )
    assert "no-such-heuristic" in capsys.readouterr().err
    assert main(["study", "run", "--problems", str(tmp_path / "none"), "--db", db, "-q"]) == 2
    assert main(["study", "report", str(tmp_path / "missing.duckdb")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err


# ---- report ----------------------------------------------------------------------------------
def _row(alg, gap, kind="heuristic", feasible=True, ref="OPTIMAL", gap_kind="optimal", **kw):
    base = dict(
        problem_hash="h",
        algorithm=alg,
        objective="target",
        kind=kind,
        feasible=feasible,
        ref_status=ref,
        gap=gap,
        gap_kind=gap_kind,
        gap_bound=None,
        violations="",
        decision_ms=1.0,
        solve_ms=10.0,
        load=0.5,
        regime="base",
        settings="s",
        version="v",
        preset="demo",
    )
    base.update(kw)
    return base


def test_summary_statistics_by_hand():
    rows = [
        _row("h", 0.0, problem_hash="a", load=0.2),
        _row("h", 0.1, problem_hash="b", load=0.6),
        _row("h", 0.3, problem_hash="c", load=0.9, decision_ms=3.0),
        _row(
            "h",
            None,
            problem_hash="d",
            feasible=False,
            gap_kind="violation",
            violations="budget",
            load=1.1,
        ),
        _row("h", None, problem_hash="e", ref="FEASIBLE", gap_kind="bound", gap_bound=0.5),
        _row("cpsat", 0.0, kind="exact", problem_hash="a"),
    ]
    s = {g["heuristic"]: g for g in summarize(rows)}["h"]
    assert set(s) >= REPORT_FIELDS
    assert s["count"] == 5
    assert s["share_proven_optimal"] == pytest.approx(1 / 5)
    assert s["share_feasible"] == pytest.approx(4 / 5)
    assert s["gap_mean"] == pytest.approx(0.4 / 3)
    assert s["gap_median"] == pytest.approx(0.1)
    assert (s["gap_min"], s["gap_max"]) == (0.0, 0.3)
    assert s["count_reference_unproven"] == 1 and s["gap_bound_max"] == 0.5
    assert s["violation_rules"] == {"budget": 1}
    assert s["decision_ms_median"] == 1.0
    by_load = {b["load"]: b for b in breakdown(rows, "load") if b["heuristic"] == "h"}
    assert by_load["<0.5"]["count"] == 1 and by_load[">=1"]["share_feasible"] == 0.0


def test_report_cli_json_markdown_and_plots(problem_dir, tmp_path, capsys):
    db = tmp_path / "r.duckdb"
    run_study(_cfg(problem_dir, db))
    assert main(["study", "report", str(db), "--json", "--by", "queue_size"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"info", "summary", "by", "breakdown"} and doc["by"] == "queue_size"
    groups = doc["summary"]
    assert all(set(g) >= REPORT_FIELDS for g in groups)
    assert {g["heuristic"] for g in groups} == {*FAKES, "auto"}
    out = tmp_path / "rep"
    assert main(["study", "report", str(db), "-o", str(out), "--by", "queue_size"]) == 0
    # `--json` prints report.json (one shape; only the run's timing may differ)
    assert json.loads((out / "report.json").read_text()) == doc
    text = (out / "report.md").read_text()
    assert "## By queue_size" in text and "proved" in text
    for png in ("gap_cdf.png", "performance_profile.png", "gap_vs_load.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert main(["study", "report", str(db), "--by", "colour"]) == 2


def test_store_rejects_duplicates_and_keeps_one_transaction_per_insert(tmp_path):
    row = {
        "problem_hash": "x",
        "algorithm": "a",
        "objective": "target",
        "target_ms": 1.0,
        "settings": "s",
        "version": "v",
        "kind": "heuristic",
    }
    with Store(tmp_path / "d.duckdb") as st:
        assert st.insert([row, {**row, "algorithm": "b"}]) == 2
        assert st.insert([row]) == 0
        assert st.done("s", "v") == {"x": {"a", "b"}}
        assert st.done("s", "other") == {}


def test_shipped_heuristics_run_when_registered(problem_dir, tmp_path):
    from stepopt.heuristics.base import heuristic_names

    names = [n for n in ("three-stage", "vllm-v1", "sarathi") if n in heuristic_names()]
    if not names:
        pytest.skip("no shipped heuristics registered")
    db = tmp_path / "h.duckdb"
    run_study(_cfg(problem_dir, db, heuristics=tuple(names)))
    rows = load_rows(db)
    assert len(rows) == 10 * (len(names) + 1)
    for r in rows:
        if r["kind"] == "heuristic" and r["gap_kind"] == "optimal":
            assert r["gap"] >= -1e-9  # nothing beats a proven optimum
            assert r["feasible"]
        if r["kind"] == "heuristic" and r["status"] == "HEURISTIC":
            prob_ok = r["feasible"] == (r["gap_kind"] != "violation")
            assert prob_ok


def test_worker_judges_with_the_evaluator(problem_dir):
    from stepopt.io import load_problem

    prob = load_problem(next(iter(sorted(problem_dir.glob("p*.json")))))
    rows = run_task(_task(prob, FAKES[:1]))
    ev = evaluate(prob, decodes_only(prob))
    h = rows[1]
    assert h["latency_ms"] == ev.latency_ms and h["objective_value"] == ev.objective


def test_store_adds_columns_missing_from_an_older_database(tmp_path):
    import duckdb

    from stepopt.studies.store import schema_sql

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(schema_sql().replace("  gap_incumbent DOUBLE,\n", ""))
    cols = {r[0] for r in con.execute("DESCRIBE results").fetchall()}
    con.close()
    assert "gap_incumbent" not in cols
    row = {
        "problem_hash": "x",
        "algorithm": "a",
        "objective": "target",
        "target_ms": 1.0,
        "settings": "s",
        "version": "v",
        "gap_incumbent": 0.25,
    }
    with Store(path) as st:
        assert st.insert([row]) == 1
        assert st.rows()[0]["gap_incumbent"] == 0.25
