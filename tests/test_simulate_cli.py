"""``stepopt simulate``: compare policies from one command, plans, plots, snapshots, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stepopt.cli import main
from stepopt.testing.data import require_shared_data


@pytest.fixture
def trace_file(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    arr = np.sort(rng.uniform(0, 4, n))
    lines = ["arrived_at,num_prefill_tokens,num_decode_tokens"]
    lines += [
        f"{a:.6f},{p},{d}"
        for a, p, d in zip(arr, rng.integers(20, 900, n), rng.integers(2, 30, n), strict=True)
    ]
    path = tmp_path / "trace.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_compare_policies_json(trace_file, capsys):
    code = main(
        [
            "simulate",
            str(trace_file),
            "--policies",
            "three-stage,sarathi,vllm-v1",
            "--target-ms",
            "40",
            "--slo-ttft-ms",
            "500",
            "--slo-tbt-ms",
            "60",
            "--kv-blocks",
            "400",
            "--json",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["policies"]) == ["three-stage", "sarathi", "vllm-v1"]
    for s in doc["policies"].values():
        assert s["finished"] == doc["requests"] == 40
        assert 0 <= s["slo_attainment"] <= s["ttft_attainment"] <= 1
        assert s["goodput_rps"] <= s["throughput_rps"]
        assert s["ttft_p50_ms"] <= s["ttft_p90_ms"] <= s["ttft_p99_ms"]
        assert s["tbt_p50_ms"] <= s["tbt_p99_ms"]
    assert doc["target_rule"] == "fixed:40"


def test_table_plan_plot_and_snapshots(trace_file, tmp_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("matplotlib")
    plan = tmp_path / "plan.parquet"
    fig = tmp_path / "cmp.png"
    code = main(
        [
            "simulate",
            str(trace_file),
            "--policy",
            "three-stage",
            "--target-rule",
            "adaptive:base=50,min=20,queue=8",
            "--max-requests",
            "25",
            "-o",
            str(plan),
            "--plot",
            str(fig),
            "--snapshot-dir",
            str(tmp_path / "snaps"),
            "--snapshot-every",
            "10",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "TTFT p99" in out and "three-stage" in out
    steps = pq.read_table(plan).to_pandas()
    reqs = pq.read_table(tmp_path / "plan.requests.parquet").to_pandas()
    assert len(reqs) == 25 and steps["target_ms"].between(20, 50).all()
    assert fig.stat().st_size > 0
    manifest = json.loads((tmp_path / "snaps" / "manifest.json").read_text())
    assert len(manifest["problems"]) == -(-len(steps) // 10)


def test_several_policies_write_one_plan_each(trace_file, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    plan = tmp_path / "p.parquet"
    pols = "sarathi,sarathi[chunk_size=128],vllm-v1"
    args = ["simulate", str(trace_file), "--policies", pols, "-o", str(plan)]
    assert main([*args, "--duration", "1.5", "--json"]) == 0
    assert (tmp_path / "p.sarathi.parquet").is_file()
    assert (tmp_path / "p.sarathi-chunk_size-128.parquet").is_file()
    assert (tmp_path / "p.vllm-v1.requests.parquet").is_file()
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["policies"]) == ["sarathi", "sarathi[chunk_size=128]", "vllm-v1"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--policy", "fastest"], "unknown heuristic"),
        (["--target-rule", "adaptive:base=5"], "target-rule"),
        (["--target-ms", "5", "--target-rule", "5"], "not both"),
        (["--snapshot-dir", "x"], "--snapshot-every"),
        (["--kv-blocks", "0"], "kv_blocks"),
        (["--policies", "sarathi,sarathi"], "twice"),
        (["--rate", "-1"], "rate"),
    ],
)
def test_bad_input_is_one_line_exit_2(trace_file, capsys, extra, needle):
    assert main(["simulate", str(trace_file), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_policy_breaking_a_rule_is_reported(trace_file, capsys):
    # Target below the cheapest step: three-stage schedules nothing and the run cannot progress.
    assert main(["simulate", str(trace_file), "--target-ms", "0.001", "--json"]) == 2
    err = capsys.readouterr().err
    assert "rule progress" in err and "step" in err


@pytest.mark.data
def test_real_trace_prefix_under_three_policies(capsys):
    path = require_shared_data("vidur", "data", "processed_traces", "splitwise_conv.csv")
    args = ["simulate", str(path), "--max-requests", "150", "--preset", "h100/llama-2-7b/tp1"]
    args += ["--policies", "three-stage,vllm-v1", "--kv-blocks", "4000", "--json"]
    args += ["--slo-ttft-ms", "1000", "--slo-tbt-ms", "100"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    for s in doc["policies"].values():
        assert s["finished"] == 150
        assert s["slo_attainment"] > 0.5


@pytest.mark.parametrize(
    ("blocked", "flag", "extra"),
    [("pyarrow", "-o", "parquet"), ("matplotlib", "--plot", "plot")],
)
def test_missing_extra_is_one_line(trace_file, tmp_path, capsys, monkeypatch, blocked, flag, extra):
    monkeypatch.setitem(__import__("sys").modules, blocked, None)  # import raises ImportError
    args = ["simulate", str(trace_file), "--max-requests", "5", flag, str(tmp_path / "x")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"stepopt[{extra}]" in err[0]
