"""stepopt tune: the sweep, its Pareto front, the choice and the flags it prints."""

from __future__ import annotations

import json

import pytest

from stepopt.cli import main
from stepopt.errors import InputError
from stepopt.latency.documents import model_from_dict
from stepopt.simulate.tune import TuneSpec, choose, pareto_front, vllm_flags


def _row(budget, tput, att):
    return {
        "max_num_batched_tokens": budget,
        "max_num_seqs": 64,
        "long_prefill_token_threshold": 0,
        "output_tokens_per_s": tput,
        "slo_attainment": att,
    }


def test_front_keeps_only_undominated_points_and_choice_honours_the_goal():
    rows = [_row(256, 100, 1.0), _row(512, 150, 0.95), _row(1024, 140, 0.5), _row(2048, 200, 0.4)]
    assert [r["max_num_batched_tokens"] for r in pareto_front(rows)] == [256, 512, 2048]
    chosen, met = choose(rows, 0.9)
    assert met and chosen["max_num_batched_tokens"] == 512
    chosen, met = choose(rows, 1.0)
    assert met and chosen["max_num_batched_tokens"] == 256
    chosen, met = choose([_row(256, 1, 0.2), _row(512, 2, 0.3)], 0.9)
    assert not met and chosen["max_num_batched_tokens"] == 512
    flags = vllm_flags({**rows[1], "long_prefill_token_threshold": 128})
    assert "--max-num-batched-tokens 512" in flags and "--long-prefill-token-threshold 128" in flags


def test_spec_needs_an_slo():
    with pytest.raises(InputError, match="TBT and/or a TTFT SLO"):
        TuneSpec(preset="demo")


def test_tune_turns_an_slo_into_flags_and_a_config(tmp_path, capsys):
    lines = ["arrived_at,num_prefill_tokens,num_decode_tokens"]
    lines += [f"{i * 0.05:.2f},{300 + 97 * (i % 7)},{20 + i % 11}" for i in range(60)]
    trace = tmp_path / "t.csv"
    trace.write_text("\n".join(lines) + "\n")
    out = tmp_path / "cfg.json"
    args = ["tune", str(trace), "-P", "a100/llama-2-7b/tp1", "--engine", "vllm-0.6"]
    args += ["--slo-tbt-ms", "40", "--budgets", "128,512,2048", "--max-seqs", "8,64"]
    args += ["--workers", "1", "-o", str(out), "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["runs"] == 6
    chosen = doc["chosen"]
    assert doc["goal_met"] == (chosen["slo_attainment"] >= 0.9)
    assert f"--max-num-batched-tokens {chosen['max_num_batched_tokens']}" in doc["vllm_flags"]
    front = doc["pareto_front"]
    for r in front:  # nothing on the front is beaten on both axes by another front point
        assert not any(
            o["output_tokens_per_s"] > r["output_tokens_per_s"]
            and o["slo_attainment"] > r["slo_attainment"]
            for o in front
        )
    cfg = json.loads(out.read_text())
    assert cfg["config"]["max_num_scheduled_tokens"] == chosen["max_num_batched_tokens"]
    assert model_from_dict(cfg["latency_model"]).engine.name == "vllm-0.6"
    assert main([*args[:-1], "--budgets", "a,b"]) == 2
