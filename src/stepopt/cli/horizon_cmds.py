"""The ``horizon`` commands: windows of steps, their exact plans, regret (docs/horizon.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stepopt.cli.common import command, console, output_dir, output_file, print_json, sub_app
from stepopt.errors import InputError
from stepopt.limits import check_time_limit, finite

horizon_app = sub_app("Windows of steps: hindsight-optimal plans and the regret of policies.")

TimeLimit = Annotated[float, typer.Option("--time-limit", help="Seconds per window solve.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def cmd_windows(
    trace: Annotated[Path, typer.Option("--trace", help="Trace CSV to replay and cut.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the window files.")],
    preset: Annotated[str, typer.Option("--preset", "-P", help="Latency preset.")] = "demo",
    steps: Annotated[int, typer.Option("--steps", help="Steps per window (K).")] = 16,
    count: Annotated[int, typer.Option("--count", help="Number of windows.")] = 4,
    every: Annotated[int | None, typer.Option("--every", help="Steps between starts.")] = None,
    first: Annotated[int, typer.Option("--first", help="Simulator step of the first.")] = 0,
    policy: Annotated[str, typer.Option("--policy", help="Policy of the replay.")] = "three-stage",
    ttft_ms: Annotated[float, typer.Option("--slo-ttft-ms", help="TTFT deadline.")] = 1000.0,
    tbt_ms: Annotated[float, typer.Option("--slo-tbt-ms", help="Bound on every gap.")] = 100.0,
    budget: Annotated[int, typer.Option("--budget", help="Token budget per step.")] = 2048,
    max_running: Annotated[int, typer.Option("--max-running", help="max_num_seqs.")] = 64,
    threshold: Annotated[
        int, typer.Option("--long-prefill-token-threshold", help="Chunk cap (0 = none).")
    ] = 0,
    min_chunk: Annotated[int, typer.Option("--min-prefill-chunk", help="Smallest chunk.")] = 64,
    rate: Annotated[float | None, typer.Option("--rate", help="Poisson arrivals, req/s.")] = None,
    max_requests: Annotated[
        int | None, typer.Option("--max-requests", help="Replay only the first N requests.")
    ] = None,
    priority_mode: Annotated[str, typer.Option("--priority-mode")] = "strict",
    slo_weights: Annotated[str, typer.Option("--slo-weights", help="unweighted|priority")] = (
        "unweighted"
    ),
) -> None:
    """Cut windows from a trace replay (the simulator's state at each cut is the start
    state) and write one window file each. Prefill attention is dropped from the latency
    model (the exact window model does not encode it; docs/horizon.md)."""
    from stepopt.horizon.files import save_window
    from stepopt.horizon.problem import Slo
    from stepopt.horizon.windows import cut_windows, without_prefill_attention
    from stepopt.latency.presets import load_preset
    from stepopt.model import EngineConfig
    from stepopt.simulate.trace import load_trace

    output_dir(out, "--out")
    for flag, v in (("--slo-ttft-ms", ttft_ms), ("--slo-tbt-ms", tbt_ms)):
        if not finite(v, flag) > 0:
            raise InputError(flag, "must be > 0", v)
    if priority_mode not in ("strict", "weighted"):
        raise InputError("--priority-mode", "must be strict or weighted", priority_mode)
    if slo_weights not in ("unweighted", "priority"):
        raise InputError("--slo-weights", "must be unweighted or priority", slo_weights)
    for flag, v, lo in (
        ("--budget", budget, 1),
        ("--max-running", max_running, 1),
        ("--long-prefill-token-threshold", threshold, 0),
        ("--min-prefill-chunk", min_chunk, 1),
    ):
        if v < lo:
            raise InputError(flag, f"must be >= {lo}", v)
    tr = load_trace(trace, rate=rate).cut(max_requests, None)
    lat = without_prefill_attention(load_preset(preset))
    eng = EngineConfig(budget, max_running, threshold, min_chunk, 16, None)
    ws = cut_windows(
        tr,
        lat,
        eng,
        Slo(ttft_ms, tbt_ms),
        steps,
        every=every,
        count=count,
        first=first,
        policy=policy,
        priority_mode=priority_mode,
        slo_weights=slo_weights,  # type: ignore[arg-type]
    )
    if not ws:
        raise InputError("--first", "the replay ended before the first window", first)
    out.mkdir(parents=True, exist_ok=True)
    for w in ws:
        path = out / f"window-step{w.meta['step']:06d}.json"
        save_window(w, path)
        console.print(f"{path}  {len(w.requests)} requests, {w.steps} steps")


def cmd_solve(
    window: Annotated[Path, typer.Argument(help="Window file (JSON or YAML).")],
    time_limit: TimeLimit = 10.0,
    plan_out: Annotated[Path | None, typer.Option("--plan", help="Write the plan (JSON).")] = None,
    json_out: Json = False,
) -> None:
    """The hindsight-optimal plan of a window: SLOs met, tokens, busy time; status and bound."""
    import json

    from stepopt.horizon.files import load_window
    from stepopt.horizon.solve import solve_window

    check_time_limit(time_limit)
    output_file(plan_out, "--plan")
    w = load_window(window)
    res = solve_window(w, time_limit)
    if plan_out is not None and res.plan is not None:
        plan_out.write_text(json.dumps(res.plan, indent=1) + "\n")
    doc = res.to_dict()
    if json_out:
        print_json(doc)
        return
    ev = res.evaluation
    console.print(f"window {window}: {len(w.requests)} requests, {w.steps} steps")
    console.print(f"status {res.status}   wall {res.wall_s:.2f} s")
    if ev is not None:
        console.print(
            f"SLOs met {ev.met_count}/{len(w.requests)} (weighted {ev.met_weighted}, bound "
            f"{res.slo_bound}, gap {res.gap})   tokens {ev.tokens}   busy {ev.busy_ns / 1e6:.3f} ms"
        )
        _print_plan(res.plan or [])


def _print_plan(plan: list[dict[str, int]]) -> None:
    for k, step in enumerate(plan, start=1):
        text = ", ".join(f"{rid}={n}" for rid, n in step.items()) or "(idle: next arrival)"
        console.print(f"  step {k:3d}: {text}", markup=False)


def cmd_replay(
    window: Annotated[Path, typer.Argument(help="Window file (JSON or YAML).")],
    policy: Annotated[str, typer.Option("--policy", help="A per-step policy.")] = "three-stage",
    json_out: Json = False,
) -> None:
    """Replay a per-step policy over a window from its start state."""
    from stepopt.horizon.files import load_window
    from stepopt.horizon.replay import replay_policy

    w = load_window(window)
    plan, ev = replay_policy(w, policy)
    if json_out:
        print_json({"policy": policy, "evaluation": ev.to_dict(), "plan": plan})
        return
    console.print(
        f"{policy}: feasible {ev.feasible}  SLOs met {ev.met_count}/{len(w.requests)} "
        f"(weighted {ev.met_weighted})  tokens {ev.tokens}  busy {ev.busy_ns / 1e6:.3f} ms",
        markup=False,
    )
    _print_plan(plan)


def cmd_run(
    windows: Annotated[list[Path], typer.Argument(help="Window files.")],
    db: Annotated[Path, typer.Option("--db", help="DuckDB store (shared with studies).")],
    policies: Annotated[
        str, typer.Option("--policies", help="Per-step policies: a,b,c.")
    ] = "three-stage,vllm-v1,sarathi",
    time_limit: TimeLimit = 10.0,
    workers: Annotated[int, typer.Option("--workers", help="Processes (0: this one).")] = 0,
    executor: Annotated[str, typer.Option("--executor", help="local | dask | dask://H:P")] = (
        "local"
    ),
) -> None:
    """Solve every window and replay every policy on it, in parallel; resumable."""
    from stepopt.horizon.study import run_horizon_study
    from stepopt.simulate.policies import split_policies

    check_time_limit(time_limit)
    if workers < 0:
        raise InputError("--workers", "must be >= 0", workers)
    output_file(db, "--db")
    got = run_horizon_study(
        windows,
        db,
        split_policies(policies),
        time_limit,
        workers,
        executor,
        progress=lambda n, total: console.print(f"{n}/{total} windows"),
    )
    console.print(f"{got['solved']} windows solved, {got['skipped']} already stored, in {db}")


def cmd_report(
    db: Annotated[Path, typer.Option("--db", help="DuckDB store.")],
    plot: Annotated[Path | None, typer.Option("--plot", help="Regret distribution figure.")] = None,
    worst: Annotated[int, typer.Option("--worst", help="Worst windows to list.")] = 5,
    save_worst_dir: Annotated[
        Path | None,
        typer.Option("--save-worst", help="Copy the worst windows, their plans and commands."),
    ] = None,
    json_out: Json = False,
) -> None:
    """Regret of each policy against the window optimum (and its bound)."""
    from stepopt.cli.common import figure_file
    from stepopt.horizon.report import regret_plot, regret_summary, save_worst
    from stepopt.horizon.study import horizon_rows

    figure_file(plot, "--plot")
    output_dir(save_worst_dir, "--save-worst")
    if worst < 0:
        raise InputError("--worst", "must be >= 0", worst)
    rows = horizon_rows(db)
    s = regret_summary(rows, worst)
    if plot is not None:
        regret_plot(s, plot)
    if save_worst_dir is not None:
        save_worst(s, rows, save_worst_dir)
    if json_out:
        print_json(s)
        return
    _report_table(s)


def _report_table(s: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"regret over {s['windows']} windows ({s['proven']} proven optimal)")
    for col in (
        "policy",
        "regret mean",
        "median",
        "max",
        "vs bound",
        "windows lost",
        "SLO attain.",
        "TTFT p99 ms",
    ):
        t.add_column(col, justify="right", no_wrap=col == "policy")
    o = s["optimum"]
    t.add_row(
        "optimum",
        "0",
        "0",
        "0",
        "-",
        "-",
        _pct(o["slo_attainment_mean"]),
        _num(o["ttft_p99_ms_mean"]),
    )
    for p, d in s["policies"].items():
        t.add_row(
            p,
            _num(d["regret_mean"]),
            _num(d["regret_median"]),
            str(d["regret_max"]),
            _num(d["regret_bound_mean"]),
            str(d["windows_with_regret"]),
            _pct(d["slo_attainment_mean"]),
            _num(d["ttft_p99_ms_mean"]),
        )
    console.print(t)
    for wr in s["worst"]:
        console.print(
            f"worst: {wr['window_file']} {wr['algorithm']} lost {wr['regret']} "
            f"({wr['policy']} vs {wr['optimum']}): {wr['commands'][0]}",
            markup=False,
        )


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def register(app: typer.Typer) -> None:
    command(horizon_app, "windows")(cmd_windows)
    command(horizon_app, "solve")(cmd_solve)
    command(horizon_app, "replay")(cmd_replay)
    command(horizon_app, "run")(cmd_run)
    command(horizon_app, "report")(cmd_report)
    app.add_typer(horizon_app, name="horizon")
