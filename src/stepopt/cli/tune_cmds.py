"""``stepopt tune``: SLOs in, vLLM scheduler flags out (trace replay, Pareto front)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stepopt.cli.common import command, console, figure_file, output_file, print_json
from stepopt.errors import InputError


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(option, "expected comma-separated integers", text) from None
    if not values:
        raise InputError(option, "expected comma-separated integers", text)
    return values


def cmd_tune(
    trace: Annotated[Path, typer.Argument(help="Trace CSV (as for stepopt simulate).")],
    preset: Annotated[str, typer.Option("--preset", "-P", help="Latency preset.")] = (
        "a100/llama-2-7b/tp1"
    ),
    engine: Annotated[str, typer.Option("--engine", help="Engine overhead profile.")] = "none",
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
    rate: Annotated[
        float | None, typer.Option("--rate", help="Poisson arrivals at R req/s (replaces times).")
    ] = None,
    max_requests: Annotated[
        int | None, typer.Option("--max-requests", help="Replay the first N requests.")
    ] = None,
    memory_share: Annotated[
        float, typer.Option("--gpu-memory-share", help="GPU memory share for weights + KV.")
    ] = 0.9,
    workers: Annotated[int, typer.Option("--workers", help="Parallel replays.")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the arrivals.")] = 0,
    plot: Annotated[Path | None, typer.Option("--plot", help="Pareto front figure.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the stepopt config (JSON).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Recommend max_num_batched_tokens, max_num_seqs and the long-prefill threshold for SLOs.

    Replays the trace for every combination under vLLM's scheduling rule (policy vllm-v1) with
    the preset and engine profile, prints the throughput / SLO-attainment Pareto front and the
    chosen values as vLLM flags and as a stepopt config. See docs/latency.md.
    """
    # long: the command's wiring (flag checks, the sweep, the choice, the files written) and its
    # Pareto-front table
    from stepopt.simulate import load_trace
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
        slo_tbt_ms=slo_tbt_ms,
        slo_ttft_ms=slo_ttft_ms,
        budgets=_ints(budgets, "--budgets"),
        max_seqs=_ints(max_seqs, "--max-seqs"),
        thresholds=_ints(thresholds, "--thresholds"),
        attainment_goal=attainment,
        memory_share=memory_share,
    )
    from stepopt.latency.engine import load_engine
    from stepopt.latency.presets import load_preset

    load_preset(preset)  # unknown names fail before any replay
    load_engine(engine, "--engine")
    tr = load_trace(trace, rate=rate, seed=seed).cut(max_requests, None)
    rows = sweep(spec, tr, workers)
    front = pareto_front(rows)
    chosen, met = choose(rows, spec.attainment_goal)
    config = stepopt_config(spec, chosen)
    if output is not None:
        output.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    if plot is not None:
        plot_front(rows, chosen, plot, spec.attainment_goal)
    doc = {
        "trace": str(trace),
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
    verdict = "meets" if met else "does NOT meet (best attainment shown)"
    console.print(f"chosen ({verdict} the {spec.attainment_goal:g} goal):")
    console.print(f"  vllm serve ... {vllm_flags(chosen)}", markup=False)
    if output is not None:
        console.print(f"  stepopt config written to {output}", markup=False)


def register(app: typer.Typer) -> None:
    command(app, "tune")(cmd_tune)
