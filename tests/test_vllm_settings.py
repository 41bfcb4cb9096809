"""Settings of the vLLM scheduler class: environment, config file, one-line errors."""

from __future__ import annotations

import json

import pytest

from stepopt.errors import InputError, UnknownNameError
from stepopt.integrations.vllm_settings import load_latency, load_settings
from stepopt.latency.presets import load_preset
from stepopt.latency.serialize import model_to_dict


def test_environment_only():
    s = load_settings({"STEPOPT_TARGET_MS": "42.5", "STEPOPT_OBJECTIVE": "goodput"})
    assert s.target_ms == 42.5 and s.objective == "goodput"
    assert s.heuristic == "three-stage" and s.preset == "demo" and s.min_prefill_chunk == 64


def test_file_values_are_overridden_by_the_environment(tmp_path):
    f = tmp_path / "stepopt.yaml"
    f.write_text("target_ms: 30\nheuristic: vllm-v1\nmin_prefill_chunk: 16\n")
    s = load_settings({"STEPOPT_CONFIG": str(f), "STEPOPT_TARGET_MS": "55"})
    assert s.target_ms == 55 and s.heuristic == "vllm-v1" and s.min_prefill_chunk == 16


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({}, "STEPOPT_TARGET_MS"),
        ({"STEPOPT_TARGET_MS": "fast"}, "STEPOPT_TARGET_MS"),
        ({"STEPOPT_TARGET_MS": "-1"}, "STEPOPT_TARGET_MS"),
        ({"STEPOPT_TARGET_MS": "40", "STEPOPT_OBJECTIVE": "speed"}, "STEPOPT_OBJECTIVE"),
        (
            {"STEPOPT_TARGET_MS": "40", "STEPOPT_MIN_PREFILL_CHUNK": "0"},
            "STEPOPT_MIN_PREFILL_CHUNK",
        ),
    ],
)
def test_bad_values_name_the_variable(env, field):
    with pytest.raises(InputError) as err:
        load_settings(env)
    assert str(err.value).startswith(field + ":")
    assert "\n" not in str(err.value)


def test_bad_file_key_names_the_file_and_key(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"target_ms": 40, "objective": "fast"}))
    with pytest.raises(InputError, match=r"s\.json: objective"):
        load_settings({"STEPOPT_CONFIG": str(f)})
    f.write_text(json.dumps({"target_ms": 40, "taget": 1}))
    with pytest.raises(InputError, match="taget"):
        load_settings({"STEPOPT_CONFIG": str(f)})
    with pytest.raises(InputError, match="no such file"):
        load_settings({"STEPOPT_CONFIG": str(tmp_path / "missing.yaml")})


def test_latency_by_preset_name_or_file(tmp_path):
    assert load_latency("demo") == load_preset("demo")
    f = tmp_path / "model.json"
    f.write_text(json.dumps(model_to_dict(load_preset("demo"))))
    assert load_latency(str(f)).tokens == load_preset("demo").tokens
    with pytest.raises(UnknownNameError):
        load_latency("no-such-preset")


def test_heuristic_parameters_from_the_spec_or_the_file(tmp_path):
    from stepopt.integrations.vllm_settings import resolve

    s = load_settings(
        {"STEPOPT_TARGET_MS": "40", "STEPOPT_HEURISTIC": "three-stage[full_scan=true]"}
    )
    r = resolve(s, reserve_full_prompt=True)
    # vLLM's full-prompt admission check is on by default: the heuristic gets it too.
    assert r.params == {"full_scan": True, "reserve_full_prompt": True}
    f = tmp_path / "s.yaml"
    f.write_text("target_ms: 40\nheuristic_params: {reserve_full_prompt: false}\n")
    r = resolve(load_settings({"STEPOPT_CONFIG": str(f)}), reserve_full_prompt=True)
    assert r.params == {"reserve_full_prompt": False}  # an explicit setting wins
    # A heuristic without the parameter is left alone.
    s = load_settings({"STEPOPT_TARGET_MS": "40", "STEPOPT_HEURISTIC": "sarathi"})
    assert "reserve_full_prompt" not in resolve(s, reserve_full_prompt=True).params


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("three-stage[speed=3]", "STEPOPT_HEURISTIC: unknown parameter 'speed'"),
        ("three-stage[full_scan=maybe]", "STEPOPT_HEURISTIC: full_scan takes true or false"),
        ("three-stage[full_scan", "expected NAME or NAME"),
        ("exact[x=1]", "takes no parameters"),
    ],
)
def test_bad_heuristic_specs_are_one_line_errors(spec, match):
    from stepopt.integrations.vllm_settings import resolve

    with pytest.raises(InputError, match=match) as err:
        resolve(load_settings({"STEPOPT_TARGET_MS": "40", "STEPOPT_HEURISTIC": spec}))
    assert "\n" not in str(err.value)


def test_exact_rule_decides_within_its_time_limit_and_falls_back():
    from stepopt.evaluate import evaluate, rank_key
    from stepopt.integrations.vllm_settings import resolve
    from stepopt.solvers.base import solve
    from stepopt.testing.factories import decodes, make_problem, waitings

    s = load_settings(
        {"STEPOPT_TARGET_MS": "30", "STEPOPT_HEURISTIC": "exact", "STEPOPT_TIME_LIMIT_MS": "500"}
    )
    rule = resolve(s).heuristic
    problem = make_problem(decodes(4), waitings([300, 200]), target_ms=30.0)
    ev = evaluate(problem, rule(problem))
    best = solve(problem, "cpsat", time_limit=10)
    assert ev.feasible and rank_key(problem, ev) == rank_key(problem, best.evaluation)


def test_exact_rule_warms_every_backend_it_may_use_and_starts_from_zero(monkeypatch):
    from stepopt.integrations.vllm_settings import resolve
    from stepopt.solvers import base

    used: list[str] = []
    real = base.solve

    def spy(problem, solver="auto", **kw):
        used.append(solver)
        return real(problem, solver, **kw)

    monkeypatch.setattr(base, "solve", spy)
    s = load_settings({"STEPOPT_TARGET_MS": "30", "STEPOPT_HEURISTIC": "exact"})
    policy = resolve(s).policy
    assert policy is not None and policy.solver == "auto"
    assert {"auto", "cpsat"} <= set(used)  # auto's first backend runs inside auto
    assert policy.stats.decisions == policy.stats.fallbacks == 0  # the warm-up is not counted
    assert resolve(load_settings({"STEPOPT_TARGET_MS": "30"})).policy is None
