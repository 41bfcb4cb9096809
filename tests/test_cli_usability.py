"""What a newcomer meets: help that fits 80 columns, --version, the README's testing snippet as
written, an external solver's answer read back, frontier marks and labels, simulate progress."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from stepopt import Decision, evaluate
from stepopt.cli import app, main
from stepopt.io import load_decision, save_problem
from stepopt.testing.factories import decode, make_problem, prefill, waiting

README = Path(__file__).resolve().parent.parent / "README.md"


def _commands() -> list[list[str]]:
    """Every command path of the CLI (``[]`` is the root), walked from click's tree."""
    import typer

    root = typer.main.get_command(app)
    out: list[list[str]] = []

    def walk(cmd, path):
        out.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(root, [])
    return out


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "stepopt")
def test_help_fits_80_columns_and_names_every_option(path, capsys, monkeypatch):
    import typer

    monkeypatch.setenv("COLUMNS", "80")
    assert main([*path, "--help"]) == 0
    text = capsys.readouterr().out
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: stepopt {' '.join(path)}".rstrip())
    assert "{" not in usage and "<bool>" not in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    for param in cmd.params:
        for opt in [*param.opts, *param.secondary_opts]:
            if opt.startswith("-"):
                assert opt in text, (opt, path)


def test_version(capsys):
    from stepopt import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"stepopt {__version__}"


