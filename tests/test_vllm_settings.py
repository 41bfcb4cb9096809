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
