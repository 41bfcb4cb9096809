"""``problems(...)``: valid problems; with a preset, engine-scale numbers that CP-SAT still
proves optimal quickly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from stepopt.evaluate import evaluate
from stepopt.io import problem_from_dict, problem_hash, problem_to_dict
from stepopt.latency.presets import load_preset
from stepopt.model import Decision
from stepopt.solvers.base import SolveStatus, solve
from stepopt.testing import problems
from stepopt.testing.assertions import draw_examples

PRESET = "a100/llama-2-7b/tp1"


@settings(max_examples=40)
@given(problems(max_requests=6, preset=PRESET))
def test_preset_problems_are_valid_files_and_keep_the_fields(problem):
    again = problem_from_dict(problem_to_dict(problem))  # the edge validation accepts it
    assert problem_hash(again) == problem_hash(problem)
    assert problem.latency == load_preset(PRESET)
    assert len(problem.requests) <= 6
    assert len(problem.running) <= problem.config.max_num_running_reqs
    assert all(1 <= r.prompt_tokens <= 2048 for r in problem.requests)
    assert all(r.computed_tokens < r.prompt_tokens for r in problem.waiting)
    # The empty decision breaks no hard rule, and a goodput cap admits the decodes alone.
    ev = evaluate(problem, Decision())
    assert ev.hard_feasible
    lo = problem.latency.predict_ns(problem, {r.id: 1 for r in problem.running_decodes})
    assert problem.target_ns >= lo
    assert evaluate(problem, Decision.of({r.id: 1 for r in problem.running_decodes})).feasible or (
        problem.config.num_free_blocks is not None  # KV pressure may leave decodes out
    )


@pytest.mark.parametrize(("objective", "mode"), [("target", "strict"), ("goodput", "weighted")])
def test_fixed_fields(objective, mode):
    ps = draw_examples(problems(max_requests=4, objective=objective, priority_mode=mode), 10)
    assert {(p.objective, p.priority_mode) for p in ps} == {(objective, mode)}
    ps = draw_examples(
        problems(max_requests=4, objective=objective, priority_mode=mode, preset="demo"), 10
    )
    assert {(p.objective, p.priority_mode) for p in ps} == {(objective, mode)}


def test_preset_scale_is_realistic_and_solvable():
    ps = draw_examples(problems(max_requests=6, preset=PRESET), 30)
    prompts = [r.prompt_tokens for p in ps for r in p.requests]
    assert max(prompts) > 512  # engine-scale prompts, not the tiny default ones
    assert {p.config.block_size for p in ps} == {16}
    assert min(p.config.max_num_scheduled_tokens for p in ps) >= 256
    assert any(p.config.num_free_blocks is not None for p in ps)
    assert {p.objective for p in ps} == {"target", "goodput"}
    for p in ps[::3]:
        res = solve(p, "cpsat", time_limit=20)
        assert res.status == SolveStatus.OPTIMAL, (res.status, res.message)


def test_default_problems_stay_tiny():
    ps = draw_examples(problems(max_requests=5), 30)
    assert max(r.prompt_tokens for p in ps for r in p.requests) <= 40
    assert max(p.config.max_num_scheduled_tokens for p in ps) <= 80


def test_drawn_problem_sets_do_not_depend_on_what_else_is_imported(tmp_path, monkeypatch):
    """Hypothesis mixes literals of loaded project modules into its draws; gap thresholds are
    judged on drawn sets, so ``draw_examples`` must give the same set either way."""
    import importlib

    strategy = problems(max_requests=4, objective="target", preset="demo")
    before = [problem_hash(p) for p in draw_examples(strategy, 20)]
    module = tmp_path / "stepopt_many_literals.py"
    literals = ", ".join(str(v) for v in [*range(2, 2100, 7), 0.25, 0.5, 1.1])
    module.write_text(f"VALUES = [{literals}]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("stepopt_many_literals")
    after = [problem_hash(p) for p in draw_examples(strategy, 20)]
    assert after == before
