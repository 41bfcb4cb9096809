"""``stepopt heuristic``: the same JSON fields as ``stepopt solve``, judged by the evaluator."""

from __future__ import annotations

import json

import pytest

from stepopt.cli import main
from stepopt.evaluate import evaluate
from stepopt.heuristics import get_heuristic
from stepopt.io import load_decision, load_problem, save_problem
from stepopt.solvers.base import SolveResult, SolveStatus
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill, waiting


@pytest.fixture
def problem_file(tmp_path):
    p = make_problem(
        [decode("d0"), prefill("p0", prompt=400, computed=100)],
        [waiting("w0", 200), waiting("w1", 300, priority=-1, arrival_time=5)],
        latency=linear_latency(),
        target_ms=20.0,
        max_num_scheduled_tokens=512,
        max_num_running_reqs=3,
    )
    path = tmp_path / "p.json"
    save_problem(p, path)
    return path


@pytest.mark.parametrize("name", ["three-stage", "vllm-v1", "vllm-v1-priority", "sarathi"])
def test_heuristic_json_has_the_solve_fields(problem_file, tmp_path, capsys, name):
    out = tmp_path / "d.json"
    code = main(["heuristic", str(problem_file), "--name", name, "--json", "-o", str(out)])
    doc = json.loads(capsys.readouterr().out)
    solve_keys = set(SolveResult(SolveStatus.OPTIMAL, "x").to_dict())
    assert solve_keys <= set(doc)
    assert doc["status"] == "HEURISTIC" and doc["solver"] == name
    assert doc["bound"] is None and doc["gap"] is None and doc["solve_ms"] >= 0
    # Everything about the decision comes from the evaluator.
    prob = load_problem(problem_file)
    dec = load_decision(out)
    assert dec.scheduled() == doc["tokens"] == get_heuristic(name)(prob).scheduled()
    ev = evaluate(prob, dec)
    assert doc["latency_ns"] == ev.latency_ns and doc["objective"] == ev.objective
    assert doc["feasible"] == ev.feasible
    assert [v["rule"] for v in doc["violations"]] == [str(v.rule) for v in ev.violations]
    assert code == (0 if ev.feasible else 1)


def test_fcfs_vllm_is_reported_infeasible_in_strict_mode(problem_file, capsys):
    # w1 is more urgent but queued second: vLLM's FCFS admits w0 first.
    assert main(["heuristic", str(problem_file), "--name", "vllm-v1", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert "priority_waiting_order" in {v["rule"] for v in doc["violations"]}


def test_heuristic_table(problem_file, capsys):
    assert main(["heuristic", str(problem_file)]) == 0
    out = capsys.readouterr().out
    assert "three-stage" in out and "decision time" in out


def test_params_reach_the_heuristic(problem_file, capsys):
    argv = ["heuristic", str(problem_file), "-n", "sarathi", "-p", "chunk_size=100", "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scheduled_tokens"] == 100 and doc["params"] == {"chunk_size": 100}
    argv = ["heuristic", str(problem_file), "-n", "vllm-v1", "-p", "policy=priority", "--json"]
    main(argv)
    assert "w1" in json.loads(capsys.readouterr().out)["tokens"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--name", "fifo"], "valid: sarathi, three-stage, vllm-v1"),
        (["-n", "sarathi", "-p", "chunk=3"], "valid: chunk_size"),
        (["-n", "sarathi", "-p", "chunk_size"], "key=value"),
        (["-n", "sarathi", "-p", "chunk_size=0"], "chunk_size"),
        (["-n", "vllm-v1", "-p", "policy=lifo"], "policy"),
    ],
)
def test_bad_input_is_one_line_exit_2(problem_file, capsys, args, needle):
    assert main(["heuristic", str(problem_file), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
