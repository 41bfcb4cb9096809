"""Fit quality on the real Vidur profiles, and the latency CLI (skipped without ../shared/data)."""

from __future__ import annotations

import json

import pytest

from stepopt.cli import main
from stepopt.latency.build import fit_combo, preset_document
from stepopt.latency.presets import preset_document as shipped_document
from stepopt.latency.profiles import load_profile
from stepopt.latency.quality import batches_mape_pct, mixed_batches
from stepopt.testing.data import require_shared_data

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def profiling():
    return require_shared_data("vidur", "data", "profiling")


@pytest.mark.parametrize("combo", [("a100", "codellama-34b", 2), ("a100", "llama-2-70b", 2)])
def test_measured_shapes_fit_mixed_batches_within_3_percent(profiling, combo):
    profile = load_profile(profiling, *combo)
    fitter = fit_combo(profiling, *combo)
    assert fitter.model_.meta["attention"] == "measured"
    assert fitter.holdout_mape_pct_ <= 2.0
    batches = mixed_batches(profile, fitter, n=300, seed=1)
    assert batches_mape_pct(batches) <= 3.0


def test_shipped_preset_is_what_the_fit_gives(profiling):
    doc = preset_document(fit_combo(profiling, "h100", "llama-2-7b", 1))
    shipped = shipped_document("h100/llama-2-7b/tp1")
    assert doc["tokens"] == shipped["tokens"]
    assert doc["decode_context_ps"] == shipped["decode_context_ps"]
    assert doc["meta"]["fit_mape_pct"] == shipped["meta"]["fit_mape_pct"]


def test_cli_fit_writes_a_loadable_preset(profiling, tmp_path, capsys):
    out = tmp_path / "p.json"
    argv = ["latency", "fit", str(profiling), "--gpu", "a100", "--model", "llama-3-8b"]
    assert main([*argv, "--tp", "4", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["attention"] == "scaled" and summary["fit_mape_pct"] < 3
    problem = {
        "latency_model": json.loads(out.read_text()),
        "target_latency_ms": 50,
        "running": [{"id": "a", "prompt_tokens": 100, "computed_tokens": 100}],
    }
    (tmp_path / "prob.json").write_text(json.dumps(problem))
    (tmp_path / "dec.json").write_text(json.dumps({"tokens": {"a": 1}}))
    code = main(["evaluate", str(tmp_path / "prob.json"), str(tmp_path / "dec.json"), "--json"])
    assert code in (0, 1) and json.loads(capsys.readouterr().out)["latency_ns"] > 0


def test_cli_bad_combination_lists_the_valid_ones(profiling, tmp_path, capsys):
    argv = ["latency", "fit", str(profiling), "--gpu", "h100", "--model", "llama-3-8b"]
    assert main([*argv, "--tp", "1", "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "h100/llama-3-8b/tp1" in err
    assert "valid: " in err and "a100/llama-3-8b/tp1" in err


def test_cli_plot(profiling, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "fig.png"
    assert (
        main(
            ["latency", "plot", "a100/codellama-34b/tp2", "--data", str(profiling), "-o", str(out)]
        )
        == 0
    )
    assert out.stat().st_size > 10_000
    assert main(["latency", "plot", "demo", "--data", str(profiling), "-o", str(out)]) == 2
