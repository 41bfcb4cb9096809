"""Bad input: one clear line naming the field and the value, exit code 2, no traceback."""

import copy
import json
import subprocess
import sys

import pytest

from stepopt.cli import main

GOOD = {
    "config": {"max_num_scheduled_tokens": 512},
    "latency_model": {"preset": "demo"},
    "target_latency_ms": 30,
    "objective": "target",
    "priority_mode": "strict",
    "running": [{"id": "a", "prompt_tokens": 100, "computed_tokens": 120}],
    "waiting": [{"id": "b", "prompt_tokens": 300, "priority": 1, "arrival_time": 2.0}],
}
EXPLICIT = {"tokens": {"x": [0, 100], "y_ns": [1000000, 2000000]}}


def with_change(path, value):
    doc = copy.deepcopy(GOOD)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


DELETE = object()

CASES = {
    "missing field": (
        with_change(["target_latency_ms"], DELETE),
        ["target_latency_ms", "required"],
    ),
    "unknown field": (with_change(["config", "max_tokens"], 5), ["config.max_tokens", "5"]),
    "unknown request field": (
        with_change(["running", 0, "colour"], "red"),
        ["running[0].colour", "red"],
    ),
    "wrong type": (with_change(["target_latency_ms"], "fast"), ["target_latency_ms", "fast"]),
    "negative tokens": (
        with_change(["running", 0, "prompt_tokens"], -5),
        ["running[0].prompt_tokens", "-5"],
    ),
    "non-integer tokens": (
        with_change(["waiting", 0, "prompt_tokens"], 12.5),
        ["waiting[0].prompt_tokens", "12.5"],
    ),
    "bool is not an integer": (
        with_change(["config", "block_size"], True),
        ["config.block_size", "True"],
    ),
    "waiting already computed": (
        with_change(["waiting", 0, "computed_tokens"], 300),
        ["waiting[0].computed_tokens", "300"],
    ),
    "bad objective": (with_change(["objective"], "fastest"), ["objective", "fastest"]),
    "bad priority mode": (with_change(["priority_mode"], "lenient"), ["priority_mode", "lenient"]),
    "non-positive target": (with_change(["target_latency_ms"], 0), ["target_latency_ms", "0"]),
    "unknown preset": (
        with_change(["latency_model"], {"preset": "b200/llama-9/tp3"}),
        ["latency_model.preset: unknown preset", "b200/llama-9/tp3", "valid:", "demo"],
    ),
    "non-monotone breakpoints": (
        with_change(["latency_model"], {"tokens": {"x": [0, 100, 50], "y_ns": [1, 2, 3]}}),
        ["latency_model.tokens.x", "increase strictly", "100", "50"],
    ),
    "breakpoint count mismatch": (
        with_change(["latency_model"], {"tokens": {"x": [0, 100], "y_ns": [1]}}),
        ["latency_model.tokens", "2 values", "1"],
    ),
    "non-integer breakpoint": (
        with_change(["latency_model"], {"tokens": {"x": [0, 100], "y_ns": [1, 2.5]}}),
        ["latency_model.tokens.y_ns[1]", "2.5"],
    ),
    "negative decode coefficient": (
        with_change(["latency_model"], {**EXPLICIT, "decode_context_ps": -3}),
        ["latency_model.decode_context_ps", "-3"],
    ),
    "no slots at all": (
        with_change(["config", "max_num_running_reqs"], 0),
        ["config.max_num_running_reqs", "0"],
    ),
}


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def check_one_line(err, needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def decision_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"tokens": {"a": 1}}))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_problem_file(case, tmp_path, capsys, decision_file):
    doc, needles = CASES[case]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    code, _out, err = run(capsys, "evaluate", path, decision_file)
    assert code == 2
    check_one_line(err, needles)


