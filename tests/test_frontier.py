"""``stepopt frontier``: exact points per target, heuristics placed, Pareto marks."""

from __future__ import annotations

import json

import pytest

from stepopt.cli import main
from stepopt.errors import InputError
from stepopt.evaluate import evaluate, rank_key
from stepopt.heuristics import get_heuristic
from stepopt.io import save_problem
from stepopt.simulate.frontier import FrontierPoint, frontier, pareto_mask, parse_targets
from stepopt.testing.factories import decode, make_problem, prefill, waiting

TARGETS = [20.0, 30.0, 45.0]


@pytest.fixture
def problem():
    return make_problem(
        [decode(f"d{k}", 300 + 40 * k) for k in range(6)] + [prefill("p0", 900, 200)],
        [waiting(f"w{k}", 150 + 170 * k, arrival_time=float(k)) for k in range(4)],
        preset="h100/llama-2-7b/tp1",
        target_ms=30.0,
        max_num_scheduled_tokens=2048,
        max_num_running_reqs=10,
    )


def _pt(lat, tok, feasible=True):
    return FrontierPoint("a", "exact", 1.0, "OPTIMAL", lat, tok, tok, 1, feasible, feasible, 0.0)


def test_pareto_mask():
    pts = [_pt(10, 100), _pt(12, 90), _pt(15, 200), _pt(15, 200), _pt(5, 500, False), _pt(16, 200)]
    assert pareto_mask(pts) == [True, False, True, True, False, False]


def test_exact_is_never_worse_than_the_heuristic_at_any_target(problem):
    pts = frontier(problem, TARGETS, solver="cpsat", time_limit=20, heuristics=["three-stage"])
    assert [(p.kind, p.target_ms) for p in pts] == [
        (k, t) for t in TARGETS for k in ("exact", "heuristic")
    ]
    heur = get_heuristic("three-stage")
    for p in pts:
        if p.kind != "exact":
            continue
        assert p.status == "OPTIMAL"
        prob = problem.with_changes(target_latency_ms=p.target_ms)
        ev_h = evaluate(prob, heur(prob))
        assert abs(p.latency_ms - p.target_ms) <= abs(ev_h.latency_ms - p.target_ms) + 1e-9
        assert rank_key(prob, ev_h)[0] == 0
    assert any(p.pareto for p in pts)


def test_goodput_frontier_is_monotone(problem):
    pts = frontier(problem, TARGETS, solver="cpsat", heuristics=[], objective="goodput")
    tokens = [p.scheduled_tokens for p in pts]
    assert tokens == sorted(tokens)
    assert all(p.latency_ms <= p.target_ms for p in pts)
    # The tokens/latency trade-off: every exact goodput point is Pareto-optimal or tied.
    assert all(p.pareto for p in pts if tokens.count(p.scheduled_tokens) == 1)


def test_frontier_cli_json_and_plot(problem, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "p.json"
    save_problem(problem, path)
    fig = tmp_path / "f.png"
    args = ["frontier", str(path), "--targets", "20,30", "--heuristics", "three-stage,sarathi"]
    assert main([*args, "--json", "--plot", str(fig)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["points"]) == 2 * 3
    assert {p["algorithm"] for p in doc["points"]} == {"auto", "three-stage", "sarathi"}
    assert fig.stat().st_size > 0
    assert main([*args]) == 0
    assert "Pareto" in capsys.readouterr().out


def test_frontier_bad_input(problem, tmp_path, capsys):
    path = tmp_path / "p.json"
    save_problem(problem, path)
    assert main(["frontier", str(path), "--targets", "20,x"]) == 2
    assert "--targets" in capsys.readouterr().err
    assert main(["frontier", str(path), "--targets", "20", "--heuristics", "nope"]) == 2
    with pytest.raises(InputError):
        parse_targets("0,10")
