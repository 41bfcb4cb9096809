"""Synthetic loads: length distributions, the Splitwise profiles, and `stepopt tune --load`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stepopt.cli import main
from stepopt.errors import InputError
from stepopt.scenarios.lengths import PROFILES, LengthDist, fit_lognormal, parse_length
from stepopt.simulate.trace import synthetic_trace
from stepopt.testing.data import require_shared_data
from stepopt.tracefile import read_trace_csv


@pytest.mark.parametrize(
    "spec", ["fixed:512", "uniform:16,4096", "lognormal:600,1,16384", "zipf:1.5,2048"]
)
def test_a_distribution_reads_back_from_its_own_spec(spec):
    d = parse_length(spec, "--prompt-len")
    assert parse_length(d.spec(), "--prompt-len") == d


def test_draws_follow_the_stated_law():
    rng = np.random.default_rng(1)
    n = 40_000
    assert set(parse_length("fixed:37", "f").draw(rng, 10)) == {37}
    u = parse_length("uniform:10,20", "f").draw(rng, n)
    assert u.min() == 10 and u.max() == 20 and abs(u.mean() - 15) < 0.1
    ln = parse_length("lognormal:600,0.8,100000", "f").draw(rng, n)
    assert abs(np.median(ln) / 600 - 1) < 0.03
    assert abs(np.log(ln).std() - 0.8) < 0.02
    z = parse_length("zipf:2,500", "f").draw(rng, n)
    assert z.min() == 1 and z.max() <= 500
    assert abs((z == 1).mean() - 6 / np.pi**2) < 0.01  # P(1) = 1 / zeta(2)
    capped = parse_length("lognormal:1000,2,3000", "f").draw(rng, n)
    assert capped.max() == 3000 and capped.min() >= 1


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("gamma:3", "expected fixed:N"),
        ("fixed", "fixed takes 1 numbers"),
        ("fixed:0", "N must be a whole number"),
        ("fixed:2.5", "N must be a whole number"),
        ("uniform:9,3", "LO must be <= HI"),
        ("lognormal:600", "lognormal takes 2 or 3 numbers"),
        ("lognormal:-1,1", "MEDIAN must be > 0"),
        ("lognormal:600,nan", "expected fixed:N"),
        ("zipf:1", "exponent A must be > 1"),
        ("zipf:2,x", "expected fixed:N"),
    ],
)
def test_bad_distributions_are_one_line_errors_naming_the_option(spec, needle):
    with pytest.raises(InputError) as exc:
        parse_length(spec, "--output-len")
    text = str(exc.value)
    assert text.startswith("--output-len: ") and needle in text and "\n" not in text


def test_synthetic_trace_is_seeded_poisson_with_the_drawn_lengths():
    p, o = LengthDist("fixed", 300), LengthDist("uniform", 0, 3, lo=0)
    a = synthetic_trace(4000, 20.0, p, o, seed=5)
    b = synthetic_trace(4000, 20.0, p, o, seed=5)
    c = synthetic_trace(4000, 20.0, p, o, seed=6)
    assert np.array_equal(a.arrivals_ns, b.arrivals_ns)
    assert np.array_equal(a.output_tokens, b.output_tokens)
    assert not np.array_equal(a.arrivals_ns, c.arrivals_ns)
    gaps = np.diff(a.arrivals_ns) / 1e9
    assert abs(gaps.mean() * 20.0 - 1) < 0.05 and abs(gaps.std() / gaps.mean() - 1) < 0.05
    assert set(a.prompt_tokens) == {300}
    assert a.output_tokens.min() == 1  # a drawn 0 still emits the first token
    assert "20 req/s" in a.source and "fixed:300" in a.source


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_are_the_fits_of_the_shipped_traces(name):
    kind = name.removeprefix("splitwise-")
    path = require_shared_data("vidur", "data", "processed_traces", f"splitwise_{kind}.csv")
    cols = read_trace_csv(path)
    prof = PROFILES[name]
    assert fit_lognormal(np.array(cols.prompts)) == prof.prompt
    assert fit_lognormal(np.array(cols.outputs)) == prof.output
    span = cols.arrivals_s[-1] - cols.arrivals_s[0]
    assert round(len(cols.prompts) / span, 2) == prof.rate
    # the drawn mean prompt is within 7 % of the trace's (the load the engine sees)
    drawn = prof.prompt.draw(np.random.default_rng(0), 100_000)
    assert abs(drawn.mean() / np.mean(cols.prompts) - 1) < 0.07


def _tune(capsys, *extra):
    args = ["tune", "-P", "a100/llama-2-7b/tp1", "--engine", "vllm-0.6", "--slo-tbt-ms", "60"]
    args += ["--budgets", "256,2048", "--max-seqs", "64", "--workers", "1", *extra]
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tune_replays_a_synthetic_load(capsys):
    code, out, _ = _tune(
        capsys, "--load", "splitwise-conv", "--output-len", "fixed:40", "--rate", "3",
        "--max-requests", "80", "--json",
    )  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["requests"] == 80 and doc["runs"] == 2
    assert "synthetic 3 req/s" in doc["trace"] and "fixed:40" in doc["trace"]
    # every request finishes and produces 40 tokens; the time it takes sets the throughput
    assert all(r["finished"] == 80 for r in doc["pareto_front"])
    assert doc["vllm_flags"].startswith("--enable-chunked-prefill")


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ((), ["trace:", "synthetic load"]),
        (("--load", "chat", "--rate", "1"), ["--load:", "unknown load profile 'chat'", "valid:"]),
        (("--load", "splitwise-code"), ["--rate:", "needs an arrival rate"]),
        (("--load", "splitwise-code", "--rate", "-2"), ["--rate:", "must be > 0", "-2"]),
        (("--prompt-len", "fixed:100", "--rate", "1"), ["--output-len:", "needs both lengths"]),
        (
            ("--prompt-len", "zipf:0.5", "--output-len", "fixed:1", "--rate", "1"),
            ["--prompt-len:", "exponent"],
        ),
        (
            ("--load", "splitwise-code", "--rate", "1", "--max-requests", "0"),
            ["--max-requests:", "must be in [1,"],
        ),
    ],
)
def test_tune_synthetic_bad_input_is_one_line(capsys, extra, needles):
    code, _, err = _tune(capsys, *extra)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_tune_refuses_a_trace_and_a_synthetic_load_together(capsys, tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,2\n")
    code = main(["tune", str(trace), "--slo-tbt-ms", "50", "--load", "splitwise-conv"])
    err = capsys.readouterr().err
    assert code == 2 and "--load: give a trace or a synthetic load, not both" in err


def test_tune_kv_blocks_override_the_preset_capacity(capsys):
    """vLLM's own block count (its log's '# GPU blocks') replaces the preset's upper bound: a
    cache of 1,600 tokens holds one 1,030-token request at a time, so requests queue."""
    load = ["--prompt-len", "fixed:1000", "--output-len", "fixed:30", "--rate", "20"]
    load += ["--max-requests", "24", "--json"]
    runs = {}
    for extra in ((), ("--kv-blocks", "100")):
        code, out, _ = _tune(capsys, *load, *extra)
        assert code == 0
        runs[extra] = json.loads(out)
    default, small = runs[()], runs[("--kv-blocks", "100")]
    assert small["stepopt_config"]["tune"]["kv_blocks"] == 100
    assert default["stepopt_config"]["tune"]["kv_blocks"] is None
    best = {k: max(r["output_tokens_per_s"] for r in v["pareto_front"]) for k, v in runs.items()}
    assert best[("--kv-blocks", "100")] < 0.5 * best[()]
    assert small["chosen"]["ttft_p90_ms"] > 2 * default["chosen"]["ttft_p90_ms"]
    assert small["chosen"]["rejected"] == 0
    # 64 blocks hold 1,024 tokens: no request fits, each is counted as rejected and said so
    code, out, _ = _tune(capsys, *load[:-1], "--kv-blocks", "64")
    assert code == 0 and "24 request(s) can never fit the KV cache" in " ".join(out.split())
    code, _, err = _tune(capsys, *load, "--kv-blocks", "0")
    assert code == 2 and "kv_blocks: must be >= 1" in err


def test_tune_kernel_reaches_the_replays_and_the_config(capsys, tmp_path):
    """A FlashAttention-2 engine on A100 (TensorRT-LLM, vLLM's FlashAttention backend): long
    prompts prefill faster, and the written config loads back with the same kernel."""
    from stepopt.latency.documents import model_from_dict

    load = ["--prompt-len", "fixed:4000", "--output-len", "fixed:8", "--rate", "2"]
    load += ["--max-requests", "20", "--json"]
    ttft = {}
    for kernel in ("measured", "fa2"):
        out = tmp_path / f"{kernel}.json"
        code, text, _ = _tune(capsys, *load, "--kernel", kernel, "-o", str(out))
        assert code == 0
        doc = json.loads(text)
        ttft[kernel] = min(r["ttft_p90_ms"] for r in doc["pareto_front"])
        cfg = json.loads(out.read_text())
        assert cfg["latency_model"]["kernel"] == kernel
        assert model_from_dict(cfg["latency_model"]).meta["attention_kernel"] == kernel
    assert ttft["fa2"] < ttft["measured"]
    code, _, err = _tune(capsys, *load, "--kernel", "fa3")
    assert code == 2 and "--kernel: fa3 has no published efficiency on a100" in err