@pytest.mark.parametrize(
    ("running", "waiting", "needles"),
    [
        (
            [{"id": "a", "prompt_tokens": 5}, {"id": "a", "prompt_tokens": 6}],
            [],
            ["running[1].id", "duplicate id", "running[0]"],
        ),
        (
            [{"id": "a", "prompt_tokens": 5}],
            [{"id": "a", "prompt_tokens": 6}],
            ["waiting[0].id", "both queues", "'a'"],
        ),
    ],
)
def test_duplicate_ids(running, waiting, needles, tmp_path, capsys, decision_file):
    doc = {**GOOD, "running": running, "waiting": waiting}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    code, _, err = run(capsys, "evaluate", path, decision_file)
    assert code == 2
    check_one_line(err, needles)


def test_more_running_than_slots_loads_and_is_infeasible_with_a_reason(tmp_path, capsys):
    # A valid problem (lead decision): no decision is feasible, and every solver says why.
    from stepopt.io import load_problem
    from stepopt.solvers import SolveStatus, solve

    doc = {**GOOD, "config": {"max_num_running_reqs": 1}}
    doc["running"] = [{"id": f"r{k}", "prompt_tokens": 5, "computed_tokens": 5} for k in range(3)]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    problem = load_problem(path)
    for name in ("cpsat", "cbc", "highs", "brute"):
        res = solve(problem, name)
        assert res.status == SolveStatus.INFEASIBLE and res.decision is None, name
        assert "max_num_running_reqs" in res.message, (name, res.message)


def test_malformed_json_names_line_and_column(tmp_path, capsys, decision_file):
    path = tmp_path / "p.json"
    path.write_text('{"config": {,}')
    code, _, err = run(capsys, "evaluate", path, decision_file)
    assert code == 2
    check_one_line(err, ["invalid JSON", "line 1", "column"])


def test_missing_file(tmp_path, capsys, decision_file):
    code, _, err = run(capsys, "evaluate", tmp_path / "nope.json", decision_file)
    assert code == 2
    check_one_line(err, ["no such file", "nope.json"])


@pytest.mark.parametrize(
    ("doc", "needles"),
    [
        ({"tokens": {"a": 1.5}}, ["tokens.a", "1.5"]),
        ({"tokens": {"a": "3"}}, ["tokens.a", "'3'"]),
        ({"toknes": {"a": 1}}, ["tokens", "required"]),
        ([1, 2], ["decision", "list"]),
    ],
)
def test_bad_decision_file(doc, needles, tmp_path, capsys):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(GOOD))
    d = tmp_path / "d.json"
    d.write_text(json.dumps(doc))
    code, _, err = run(capsys, "evaluate", p, d)
    assert code == 2
    check_one_line(err, needles)


def test_evaluate_exit_codes_and_json(tmp_path, capsys):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(GOOD))
    d = tmp_path / "d.json"
    d.write_text(json.dumps({"tokens": {"a": 1, "b": 300}}))
    code, out, _ = run(capsys, "evaluate", p, d, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["feasible"] is True
    for key in ("feasible", "violations", "latency_ms", "tokens", "batch_size", "objective"):
        assert key in doc
    assert doc["tokens"] == {"a": 1, "b": 300} and doc["batch_size"] == 2
    d.write_text(json.dumps({"tokens": {"a": 2, "b": -1}}))
    code, out, _ = run(capsys, "evaluate", p, d, "--json")
    doc = json.loads(out)
    assert code == 1 and not doc["feasible"]
    assert {v["rule"] for v in doc["violations"]} == {"phase", "negative_tokens"}


def test_yaml_problem_files_work(tmp_path, capsys):
    yaml = pytest.importorskip("yaml")
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    d = tmp_path / "d.json"
    d.write_text(json.dumps({"tokens": {"a": 1}}))
    code, out, _ = run(capsys, "evaluate", p, d, "--json")
    assert code == 0 and json.loads(out)["latency_ms"] > 0


def test_console_script_prints_one_line_without_traceback(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(with_change(["running", 0, "prompt_tokens"], -5)))
    proc = subprocess.run(
        [sys.executable, "-m", "stepopt", "evaluate", str(p), str(p)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "running[0].prompt_tokens" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_schema_command_prints_the_json_schema(capsys):
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    assert code == 0
    assert {"config", "latency_model", "target_latency_ms", "running", "waiting"} <= set(
        schema["properties"]
    )
