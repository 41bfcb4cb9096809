"""``stepopt solve`` and ``stepopt export``: output, exit codes, files."""

from __future__ import annotations

import json

import pytest

from stepopt.cli import main
from stepopt.io import load_decision, save_problem
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill, waiting


@pytest.fixture
def problem_file(tmp_path):
    p = make_problem(
        [decode("d0"), prefill("p0", prompt=400, computed=100)],
        [waiting("w0", 200)],
        latency=linear_latency(),
        target_ms=20.0,
    )
    path = tmp_path / "p.json"
    save_problem(p, path)
    return path


@pytest.mark.parametrize("solver", ["cpsat", "cbc", "highs", "brute"])
def test_solve_json(problem_file, tmp_path, capsys, solver):
    out = tmp_path / "d.json"
    code = main(["solve", str(problem_file), "--solver", solver, "--json", "-o", str(out)])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("status", "objective", "bound", "gap", "latency_ms", "tokens", "solve_ms"):
        assert key in doc
    assert doc["status"] == "OPTIMAL"
    assert doc["solver"] == solver
    # 5 ms + 50 us per token, T = 20 ms: 300 tokens hit the target exactly.
    assert doc["objective"] == 0.0
    assert doc["tiebreak"] == 300
    assert sum(doc["tokens"].values()) == 300
    assert load_decision(out).scheduled() == doc["tokens"]


def test_solve_table(problem_file, capsys):
    assert main(["solve", str(problem_file)]) == 0
    out = capsys.readouterr().out
    assert "OPTIMAL" in out and "|L - T|" in out


def test_solve_infeasible_exits_1(tmp_path, capsys):
    p = make_problem([decode("d0")], latency=linear_latency(), objective="goodput", target_ms=1.0)
    path = tmp_path / "p.json"
    save_problem(p, path)
    assert main(["solve", str(path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "INFEASIBLE"


def test_unknown_solver_exits_2_listing_valid_ones(problem_file, capsys):
    assert main(["solve", str(problem_file), "--solver", "gurobi"]) == 2
    err = capsys.readouterr().err
    assert "gurobi" in err and "cpsat" in err and "brute" in err


def test_bad_time_limit_exits_2(problem_file, capsys):
    assert main(["solve", str(problem_file), "--time-limit", "0"]) == 2
    assert "--time-limit" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["lp", "mps"])
def test_export(problem_file, tmp_path, fmt):
    out = tmp_path / f"m.{fmt}"
    assert main(["export", str(problem_file), "--format", fmt, "-o", str(out)]) == 0
    text = out.read_text()
    assert ("Minimize" in text or "MINIMIZE" in text) if fmt == "lp" else "ROWS" in text
    assert "budget" in text


def test_export_bad_format_exits_2(problem_file, tmp_path, capsys):
    assert main(["export", str(problem_file), "--format", "xls", "-o", str(tmp_path / "x")]) == 2
    assert "--format" in capsys.readouterr().err
