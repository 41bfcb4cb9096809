"""The ``simulate`` and ``frontier`` commands (docs/simulate.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stepopt.cli.common import (
    command,
    console,
    figure_file,
    output_dir,
    output_file,
    print_json,
)
from stepopt.errors import InputError
from stepopt.limits import check_seed, check_target_ms, check_time_limit, finite

if TYPE_CHECKING:
    from rich.table import Table

DEFAULT_TARGET_MS = 50.0
# Steps between progress updates: frequent enough for an exact policy (~0.05 s a step), cheap
# for a heuristic (~10,000 steps/s: a few hundred updates a second, well under 1 % of the run).
PROGRESS_EVERY_STEPS = 20

# Rows of the comparison table: (summary key, label, format).
_ROWS: tuple[tuple[str, str, str], ...] = (
    ("finished", "finished requests", "{:d}"),
    ("rejected", "rejected (KV too small)", "{:d}"),
    ("makespan_s", "makespan (s)", "{:.1f}"),
    ("throughput_rps", "throughput (req/s)", "{:.3f}"),
    ("output_tokens_per_s", "output tokens/s", "{:.0f}"),
    ("total_tokens_per_s", "prompt+output tokens/s", "{:.0f}"),
    ("ttft_p50_ms", "TTFT p50 (ms)", "{:.1f}"),
    ("ttft_p90_ms", "TTFT p90 (ms)", "{:.1f}"),
    ("ttft_p99_ms", "TTFT p99 (ms)", "{:.1f}"),
    ("tbt_p50_ms", "TBT p50 (ms)", "{:.2f}"),
    ("tbt_p90_ms", "TBT p90 (ms)", "{:.2f}"),
    ("tbt_p99_ms", "TBT p99 (ms)", "{:.2f}"),
    ("e2e_p50_ms", "end-to-end p50 (ms)", "{:.0f}"),
    ("e2e_p99_ms", "end-to-end p99 (ms)", "{:.0f}"),
    ("ttft_attainment", "TTFT SLO attainment", "{:.1%}"),
    ("tbt_attainment", "TBT SLO attainment", "{:.1%}"),
    ("slo_attainment", "both SLOs attainment", "{:.1%}"),
    ("goodput_rps", "goodput (req/s, both SLOs)", "{:.3f}"),
    ("steps", "steps", "{:d}"),
    ("step_latency_ms_mean", "mean step latency (ms)", "{:.2f}"),
    ("batch_size_mean", "mean batch size", "{:.1f}"),
    ("scheduled_tokens_mean", "mean scheduled tokens", "{:.0f}"),
    ("preemptions", "preemptions", "{:d}"),
    ("fallbacks", "exact: fallbacks", "{:d}"),
    ("wall_s", "wall time (s)", "{:.2f}"),
    ("steps_per_s", "simulated steps/s", "{:.0f}"),
)


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def comparison_table(summaries: list[dict[str, Any]], title: str) -> Table:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(title))
    t.add_column("metric", style="bold")
    for s in summaries:
        t.add_column(escape(s["policy"]), justify="right")
    for key, label, spec in _ROWS:
        if all(s.get(key) is None for s in summaries):
            continue
        if key == "fallbacks" and not any(s["policy"].startswith("exact") for s in summaries):
            continue
        t.add_row(label, *(_fmt(s.get(key), spec) for s in summaries))
    return t


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _check_flags(
    *,
    time_limit: float | None,
    seed: int | None = None,
    positive: dict[str, float | None],
    files: dict[str, Path | None],
) -> None:
    """Numeric flags and output files checked before any work, each a one-line error."""
    check_time_limit(time_limit)
    if seed is not None:
        check_seed(seed)
    for flag, value in positive.items():
        if value is not None and not finite(value, flag) > 0:
            raise InputError(flag, "must be > 0", value)
    for flag, path in files.items():
        if flag == "--plot":
            figure_file(path, flag)
        else:
            output_file(path, flag)


def _target_rule(target_ms: float | None, target_rule: str | None) -> Any:
    from stepopt.simulate.targets import FixedTarget, parse_target_rule

    if target_ms is not None and target_rule is not None:
        raise InputError("--target-rule", "give --target-ms or --target-rule, not both", None)
    if target_ms is not None:
        check_target_ms(target_ms, "--target-ms")
    if target_rule is not None:
        return parse_target_rule(target_rule)
    return FixedTarget(DEFAULT_TARGET_MS if target_ms is None else target_ms)


def _check_outputs(
    output: Path | None,
    snapshot_dir: Path | None,
    snapshot_every: int | None,
    snapshot_prob: float | None,
) -> None:
    """Output options fail before the run: a missing extra, a folder that cannot be made,
    a snapshot folder without a schedule."""
    output_dir(snapshot_dir, "--snapshot-dir")
    if output is not None:
        from stepopt.simulate.plan import require_pyarrow

        require_pyarrow()
    if snapshot_dir is not None and (snapshot_every is None) == (snapshot_prob is None):
        raise InputError("--snapshot-dir", "needs one of --snapshot-every, --snapshot-prob", None)


# The command's signature is its option list (typer reads it): most of its length.
def cmd_simulate(
    trace: Annotated[Path, typer.Argument(help="Trace CSV (arrived_at, num_prefill_tokens, ...)")],
    preset: Annotated[
        str, typer.Option("--preset", "-P", help="Latency preset or model file (JSON).")
    ] = "demo",
    engine: Annotated[
        str,
        typer.Option("--engine", help="Engine overhead profile (stepopt latency engines)."),
    ] = "none",
    policy: Annotated[
        str,
        typer.Option(
            "--policy", help="A heuristic (NAME or NAME[key=value,...]), or exact[:SOLVER]."
        ),
    ] = "three-stage",
    policies: Annotated[
        str | None, typer.Option("--policies", help="Compare several: a,b,c (overrides --policy).")
    ] = None,
    target_ms: Annotated[
        float | None,
        typer.Option("--target-ms", help=f"Fixed target (default {DEFAULT_TARGET_MS:g})."),
    ] = None,
    target_rule: Annotated[
        str | None,
        typer.Option(
            "--target-rule", help="fixed:MS or adaptive:base=50,min=25,queue=64[,shape=step]."
        ),
    ] = None,
    objective: Annotated[str, typer.Option("--objective", help="target or goodput.")] = "target",
    priority_mode: Annotated[
        str, typer.Option("--priority-mode", help="strict or weighted.")
    ] = "strict",
    solver: Annotated[str, typer.Option("--solver", help="Solver of the exact policy.")] = "auto",
    time_limit: Annotated[
        float, typer.Option("--time-limit", help="Exact policy: seconds per step.")
    ] = 1.0,
    fallback: Annotated[
        str, typer.Option("--fallback", help="Exact policy: heuristic used without a solution.")
    ] = "three-stage",
    budget: Annotated[
        int, typer.Option("--max-num-scheduled-tokens", "--budget", help="Token budget per step.")
    ] = 8192,
    max_running: Annotated[
        int, typer.Option("--max-num-running-reqs", "--max-running", help="max_num_seqs.")
    ] = 256,
    threshold: Annotated[
        int, typer.Option("--long-prefill-token-threshold", help="Chunk cap (0 = none).")
    ] = 0,
    min_chunk: Annotated[int, typer.Option("--min-prefill-chunk", help="Smallest chunk.")] = 64,
    block_size: Annotated[int, typer.Option("--block-size", help="KV block size (tokens).")] = 16,
    kv_blocks: Annotated[
        int | None,
        typer.Option(
            "--kv-blocks",
            help="Total KV blocks (default: what the preset's GPU holds at --gpu-memory-share; "
            "unlimited for presets without a KV size).",
        ),
    ] = None,
    memory_share: Annotated[
        float,
        typer.Option(
            "--gpu-memory-share", help="Share of GPU memory for weights + KV (vLLM's default)."
        ),
    ] = 0.9,
    rate: Annotated[
        float | None, typer.Option("--rate", help="Poisson arrivals at R req/s (replaces times).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed (arrivals, snapshot sampling).")] = 0,
    max_requests: Annotated[
        int | None, typer.Option("--max-requests", help="Replay the first N requests.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Replay arrivals of the first S seconds.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Plan file PLAN.parquet (+ PLAN.requests.parquet); with several policies "
            "one pair per policy: PLAN.POLICY.parquet and PLAN.POLICY.requests.parquet.",
        ),
    ] = None,
    slo_ttft_ms: Annotated[float | None, typer.Option("--slo-ttft-ms", help="TTFT SLO.")] = None,
    slo_tbt_ms: Annotated[
        float | None, typer.Option("--slo-tbt-ms", help="TBT SLO (per-request p99).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a comparison figure.")] = None,
    snapshot_dir: Annotated[
        Path | None, typer.Option("--snapshot-dir", help="Dump sampled step problems here.")
    ] = None,
    snapshot_every: Annotated[
        int | None, typer.Option("--snapshot-every", help="Capture every K-th step.")
    ] = None,
    snapshot_prob: Annotated[
        float | None, typer.Option("--snapshot-prob", help="Capture each step with probability p.")
    ] = None,
    snapshot_limit: Annotated[
        int | None, typer.Option("--snapshot-limit", help="At most N snapshot files.")
    ] = None,
    validate: Annotated[
        bool, typer.Option("--validate/--no-validate", help="Judge every decision (evaluator).")
    ] = True,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop after N steps.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Replay a trace under one or more policies; compare them.

    Each engine step becomes a step problem that the policy decides; the clock advances by
    the latency model's prediction.

    Prints throughput, TTFT/TBT percentiles, SLO attainment and goodput per policy; writes
    plans (-o), a figure (--plot) and snapshots (--snapshot-dir). See docs/simulate.md.
    """
    from functools import partial

    from stepopt.cli.progress import SimProgress, progress_mode
    from stepopt.io import load_latency_model
    from stepopt.latency.capacity import default_num_free_blocks
    from stepopt.latency.engine import load_engine
    from stepopt.model import EngineConfig
    from stepopt.simulate import SimConfig, load_trace, make_policy
    from stepopt.simulate.compare import Outputs, compare_policies
    from stepopt.simulate.policies import split_policies
    from stepopt.simulate.snapshots import SnapshotWriter

    rule = _target_rule(target_ms, target_rule)
    _check_flags(
        time_limit=time_limit,
        seed=seed,
        positive={
            "--rate": rate,
            "--duration": duration,
            "--slo-ttft-ms": slo_ttft_ms,
            "--slo-tbt-ms": slo_tbt_ms,
        },
        files={"--output": output, "--plot": plot},
    )
    _check_outputs(output, snapshot_dir, snapshot_every, snapshot_prob)
    names = split_policies(policies) if policies is not None else [policy]
    if not names:
        raise InputError("--policies", "give at least one policy", policies)
    if len(set(names)) != len(names):
        raise InputError("--policies", "a policy is listed twice", policies)
    made = [make_policy(n, solver=solver, time_limit=time_limit, fallback=fallback) for n in names]
    model = load_latency_model(preset, field="--preset")
    latency = model.with_engine(load_engine(engine, "--engine"))
    if kv_blocks is None:
        if not 0 < memory_share <= 1:
            raise InputError("--gpu-memory-share", "must be in (0, 1]", memory_share)
        kv_blocks = default_num_free_blocks(latency, memory_share, block_size)
        if kv_blocks == 0:
            raise InputError(
                "--preset", f"the weights alone exceed {memory_share:g} of the GPU", preset
            )
    config = SimConfig(
        engine=EngineConfig(budget, max_running, threshold, min_chunk, block_size, None),
        kv_blocks=kv_blocks,
        objective=objective,  # type: ignore[arg-type]
        priority_mode=priority_mode,  # type: ignore[arg-type]
        validate=validate,
        record_decisions=output is not None,
        max_steps=max_steps,
    )
    tr = load_trace(trace, rate=rate, seed=seed).cut(max_requests, duration)
    mode = progress_mode(quiet or json_out)

    def snapshots(folder: Path) -> SnapshotWriter:
        return SnapshotWriter(
            folder,
            every=snapshot_every,
            probability=snapshot_prob,
            seed=seed,
            limit=snapshot_limit,
            source=tr.source,
            preset=preset,
        )

    runs = compare_policies(
        tr,
        made,
        latency,
        rule,
        config,
        slo_ttft_ms=slo_ttft_ms,
        slo_tbt_ms=slo_tbt_ms,
        outputs=Outputs(output, snapshots, snapshot_dir),
        progress=None if mode == "quiet" else partial(SimProgress, mode=mode),
        progress_every=PROGRESS_EVERY_STEPS,
    )
    if plot is not None:
        from stepopt.simulate.plot import plot_comparison

        plot_comparison([(r.name, r.columns, r.summary) for r in runs], plot)
    header = {
        "trace": str(trace),
        "requests": len(tr),
        "source": tr.source,
        "preset": preset,
        "engine": latency.engine.name,
        "target_rule": rule.spec,
        "config": {
            "max_num_scheduled_tokens": budget,
            "max_num_running_reqs": max_running,
            "long_prefill_token_threshold": threshold,
            "min_prefill_chunk": min_chunk,
            "block_size": block_size,
            "kv_blocks": kv_blocks,
            "objective": objective,
            "priority_mode": priority_mode,
        },
    }
    _report(header, runs, plot, json_out)


