"""``stepopt tune``: SLOs in, vLLM scheduler flags out (trace or synthetic load replay, Pareto
front)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from stepopt.cli.common import command, console, figure_file, output_file, print_json
from stepopt.errors import InputError
from stepopt.limits import MAX_REQUESTS


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(option, "expected comma-separated integers", text) from None
    if not values:
        raise InputError(option, "expected comma-separated integers", text)
    return values


SYNTHETIC_REQUESTS = 300


def _synthetic(
    load: str | None, prompt_len: str | None, output_len: str | None, rate: float | None
) -> tuple[Any, Any, float]:
    """Length distributions and rate of a synthetic load (a named profile, overridden by
    ``--prompt-len``/``--output-len``)."""
    from stepopt.scenarios.lengths import load_profile, parse_length

    prof = load_profile(load) if load else None
    prompts = parse_length(prompt_len, "--prompt-len") if prompt_len else prof and prof.prompt
    outputs = parse_length(output_len, "--output-len") if output_len else prof and prof.output
    if prompts is None or outputs is None:
        missing = "--prompt-len" if prompts is None else "--output-len"
        raise InputError(missing, "a synthetic load needs both lengths (or --load PROFILE)")
    if rate is None:
        raise InputError("--rate", "a synthetic load needs an arrival rate (requests/s)")
    if not rate > 0:
        raise InputError("--rate", "must be > 0 requests per second", rate)
    return prompts, outputs, rate


def _requests(
    trace: Path | None,
    load: str | None,
    prompt_len: str | None,
    output_len: str | None,
    rate: float | None,
    seed: int,
    max_requests: int | None,
) -> Any:
    """The trace to replay: a CSV, or a synthetic load of ``max_requests`` requests."""
    from stepopt.simulate.trace import load_trace, synthetic_trace

    synthetic = [
        o
        for o, v in (("--load", load), ("--prompt-len", prompt_len), ("--output-len", output_len))
        if v is not None
    ]
    if trace is not None:
        if synthetic:
            raise InputError(synthetic[0], "give a trace or a synthetic load, not both")
        return load_trace(trace, rate=rate, seed=seed).cut(max_requests, None)
    if not synthetic:
        raise InputError("trace", "give a trace CSV or a synthetic load (--load, --prompt-len)")
    prompts, outputs, r = _synthetic(load, prompt_len, output_len, rate)
    n = SYNTHETIC_REQUESTS if max_requests is None else max_requests
    if not 1 <= n <= MAX_REQUESTS:
        raise InputError("--max-requests", f"must be in [1, {MAX_REQUESTS}]", n)
    return synthetic_trace(n, r, prompts, outputs, seed)


def cmd_tune(
    trace: Annotated[
        Path | None,
        typer.Argument(help="Trace CSV (as for stepopt simulate); none: a synthetic load."),
    ] = None,
    preset: Annotated[str, typer.Option("--preset", "-P", help="Latency preset.")] = (
        "a100/llama-2-7b/tp1"
    ),
    engine: Annotated[str, typer.Option("--engine", help="Engine overhead profile.")] = "none",
    kernel: Annotated[
        str | None,
        typer.Option(
            "--kernel",
            help="Prefill attention kernel: measured, fa2, fa3 (default: the preset's own).",
        ),
    ] = None,
    slo_tbt_ms: Annotated[
        float | None, typer.Option("--slo-tbt-ms", help="TBT SLO (per-request p99).")
    ] = None,
    slo_ttft_ms: Annotated[float | None, typer.Option("--slo-ttft-ms", help="TTFT SLO.")] = None,
    attainment: Annotated[
        float, typer.Option("--attainment", help="Share of requests that must meet the SLOs.")
    ] = 0.9,
    budgets: Annotated[
        str, typer.Option("--budgets", help="max_num_batched_tokens values.")
    ] = "256,512,1024,2048,4096,8192",
    max_seqs: Annotated[str, typer.Option("--max-seqs", help="max_num_seqs values.")] = (
        "64,128,256"
    ),
    thresholds: Annotated[
        str, typer.Option("--thresholds", help="long_prefill_token_threshold values (0 = off).")
    ] = "0",
    load: Annotated[
        str | None,
        typer.Option("--load", help="Synthetic load profile: splitwise-conv, splitwise-code."),
    ] = None,
    prompt_len: Annotated[
        str | None,
        typer.Option(
            "--prompt-len",
            help="Synthetic prompt lengths: fixed:N, uniform:LO,HI, lognormal:MEDIAN,SIGMA[,MAX]"
            " or zipf:A[,MAX] (overrides --load's).",
        ),
    ] = None,
    output_len: Annotated[
        str | None,
        typer.Option("--output-len", help="Synthetic output lengths, same forms."),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            help="Poisson arrivals at R req/s (replaces a trace's times; synthetic: required).",
        ),
    ] = None,
    max_requests: Annotated[
        int | None,
        typer.Option(
            "--max-requests",
            help=f"Replay the first N requests (synthetic: N requests, {SYNTHETIC_REQUESTS}).",
        ),
    ] = None,
    memory_share: Annotated[
        float, typer.Option("--gpu-memory-share", help="GPU memory share for weights + KV.")
    ] = 0.9,
    kv_blocks: Annotated[
        int | None,
        typer.Option(
            "--kv-blocks",
            help="Total KV blocks, e.g. vLLM's logged '# GPU blocks' (default: from the preset "
            "at --gpu-memory-share, an upper bound).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Parallel replays.")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of arrivals and lengths.")] = 0,
    plot: Annotated[Path | None, typer.Option("--plot", help="Pareto front figure.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the stepopt config (JSON).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Recommend max_num_batched_tokens, max_num_seqs and the long-prefill threshold for SLOs.

    Replays the trace (or a synthetic load: Poisson arrivals at --rate, lengths from --load or
    --prompt-len/--output-len) for every combination under vLLM's scheduling rule (policy
    vllm-v1) with the preset and engine profile, prints the throughput / SLO-attainment Pareto
    front and the chosen values as vLLM flags and as a stepopt config. See docs/latency.md.
    """
    # long: the command's wiring (flag checks, the load, the sweep, the choice, the files
    # written) and its Pareto-front table
    from stepopt.simulate.tune import (
        TuneSpec,
        choose,
        pareto_front,
        plot_front,
        stepopt_config,
        sweep,
        vllm_flags,
    )

    if workers < 1:
        raise InputError("--workers", "must be >= 1", workers)
    figure_file(plot, "--plot")
    output_file(output, "--output")
    spec = TuneSpec(
        preset=preset,
        engine=engine,
        kernel=kernel,
        slo_tbt_ms=slo_tbt_ms,
        slo_ttft_ms=slo_ttft_ms,
        budgets=_ints(budgets, "--budgets"),
        max_seqs=_ints(max_seqs, "--max-seqs"),
        thresholds=_ints(thresholds, "--thresholds"),
        attainment_goal=attainment,
        memory_share=memory_share,
        kv_blocks=kv_blocks,
    )
    spec.latency()  # unknown names fail before any replay
    tr = _requests(trace, load, prompt_len, output_len, rate, seed, max_requests)
    rows = sweep(spec, tr, workers)
    front = pareto_front(rows)
    chosen, met = choose(rows, spec.attainment_goal)
    config = stepopt_config(spec, chosen)
    if output is not None:
        output.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    if plot is not None:
        plot_front(rows, chosen, plot, spec.attainment_goal)
    doc = {
        "trace": str(trace) if trace is not None else tr.source,
        "requests": len(tr),
        "runs": len(rows),
        "pareto_front": front,
        "chosen": chosen,
        "goal_met": met,
        "vllm_flags": vllm_flags(chosen),
        "stepopt_config": config,
    }
    if json_out:
        print_json(doc)
        return
    from rich.table import Table

    t = Table(
        title=f"Pareto front: {len(front)} of {len(rows)} configurations ({len(tr)} requests)"
    )
    for col in ("budget", "max_num_seqs", "threshold", "out tok/s", "SLO attain.", "TBT p99 ms"):
        t.add_column(col, justify="right")
    for r in front:
        t.add_row(
            str(r["max_num_batched_tokens"]),
            str(r["max_num_seqs"]),
            str(r["long_prefill_token_threshold"]),
            f"{r['output_tokens_per_s'] or 0:.0f}",
            f"{r['slo_attainment'] or 0:.3f}",
            "-" if r["tbt_p99_ms"] is None else f"{r['tbt_p99_ms']:.1f}",
        )
    console.print(t)
    if chosen.get("rejected"):
        console.print(
            f"warning: {chosen['rejected']} request(s) can never fit the KV cache "
            "(rejected; see --kv-blocks, --gpu-memory-share)",
            markup=False,
        )
    verdict = "meets" if met else "does NOT meet (best attainment shown)"
    console.print(f"chosen ({verdict} the {spec.attainment_goal:g} goal):")
    console.print(f"  vllm serve ... {vllm_flags(chosen)}", markup=False)
    if output is not None:
        console.print(f"  stepopt config written to {output}", markup=False)


def register(app: typer.Typer) -> None:
    command(app, "tune")(cmd_tune)
