"""Engine overhead: a named part of the batch curve, exact, selectable by name or by value."""

from __future__ import annotations

import json

import pytest

from stepopt.errors import InputError
from stepopt.latency.documents import model_from_dict
from stepopt.latency.engine import ENGINES, EngineOverhead, add_engine
from stepopt.latency.model import LatencyModel, StepAggregates
from stepopt.latency.presets import load_preset
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.latency.serialize import model_to_dict


def test_engine_adds_its_line_to_every_batch_size_exactly():
    kernels = LatencyModel(
        tokens=PiecewiseLinear((0, 100), (1_000, 9_000)),
        batch=PiecewiseLinear((0, 3, 10), (0, 1_001, 2_000)),  # no breakpoint at 1
    )
    engine = EngineOverhead("e", step_ns=7_000, per_request_ns=333)
    model = kernels.with_engine(engine)
    for b in range(0, 40):
        agg = StepAggregates(total_tokens=b, batch_size=b)
        parts = model.breakdown_of(agg)
        assert parts["engine"] == (0 if b == 0 else 7_000 + 333 * b)
        assert parts["batch"] == kernels.batch(b)
        assert parts["total"] == agg.predict_ns(kernels) + parts["engine"]
    assert model.with_engine(ENGINES["none"]).batch(5) == kernels.batch(5)
    assert add_engine(model.batch, engine, -1).ys[0] == 0


def test_problem_files_select_an_engine_by_name_or_value_and_round_trip():
    named = model_from_dict({"preset": "a100/codellama-34b/tp2", "engine": "sarathi-2024"})
    plain = load_preset("a100/codellama-34b/tp2")
    assert named.engine == ENGINES["sarathi-2024"]
    assert named.batch(4) - plain.batch(4) == ENGINES["sarathi-2024"].ns(4)
    doc = json.loads(json.dumps(model_to_dict(named)))
    assert doc["engine"]["name"] == "sarathi-2024"
    assert doc["batch"]["y_ns"] == list(plain.batch.ys)  # the kernel part is what is written
    again = model_from_dict(doc)
    assert again.batch == named.batch and again.engine == named.engine
    explicit = model_from_dict({"preset": "demo", "engine": {"step_ns": 5, "per_request_ns": 2}})
    assert explicit.engine.ns(3) == 11


@pytest.mark.parametrize(
    "engine, words",
    [
        ("fast", ["latency_model.engine", "unknown engine 'fast'", "sarathi-2024"]),
        ({"step_ns": -1}, ["latency_model.engine", "step_ns", "greater than or equal to 0"]),
        ({"step_ns": 1.5}, ["latency_model.engine", "step_ns", "integer"]),
        ({"steps": 1}, ["latency_model.engine", "steps"]),
    ],
)
def test_bad_engines_are_one_line_errors(engine, words):
    with pytest.raises(InputError) as info:
        model_from_dict({"preset": "demo", "engine": engine})
    text = str(info.value)
    assert "\n" not in text and all(w in text for w in words)


def test_fitted_engine_brings_sarathi_serve_classes_within_goal():
    """Leave-one-out over Sarathi-Serve's rows, a100/codellama-34b/tp2 kernels."""
    from stepopt.latency import quality as q
    from stepopt.testing.data import require_shared_data

    root = require_shared_data("sarathi-serve")
    rows = q.sarathi_rows(load_preset("a100/codellama-34b/tp2"), root)
    none = q.error_by_kind(rows)
    loo = q.error_by_kind(q.leave_one_out_rows(rows))
    assert none["decode"] > 40  # kernels alone miss the engine
    assert loo["decode"] <= 10 and loo["table-2"] <= 10 and loo["chunked"] <= 10
    shipped = q.fit_engine(rows)
    assert abs(shipped.step_ns - ENGINES["sarathi-2024"].step_ns) < 50_000
    assert abs(shipped.per_request_ns - ENGINES["sarathi-2024"].per_request_ns) < 5_000


def test_simulator_runs_with_an_engine_profile_and_it_slows_every_step(tmp_path, capsys):
    from stepopt.cli import main

    trace = tmp_path / "t.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,5\n0.1,200,3\n")
    runs = {}
    for engine in ("none", "sarathi-2024"):
        args = ["simulate", str(trace), "-P", "a100/codellama-34b/tp2", "--engine", engine]
        assert main([*args, "-q", "--json"]) == 0
        runs[engine] = json.loads(capsys.readouterr().out)
    assert runs["sarathi-2024"]["engine"] == "sarathi-2024"
    fast, slow = (runs[e]["policies"]["three-stage"]["makespan_s"] for e in runs)
    assert slow > fast + 0.018  # at least one step's constant more
    assert main(["simulate", str(trace), "--engine", "fast"]) == 2
    assert "--engine: unknown engine 'fast'" in capsys.readouterr().err