def test_readme_testing_snippet_runs_as_written():
    text = README.read_text()
    section = text.split("## Testing your own heuristic", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns: dict = {}
    exec(compile(code, "README.md (testing snippet)", "exec"), ns)
    tests = [v for k, v in ns.items() if k.startswith("test_") and callable(v)]
    assert len(tests) == 2
    for t in tests:
        t()


# ---- export / import-solution ------------------------------------------------------------
@pytest.fixture
def problem(tmp_path):
    p = make_problem(
        [decode("d0", 300), decode("d1", 500), prefill("p0", 900, 200)],
        [waiting("w0", 250, arrival_time=1.0), waiting("w1", 600, arrival_time=2.0)],
        preset="h100/llama-2-7b/tp1",
        target_ms=22.0,
        max_num_scheduled_tokens=1024,
    )
    path = tmp_path / "p.json"
    save_problem(p, path)
    return p, path


def test_export_solve_with_cbc_import_and_evaluate(problem, tmp_path, capsys):
    import shutil

    coin = pytest.importorskip("pulp.apis.coin_api")
    bundled = Path(coin.pulp_cbc_path)  # the CBC binary PuLP ships
    cbc = str(bundled) if bundled.is_file() else shutil.which("cbc")
    if cbc is None:
        pytest.skip("no CBC binary (PuLP's or on PATH)")
    prob, path = problem
    lp = tmp_path / "step.lp"
    assert main(["export", str(path), "-o", str(lp), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    var_map = json.loads((tmp_path / "step.map.json").read_text())
    assert doc["map"] == str(tmp_path / "step.map.json")
    assert sorted(var_map["tokens"].values()) == sorted(r.id for r in prob.requests)
    sol = tmp_path / "step.sol"
    subprocess.run([cbc, str(lp), "solve", "solu", str(sol)], check=True, capture_output=True)
    dec = tmp_path / "d.json"
    argv = ["import-solution", str(path), str(sol), "--map", str(tmp_path / "step.map.json")]
    assert main([*argv, "-o", str(dec), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["feasible"]
    # CBC's answer is optimal for the exported (primary) objective: CP-SAT's |L - T|.
    assert main(["solve", str(path), "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert ev["objective"] == pytest.approx(best["objective"], abs=1e-9)
    assert evaluate(prob, load_decision(dec)).objective == pytest.approx(ev["objective"])


def test_import_reads_highs_and_name_value_solutions(problem, tmp_path, capsys):
    from stepopt.exchange import read_solution

    var_map = {"z0": "d0", "c3": "p0", "c4": "w0"}
    highs = "Model status\nOptimal\n\n# Primal solution values\nFeasible\nObjective 5\n"
    highs += "# Columns 3\nz0 1\nc3 200\nc4 0\n# Rows 2\nc4 99\n"
    (tmp_path / "h.sol").write_text(highs)
    assert read_solution(tmp_path / "h.sol", var_map) == Decision({"d0": 1, "p0": 200})
    (tmp_path / "g.sol").write_text("# Objective value = 5\nc3 64.0000001\nz0 1\n")
    assert read_solution(tmp_path / "g.sol", var_map) == Decision({"d0": 1, "p0": 64})
    (tmp_path / "bad.sol").write_text("Infeasible - objective value 0\n")
    from stepopt.errors import InputError

    with pytest.raises(InputError, match="no solution"):
        read_solution(tmp_path / "bad.sol", var_map)
    (tmp_path / "frac.sol").write_text("c3 10.5\n")
    with pytest.raises(InputError, match="not an integer"):
        read_solution(tmp_path / "frac.sol", var_map)


# ---- frontier --------------------------------------------------------------------------------
def test_a_violating_point_is_never_pareto():
    from stepopt.simulate.frontier import FrontierPoint, pareto_mask

    def pt(lat, tok, feasible, hard=True):
        return FrontierPoint(
            "a", "heuristic", 1.0, "HEURISTIC", lat, tok, tok, 1, feasible, hard, 0.0
        )

    # The goodput point over its cap (hard-feasible, not feasible) dominates on paper.
    pts = [pt(10, 100, True), pt(9, 500, False), pt(12, 300, True)]
    assert pareto_mask(pts) == [True, False, True]


def test_frontier_labels_of_coinciding_points_are_merged():
    from stepopt.simulate.frontier import FrontierPoint
    from stepopt.simulate.plot import target_labels

    def pt(t, lat, tok):
        return FrontierPoint("cpsat", "exact", t, "OPTIMAL", lat, tok, tok, 1, True, True, 0.0)

    labels = target_labels([pt(20, 10.0, 100), pt(30, 10.0, 100), pt(40, 12.0, 300)])
    assert sorted(labels) == [(10.0, 100, "T=20,30"), (12.0, 300, "T=40")]


def test_frontier_table_marks_no_violating_row(problem, capsys):
    _, path = problem
    argv = [
        "frontier",
        str(path),
        "--targets",
        "5,40",
        "--objective",
        "goodput",
        "--json",
        "--heuristics",
        "three-stage,vllm-v1",
    ]
    main(argv)
    points = json.loads(capsys.readouterr().out)["points"]
    assert points and all(p["feasible"] for p in points if p["pareto"])


# ---- simulate progress -----------------------------------------------------------------------
def test_simulate_progress_lines_in_a_log(tmp_path, capsys, monkeypatch):
    import stepopt.cli.progress as progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr("stepopt.cli.simulate_cmds.PROGRESS_EVERY_STEPS", 5)
    lines = ["arrived_at,num_prefill_tokens,num_decode_tokens"]
    lines += [f"{0.01 * k:.2f},{100 + 10 * k},{5 + k % 7}" for k in range(30)]
    trace = tmp_path / "t.csv"
    trace.write_text("\n".join(lines) + "\n")
    assert main(["simulate", str(trace), "--target-ms", "40"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err and all(
        re.search(r"\d+/30 finished, \d+ steps, simulated [\d.]+ s, .* ETA", line) for line in err
    ), err


def test_infeasible_says_why(problem, tmp_path, capsys):
    prob, _ = problem
    path = tmp_path / "inf.json"
    save_problem(prob.with_changes(objective="goodput", target_latency_ms=0.5), path)
    assert main(["solve", str(path), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "INFEASIBLE"
    assert doc["message"].startswith("even the empty step is infeasible: latency_cap")
    assert "exceeds the target 0.500 ms" in doc["message"]


def test_heuristic_json_has_the_fields_of_solve_json(problem, capsys):
    _, path = problem
    main(["solve", str(path), "--json"])
    solved = json.loads(capsys.readouterr().out)
    main(["heuristic", str(path), "--json"])
    heur = json.loads(capsys.readouterr().out)
    assert set(heur) == set(solved) | {"preempted"}
    assert heur["status"] == "HEURISTIC" and heur["bound"] is None and heur["gap"] is None


def test_schema_states_the_bounds(capsys):
    from stepopt.limits import MAX_TARGET_MS, MAX_TOKENS, MIN_TARGET_MS

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    req = schema["$defs"]["RequestSpec"]["properties"]
    assert req["prompt_tokens"]["maximum"] == req["computed_tokens"]["maximum"] == MAX_TOKENS
    target = schema["properties"]["target_latency_ms"]
    assert (target["minimum"], target["maximum"]) == (MIN_TARGET_MS, MAX_TARGET_MS)
    cfg = schema["$defs"]["ConfigSpec"]["properties"]
    assert all("maximum" in cfg[k] for k in ("block_size", "max_num_scheduled_tokens"))


def test_module_function_is_found_in_the_current_directory(tmp_path, monkeypatch, capsys):
    import sys

    (tmp_path / "team_heuristics_cwd.py").write_text(
        "from stepopt import Decision\n\ndef nothing(problem):\n    return Decision({})\n"
    )
    monkeypatch.chdir(tmp_path)
    # As under the console script: neither "" nor the current directory on the path.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    path = tmp_path / "p.json"
    save_problem(make_problem([decode("d0", 100)], [], preset="demo", target_ms=10.0), path)
    assert main(["heuristic", str(path), "-n", "team_heuristics_cwd:nothing", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == {}
    assert sys.path[-1] == str(tmp_path)  # searched after everything installed
