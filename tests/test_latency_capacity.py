"""KV capacity of presets: KV bytes per token, GPU memory, a memory share -> KV blocks."""

from __future__ import annotations

import json

import pytest

from stepopt.latency.capacity import (
    GIB,
    default_num_free_blocks,
    kv_capacity,
    running_fit_message,
)
from stepopt.latency.presets import load_preset
from stepopt.scenarios import GenerateOptions
from stepopt.scenarios.synthetic import generate_one
from stepopt.testing.factories import decode, make_problem


def test_llama_2_7b_holds_512_kib_per_token_and_its_blocks_follow():
    model = load_preset("a100/llama-2-7b/tp1")
    cap = kv_capacity(model)
    assert cap is not None and cap.kv_bytes_per_token == 512 * 1024
    # 0.9 * 80 GiB minus 13.5 GB of FP16 weights, in blocks of 16 tokens x 512 KiB.
    want = (int(80 * GIB * 0.9) - 2 * 6_738_415_616) // (16 * 512 * 1024)
    assert default_num_free_blocks(model) == want
    assert default_num_free_blocks(model, 0.5) < want
    # TP shards the KV heads and the weights: more blocks per GPU.
    assert default_num_free_blocks(load_preset("a100/llama-2-7b/tp2")) > 2 * want
    assert default_num_free_blocks(load_preset("demo")) is None  # hand-made: no KV size


def test_running_requests_that_cannot_fit_are_named():
    """The issue's example: 64 decodes of 4,096 context (137 GB of KV) on one 80 GB GPU."""
    big = make_problem([decode(f"d{i}", context=4096) for i in range(64)])
    fits = make_problem([decode(f"d{i}", context=4096) for i in range(16)])
    big = big.with_changes(latency=load_preset("a100/llama-2-7b/tp1"))
    fits = fits.with_changes(latency=load_preset("a100/llama-2-7b/tp1"))
    msg = running_fit_message(big)
    assert msg is not None and "16384 KV blocks" in msg and "fits 7609" in msg
    assert running_fit_message(fits) is None


def test_the_cli_warns_about_a_state_no_engine_could_be_in(tmp_path, capsys):
    from stepopt.cli import main

    doc = {
        "config": {"max_num_scheduled_tokens": 512},
        "latency_model": {"preset": "a100/llama-2-7b/tp1"},
        "target_latency_ms": 60,
        "running": [
            {"id": f"r{i}", "prompt_tokens": 4000, "computed_tokens": 4096} for i in range(64)
        ],
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    assert main(["heuristic", str(path)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: running: the running requests hold") and err.count("\n") == 1


@pytest.mark.parametrize("index", range(6))
def test_generated_states_fit_the_kv_cache_of_their_preset(index):
    opts = GenerateOptions(presets=("a100/codellama-34b/tp1",), load=3.0, concurrency=200)
    scen = generate_one(opts, index)
    p = scen.problem
    total = scen.meta["kv_capacity_blocks"]
    held = sum(-(-r.computed_tokens // p.config.block_size) for r in p.running)
    assert held <= total and p.config.num_free_blocks <= total - held
    assert running_fit_message(p) is None
    unlimited = generate_one(GenerateOptions(presets=("demo",)), index).problem
    assert "kv_capacity_blocks" not in generate_one(GenerateOptions(), index).meta
    assert unlimited.latency.name == "demo"


def test_the_simulator_sizes_its_kv_cache_from_the_preset(tmp_path, capsys):
    from stepopt.cli import main

    trace = tmp_path / "t.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,5\n0.1,200,3\n")
    base = ["simulate", str(trace), "-q", "--json"]
    assert main([*base, "-P", "a100/llama-2-7b/tp1", "--gpu-memory-share", "0.5"]) == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert cfg["kv_blocks"] == default_num_free_blocks(load_preset("a100/llama-2-7b/tp1"), 0.5)
    assert main([*base, "-P", "a100/llama-2-7b/tp1", "--kv-blocks", "99"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["kv_blocks"] == 99
    assert main([*base, "-P", "a100/llama-2-70b/tp1"]) == 2
    assert "weights alone exceed 0.9 of the GPU" in capsys.readouterr().err