def _report(header: dict[str, Any], runs: list, plot: Path | None, json_out: bool) -> None:
    """The comparison as one JSON object or as a table plus the files written."""
    from rich.markup import escape

    files = {r.name: r.files for r in runs}
    if json_out:
        doc = {k: v for k, v in header.items() if k != "source"}
        print_json(
            {
                **doc,
                "policies": {r.summary["policy"]: r.summary for r in runs},
                "files": files,
                "plot": None if plot is None else str(plot),
            }
        )
        return
    title = (
        f"{header['source']}: {header['requests']} requests, preset {header['preset']}, "
        f"target {header['target_rule']}"
    )
    console.print(comparison_table([r.summary for r in runs], title))
    for name, written in files.items():
        for f in written:
            console.print(escape(f"{name}: wrote {f}"))
    if plot is not None:
        console.print(f"wrote {plot}", markup=False)


def cmd_frontier(
    problem: Annotated[Path, typer.Argument(help="Problem file (JSON or YAML).")],
    targets: Annotated[str, typer.Option("--targets", help="Targets in ms: 20,30,40,50.")],
    solver: Annotated[
        str, typer.Option("--solver", "-s", help="Exact solver (none: heuristics only).")
    ] = "auto",
    time_limit: Annotated[
        float | None, typer.Option("--time-limit", help="Seconds per solve.")
    ] = None,
    heuristics: Annotated[
        str, typer.Option("--heuristics", help="Heuristics to place: a,b (empty: none).")
    ] = "three-stage",
    objective: Annotated[
        str | None, typer.Option("--objective", help="target or goodput (default: the file's).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the frontier figure.")] = None,
) -> None:
    """Solve one step for several targets: the Pareto frontier.

    The latency/throughput trade-off of one step, solved exactly at each target.

    Each heuristic is placed on the same problem at every target; the evaluator scores all.
    """
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from stepopt.io import load_problem
    from stepopt.simulate.frontier import frontier, parse_targets

    _check_flags(time_limit=time_limit, positive={}, files={"--plot": plot})
    ts = parse_targets(targets)
    prob = load_problem(problem)
    points = frontier(
        prob,
        ts,
        solver=None if solver.lower() == "none" else solver,
        time_limit=time_limit,
        heuristics=_names(heuristics),
        objective=objective,
    )
    if plot is not None:
        from stepopt.simulate.plot import plot_frontier

        plot_frontier(points, plot, title=f"{problem.name}: latency / tokens per target")
    if json_out:
        print_json(
            {
                "problem": str(problem),
                "objective": objective or prob.objective,
                "targets_ms": ts,
                "points": [p.to_dict() for p in points],
                "plot": None if plot is None else str(plot),
            }
        )
        return
    t = Table(
        title=escape(f"frontier of {problem.name} ({objective or prob.objective} objective)"),
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    widest = max([len(p.algorithm) for p in points] + [len(p.status) for p in points] + [9])
    for col in ("T ms", "algorithm", "L ms", "tokens", "batch", "status", "Pareto", "solve ms"):
        left = col in ("algorithm", "status")
        # Names and statuses keep their full width; the numbers give way on a narrow terminal.
        t.add_column(col, justify="left" if left else "right", min_width=widest if left else None)
    for p in points:
        if p.kind == "exact":
            status = p.status if p.feasible else f"[red]{p.status}[/red]"
        else:
            status = "feasible" if p.feasible else "[red]violates[/red]"
        t.add_row(
            f"{p.target_ms:g}",
            escape(p.algorithm),
            "-" if p.latency_ms is None else f"{p.latency_ms:.3f}",
            "-" if p.scheduled_tokens is None else str(p.scheduled_tokens),
            "-" if p.batch_size is None else str(p.batch_size),
            status,
            "*" if p.pareto else "",
            f"{p.solve_ms:.1f}",
        )
    console.print(t)
    if plot is not None:
        console.print(f"wrote {plot}")


def register(app: typer.Typer) -> None:
    command(app, "simulate")(cmd_simulate)
    command(app, "frontier")(cmd_frontier)
