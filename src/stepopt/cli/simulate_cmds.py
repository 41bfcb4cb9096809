"""The ``simulate`` command (docs/simulate.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stepopt.cli.common import check_flags, command, output_dir
from stepopt.cli.sim_report import report
from stepopt.errors import InputError
from stepopt.limits import check_target_ms

if TYPE_CHECKING:
    pass

DEFAULT_TARGET_MS = 50.0
# Steps between progress updates: frequent enough for an exact policy (~0.05 s a step), cheap
# for a heuristic (~10,000 steps/s: a few hundred updates a second, well under 1 % of the run).
PROGRESS_EVERY_STEPS = 20


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
    # long: the command's wiring (flag checks, latency model, config, trace, runs, report), one
    # call each; the work is in simulate/ and cli/sim_report.py
    from functools import partial

    from stepopt.cli.progress import SimProgress, progress_mode
    from stepopt.io import load_latency_model
    from stepopt.latency.engine import load_engine
    from stepopt.model import EngineConfig
    from stepopt.simulate import SimConfig, load_trace
    from stepopt.simulate.compare import Outputs, compare_policies
    from stepopt.simulate.snapshots import SnapshotWriter

    rule = _target_rule(target_ms, target_rule)
    check_flags(
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
    made = _policies(policy, policies, solver, time_limit, fallback)
    latency = load_latency_model(preset, field="--preset").with_engine(
        load_engine(engine, "--engine")
    )
    engine_cfg = EngineConfig(budget, max_running, threshold, min_chunk, block_size, None)
    if kv_blocks is None:
        kv_blocks = _default_kv_blocks(latency, memory_share, block_size, preset)
    config = SimConfig(
        engine=engine_cfg,
        kv_blocks=kv_blocks,
        objective=objective,  # type: ignore[arg-type]
        priority_mode=priority_mode,  # type: ignore[arg-type]
        validate=validate,
        record_decisions=output is not None,
        max_steps=max_steps,
    )
    tr = load_trace(trace, rate=rate, seed=seed).cut(max_requests, duration)
    mode = progress_mode(quiet or json_out)

    snapshots = partial(
        SnapshotWriter,
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
        "config": _config_doc(config),
    }
    report(header, runs, plot, json_out)


def _policies(
    policy: str, policies: str | None, solver: str, time_limit: float, fallback: str
) -> list[Any]:
    """The policies to compare (``--policies`` overrides ``--policy``), each made once."""
    from stepopt.simulate import make_policy
    from stepopt.simulate.policies import split_policies

    names = split_policies(policies) if policies is not None else [policy]
    if not names:
        raise InputError("--policies", "give at least one policy", policies)
    if len(set(names)) != len(names):
        raise InputError("--policies", "a policy is listed twice", policies)
    return [make_policy(n, solver=solver, time_limit=time_limit, fallback=fallback) for n in names]


def _default_kv_blocks(latency: Any, memory_share: float, block_size: int, preset: str) -> int:
    """The KV blocks the preset's GPU holds at ``--gpu-memory-share``."""
    from stepopt.latency.capacity import default_num_free_blocks

    if not 0 < memory_share <= 1:
        raise InputError("--gpu-memory-share", "must be in (0, 1]", memory_share)
    kv_blocks = default_num_free_blocks(latency, memory_share, block_size)
    if kv_blocks == 0:
        raise InputError(
            "--preset", f"the weights alone exceed {memory_share:g} of the GPU", preset
        )
    return kv_blocks


def _config_doc(config: Any) -> dict[str, Any]:
    """The run's limits as the report prints them."""
    e = config.engine
    return {
        "max_num_scheduled_tokens": e.max_num_scheduled_tokens,
        "max_num_running_reqs": e.max_num_running_reqs,
        "long_prefill_token_threshold": e.long_prefill_token_threshold,
        "min_prefill_chunk": e.min_prefill_chunk,
        "block_size": e.block_size,
        "kv_blocks": config.kv_blocks,
        "objective": config.objective,
        "priority_mode": config.priority_mode,
    }


def register(app: typer.Typer) -> None:
    command(app, "simulate")(cmd_simulate)
