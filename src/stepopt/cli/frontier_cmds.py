"""The ``frontier`` command: one step solved at several targets (docs/simulate.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stepopt.cli.common import check_flags, command, console, print_json, split_names

if TYPE_CHECKING:
    from rich.table import Table


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
    from stepopt.io import load_problem
    from stepopt.simulate.frontier import frontier, parse_targets

    check_flags(time_limit=time_limit, positive={}, files={"--plot": plot})
    ts = parse_targets(targets)
    prob = load_problem(problem)
    points = frontier(
        prob,
        ts,
        solver=None if solver.lower() == "none" else solver,
        time_limit=time_limit,
        heuristics=split_names(heuristics),
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
    console.print(
        _table(points, f"frontier of {problem.name} ({objective or prob.objective} objective)")
    )
    if plot is not None:
        console.print(f"wrote {plot}")


def _table(points: list, title: str) -> Table:
    """One row per (target, algorithm) point."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    t = Table(
        title=escape(title),
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
    return t


def register(app: typer.Typer) -> None:
    command(app, "frontier")(cmd_frontier)
