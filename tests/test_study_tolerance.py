"""Studies with a target tolerance: references proven within it give gaps, flagged apart; the
tolerance is part of the row identity."""

from __future__ import annotations

import pytest

from stepopt.cli import main
from stepopt.errors import InputError
from stepopt.io import problem_hash, problem_to_dict, save_problem
from stepopt.model import Decision
from stepopt.studies import StudyConfig, load_rows, load_study
from stepopt.studies.markdown import markdown_report
from stepopt.studies.report import study_info, summarize
from stepopt.studies.worker import Task, reference_class, run_task
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill

T_MS = 5.5004
ONE_MORE = "test_study_tolerance:one_more"
ONE_LESS = "test_study_tolerance:one_less"


def hand_built():
    """1 us per token, T 400 ns above a reachable latency: optimum |L - T| = 400 ns (500
    tokens), 600 ns with one token more; the LP bound is 0, so a 1 us tolerance stops early."""
    return make_problem(
        [decode("d0"), prefill("p0", prompt=1000, computed=0)],
        latency=linear_latency(per_token_ns=1000),
        target_ms=T_MS,
    )


def one_more(problem):
    return Decision.of({"d0": 1, "p0": 500})  # |L - T| = 600 ns


def one_less(problem):
    return Decision.of({"d0": 1, "p0": 498})  # |L - T| = 1400 ns


def _rows(tolerance):
    p = hand_built()
    task = Task(
        problem_to_dict(p),
        problem_hash(p),
        {"regime": "hand", "preset": "linear"},
        (ONE_MORE, ONE_LESS),
        "cpsat",
        10.0,
        target_tolerance_ns=tolerance,
    )
    return {r["algorithm"]: r for r in run_task(task)}


def test_reference_within_tolerance_gives_flagged_gaps():
    rows = _rows(1000)
    ref = rows["cpsat"]
    assert ref["status"] == "FEASIBLE" and ref["gap_kind"] == "within_tolerance"
    within = ref["ref_proven_within_ns"]
    assert 0 < within <= 1000 and ref["target_tolerance_ns"] == 1000
    assert ref["gap"] == 0.0 and ref["gap_bound"] == pytest.approx(within / 1e6 / T_MS)
    dev_ref = round(ref["objective_value"] * 1e6)
    assert 400 <= dev_ref <= 1400
    for name, dev in ((ONE_MORE, 600), (ONE_LESS, 1400)):
        h = rows[name]
        assert h["gap_kind"] == "within_tolerance" and h["ref_proven_within_ns"] == within
        assert h["gap"] == pytest.approx((dev - dev_ref) / 1e6 / T_MS)
        assert reference_class(h) == "within_tolerance"


def test_tolerance_zero_proves_exactly():
    rows = _rows(0)
    ref = rows["cpsat"]
    assert ref["status"] == "OPTIMAL" and ref["gap_kind"] == "optimal"
    assert ref["ref_proven_within_ns"] == 0 and round(ref["objective_value"] * 1e6) == 400
    assert rows[ONE_MORE]["gap"] == pytest.approx(200 / 1e6 / T_MS)
    assert reference_class(rows[ONE_MORE]) == "exact"


def test_report_counts_exact_and_within_tolerance_apart():
    rows = [*_rows(1000).values(), *_rows(0).values()]
    for r in rows:
        r.update(settings="s", version="v", created_at=None)
    # Two "problems": the tolerance-stopped one and the exact one.
    for r in rows:
        r["problem_hash"] = f"tol{r['target_tolerance_ns']}"
    s = {g["heuristic"]: g for g in summarize(rows)}
    h = s[ONE_LESS]
    assert h["count"] == 2 and h["count_gap"] == 2
    assert h["count_reference_optimal"] == 1 and h["count_reference_within_tolerance"] == 1
    assert h["share_reference_exact"] == 0.5 and h["share_reference_within_tolerance"] == 0.5
    assert h["count_reference_unproven"] == 0
    info = study_info(rows)
    assert (info["reference_exact"], info["reference_within_tolerance"]) == (1, 1)
    text = markdown_report(rows, "regime")
    assert "exact to within 1 us / T" in text


def test_share_proven_optimal_counts_matching_or_beating_the_reference():
    rows = _rows(1000)
    ref_dev = round(rows["cpsat"]["objective_value"] * 1e6)
    s = {g["heuristic"]: g for g in summarize(list(rows.values()))}
    # one_more (600 ns) matches or beats the reference exactly when the reference is >= 600.
    assert s[ONE_MORE]["share_proven_optimal"] == (1.0 if ref_dev >= 600 else 0.0)
    assert s[ONE_LESS]["share_proven_optimal"] == (1.0 if ref_dev >= 1400 else 0.0)


def test_rows_without_tolerance_columns_are_unproven_when_feasible():
    old = {"ref_status": "FEASIBLE", "objective": "target"}
    assert reference_class(old) == "unproven"
    assert reference_class({**old, "ref_proven_within_ns": 5, "target_tolerance_ns": 0}) == (
        "unproven"
    )
    goodput = {**old, "objective": "goodput", "ref_proven_within_ns": 0, "target_tolerance_ns": 9}
    assert reference_class(goodput) == "unproven"
    assert reference_class({"ref_status": "NO_SOLUTION"}) == "missing"


def test_settings_identity_and_validation(tmp_path):
    assert StudyConfig().target_tolerance_ns == 1000
    assert "target_tolerance_ns=1000" in StudyConfig().settings
    assert StudyConfig(target_tolerance_ns=0).settings == "auto;time_limit=2.0;params={}"
    assert StudyConfig(target_tolerance_ns=5).settings != StudyConfig().settings
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="target_tolerance_ns"):
            StudyConfig(target_tolerance_ns=bad)
    with pytest.raises(InputError, match=r"\[study\] target_tolerance_ns"):
        StudyConfig(solver_params={"target_tolerance_ns": 5})
    toml = tmp_path / "s.toml"
    toml.write_text("[study]\ntarget_tolerance_ns = 250\n")
    assert load_study(toml).target_tolerance_ns == 250
    toml.write_text('[study]\ntarget_tolerance_ns = "1us"\n')
    with pytest.raises(InputError, match="target_tolerance_ns"):
        load_study(toml)


def test_cli_flag_sets_the_tolerance(tmp_path, capsys):
    problems = tmp_path / "problems"
    problems.mkdir()
    save_problem(hand_built(), problems / "p.json")
    db = tmp_path / "s.duckdb"
    # CP-SAT: its 1 us tolerance stop leaves a reference "within tolerance" to report.
    args = ["study", "run", "--problems", str(problems), "--db", str(db), "--workers", "0"]
    args += ["--solver", "cpsat"]
    assert main([*args, "--heuristics", ONE_MORE, "--target-tolerance-ns", "0", "--quiet"]) == 0
    rows = load_rows(db, "all")
    assert {r["target_tolerance_ns"] for r in rows} == {0}
    assert {r["gap_kind"] for r in rows} == {"optimal"}
    assert main([*args, "--heuristics", ONE_MORE, "--quiet"]) == 0  # default: 1 us, new rows
    assert len(load_rows(db, "all")) == 4
    assert main(["study", "report", str(db)]) == 0
    assert "within the 1 us tolerance" in capsys.readouterr().out
