"""Problem generators: reproducible, valid, covering the regimes where greedy loses."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from stepopt.cli import main
from stepopt.errors import InputError
from stepopt.io import load_problem, problem_hash
from stepopt.scenarios import REGIMES, GenerateOptions, generate, iter_scenarios, read_manifest
from stepopt.scenarios.common import blocks_needed, reference_latency_ms
from stepopt.testing.data import require_shared_data

TRACE = "arrived_at,num_prefill_tokens,num_decode_tokens\n" + "".join(
    f"{0.05 * k:.3f},{100 + 97 * (k % 23)},{5 + 13 * (k % 7)}\n" for k in range(200)
)


@pytest.fixture
def trace_csv(tmp_path: Path) -> Path:
    p = tmp_path / "trace.csv"
    p.write_text(TRACE)
    return p


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.parametrize("source", ["synthetic", "trace"])
def test_same_seed_writes_identical_files_and_other_seeds_differ(tmp_path, trace_csv, source):
    src = "synthetic" if source == "synthetic" else f"trace:{trace_csv}"
    opts = GenerateOptions(count=12, seed=7)
    generate(src, opts, tmp_path / "a")
    generate(src, opts, tmp_path / "b")
    generate(src, GenerateOptions(count=12, seed=8), tmp_path / "c")
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert len(a) == 13  # 12 problems + manifest
    assert sum(a[k] != c[k] for k in a if k != "manifest.json") >= 10


def test_problem_i_depends_only_on_seed_and_index(tmp_path):
    generate("synthetic", GenerateOptions(count=4, seed=3), tmp_path / "small")
    generate("synthetic", GenerateOptions(count=9, seed=3), tmp_path / "big")
    small, big = _files(tmp_path / "small"), _files(tmp_path / "big")
    assert all(small[k] == big[k] for k in small if k != "manifest.json")


def test_default_mix_covers_every_regime_objective_and_priority_mode(tmp_path):
    recs = generate("synthetic", GenerateOptions(count=60, seed=1), tmp_path)
    assert set(Counter(r["regime"] for r in recs)) == set(REGIMES)
    assert {r["objective"] for r in recs} == {"target", "goodput"}
    assert {r["priority_mode"] for r in recs} == {"strict", "weighted"}
    # The manifest describes the file it names (hash and queue sizes).
    man = read_manifest(tmp_path)
    for rec in recs[:10]:
        prob = load_problem(tmp_path / rec["file"])
        assert man[rec["file"]]["hash"] == problem_hash(prob)
        assert rec["n_waiting"] == len(prob.waiting)
        assert rec["target_ms"] == prob.target_latency_ms


def test_regime_knobs_are_in_the_problems():
    opts = GenerateOptions(count=80, seed=2, concurrency=16)
    seen = set()
    for sc in iter_scenarios("synthetic", opts):
        p, m = sc.problem, sc.meta
        cfg = p.config
        seen.add(m["regime"])
        assert (cfg.long_prefill_token_threshold > 0) == (m["regime"] in ("threshold", "mixed"))
        assert (cfg.min_prefill_chunk > 64) == (m["regime"] in ("min_chunk", "mixed"))
        assert (cfg.num_free_blocks is not None) == (m["regime"] in ("kv", "mixed"))
        if cfg.num_free_blocks is not None:
            need = blocks_needed(p)
            assert cfg.num_free_blocks < need or need <= 1  # KV capacity binds
        if m["regime"] == "ncap":
            short = [r for r in p.waiting if r.prompt_tokens <= 64]
            assert len(short) >= 16
            assert p.free_slots < len(p.waiting)  # the N cap binds before the budget
        # Default target: factor x the latency of all decodes plus one 512-token chunk.
        ref = reference_latency_ms(p)
        assert 0.8 * ref - 1e-3 <= p.target_latency_ms <= 1.6 * ref + 1e-3
    assert seen == set(REGIMES)


def test_fixed_target_objective_and_mode_are_honoured(tmp_path):
    opts = GenerateOptions(
        count=10, seed=0, target_ms=42.5, objective="goodput", priority_mode="weighted"
    )
    for sc in iter_scenarios("synthetic", opts):
        assert sc.problem.target_latency_ms == 42.5
        assert sc.problem.objective == "goodput"
        assert sc.problem.priority_mode == "weighted"
        assert sc.meta["target_factor"] is None


def test_trace_states_follow_the_steady_engine_model(trace_csv):
    opts = GenerateOptions(count=30, seed=5, regimes=("base",))
    n_pre = n_dec = 0
    prompts = {100 + 97 * k for k in range(23)}
    for sc in iter_scenarios(f"trace:{trace_csv}", opts):
        p = sc.problem
        for r in p.running:
            assert r.prompt_tokens in prompts and r.output_tokens is not None
            if r.is_decode:
                n_dec += 1
                assert r.prompt_tokens <= r.computed_tokens < r.prompt_tokens + r.output_tokens
            else:
                n_pre += 1
                assert r.computed_tokens % 512 == 0
        times = [r.arrival_time for r in p.waiting]
        assert times == sorted(times)  # consecutive trace rows, in arrival order
        assert all(r.computed_tokens == 0 for r in p.waiting)
    assert n_dec > 10 * n_pre > 0  # mostly decodes, a few in chunked prefill


def test_load_drives_queue_lengths():
    def mean_sizes(load):
        scs = list(
            iter_scenarios(
                "synthetic", GenerateOptions(count=30, seed=4, load=load, regimes=("base",))
            )
        )
        return (
            sum(len(s.problem.running) for s in scs) / 30,
            sum(len(s.problem.waiting) for s in scs) / 30,
        )

    lo, hi = mean_sizes(0.3), mean_sizes(1.2)
    assert hi[0] > 2 * lo[0]
    assert hi[1] > 5 * max(lo[1], 0.5)


def test_trace_with_a_missing_column_names_it(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("arrived_at,num_prefill_tokens\n0.0,10\n")
    with pytest.raises(InputError, match="num_decode_tokens"):
        list(iter_scenarios(f"trace:{p}", GenerateOptions(count=1)))


def test_snapshot_reads_a_directory_of_problem_files(tmp_path):
    generate("synthetic", GenerateOptions(count=6, seed=9), tmp_path / "snap")
    out = generate(
        f"snapshot:{tmp_path / 'snap'}",
        GenerateOptions(count=4, seed=1, objective="target"),
        tmp_path / "out",
    )
    assert len(out) == 4
    src = read_manifest(tmp_path / "snap")
    for rec in out:
        orig = src[rec["snapshot_file"]]
        assert rec["regime"] == orig["regime"]  # knobs carried over from the source manifest
        assert load_problem(tmp_path / "out" / rec["file"]).objective == "target"


def test_cli_generate_and_bad_source(tmp_path, capsys):
    code = main(
        [
            "scenarios",
            "generate",
            "--count",
            "3",
            "--seed",
            "1",
            "--preset",
            "demo",
            "-o",
            str(tmp_path / "g"),
            "--json",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["problems"] == 3 and len(list((tmp_path / "g").glob("p*.json"))) == 3
    assert main(["scenarios", "generate", "--source", "csv", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "source" in err and "csv" in err
    assert main(["scenarios", "generate", "--preset", "nope", "-o", str(tmp_path / "y")]) == 2


def test_real_trace_builds_valid_problems(tmp_path):
    csv = require_shared_data("vidur", "data", "processed_traces", "splitwise_conv.csv")
    recs = generate(f"trace:{csv}", GenerateOptions(count=8, seed=0), tmp_path)
    for rec in recs:
        prob = load_problem(tmp_path / rec["file"])
        assert prob.requests and prob.target_latency_ms > 0


def test_snapshots_written_by_the_simulator_become_a_problem_set(tmp_path, trace_csv, capsys):
    pytest.importorskip("stepopt.simulate.snapshots")
    snap = tmp_path / "snap"
    code = main(
        [
            "simulate",
            str(trace_csv),
            "--preset",
            "demo",
            "--policy",
            "three-stage",
            "--max-requests",
            "40",
            "--snapshot-dir",
            str(snap),
            "--snapshot-every",
            "3",
            "--snapshot-limit",
            "8",
        ]
    )
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    out = tmp_path / "set"
    assert (
        main(
            [
                "scenarios",
                "generate",
                "--source",
                f"snapshot:{snap}",
                "--count",
                "5",
                "--objective",
                "goodput",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["problems"] == 5 and doc["presets"] == ["demo"]
    man = read_manifest(out)
    for rec in man.values():
        assert rec["regime"] == "snapshot" and rec["snapshot_file"].startswith("step-")
        prob = load_problem(out / rec["file"])
        assert prob.objective == "goodput"
        assert prob.requests == load_problem(snap / rec["snapshot_file"]).requests


def test_generate_refuses_a_directory_with_a_problem_set_unless_replacing(tmp_path):
    first = generate("synthetic", GenerateOptions(count=5, seed=1), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for count in (5, 3):  # the same set or another: refused, nothing touched
        with pytest.raises(InputError, match=r"already holds a problem set \(5 problem file"):
            generate("synthetic", GenerateOptions(count=count, seed=1), tmp_path)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    again = generate("synthetic", GenerateOptions(count=3, seed=1), tmp_path, replace=True)
    assert again == first[:3]  # problem i depends on (seed, i) alone
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "p00000.json",
        "p00001.json",
        "p00002.json",
    ]
