"""Commands of the exact solvers: ``solve`` and ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stepopt.cli.common import console, exit_with, print_json
from stepopt.errors import InputError
from stepopt.io import load_problem, save_decision
from stepopt.solvers.base import SolveResult, SolveStatus

EXPORT_FORMATS = ("lp", "mps")


def result_table(res: SolveResult) -> Table:
    t = Table(title=f"solve: {res.solver}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    ok = res.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)
    t.add_row("status", str(res.status) if ok else f"[red]{res.status}[/red]")
    ev = res.evaluation
    if ev is not None:
        name = "|L - T| (ms)" if ev.objective_name == "target" else "weighted tokens"
        tie = "weighted tokens" if ev.objective_name == "target" else "latency (ms)"
        t.add_row(f"objective: {name}", f"{ev.objective:g}")
        t.add_row(f"tie-break: {tie}", f"{ev.tiebreak:g}")
        t.add_row("latency", f"{ev.latency_ms:.6f} ms ({ev.latency_ns} ns)")
        t.add_row("target", f"{ev.target_ns / 1e6:.6f} ms")
        t.add_row("scheduled tokens", str(ev.scheduled_tokens))
        t.add_row("batch size", str(ev.batch_size))
        t.add_row("admitted", str(ev.num_admitted))
        t.add_row("evaluator", "feasible" if ev.feasible else "[red]infeasible[/red]")
    if res.bound is not None:
        t.add_row("bound", f"{res.bound:g}")
    if res.gap is not None:
        t.add_row("gap", f"{res.gap:.3g}")
    if res.proven_within_ns is not None:
        exact = " (proven optimal)" if res.proven_within_ns == 0 else ""
        t.add_row("proven within", f"{res.proven_within_ns} ns of the optimum{exact}")
    t.add_row("solve time", f"{res.wall_ms:.1f} ms")
    if res.time_limit_s is not None:
        t.add_row("time limit", f"{res.time_limit_s:g} s")
    if res.message:
        t.add_row("message", res.message)
    if res.decision is not None:
        tokens = res.decision.scheduled()
        shown = ", ".join(f"{k}={v}" for k, v in list(tokens.items())[:20])
        more = f" ... (+{len(tokens) - 20})" if len(tokens) > 20 else ""
        t.add_row("decision", (shown or "(empty)") + more)
    return t


def cmd_solve(
    problem: Annotated[Path, typer.Argument(help="Problem file (JSON or YAML).")],
    solver: Annotated[str, typer.Option("--solver", "-s", help="cpsat, cbc, highs, brute.")] = (
        "cpsat"
    ),
    time_limit: Annotated[
        float | None, typer.Option("--time-limit", help="Seconds (split between phases).")
    ] = None,
    tolerance_ns: Annotated[
        int,
        typer.Option(
            "--tolerance-ns",
            help="target objective: stop once |L - T| is proven within this many ns of the "
            "optimum (then FEASIBLE with proven_within_ns, not OPTIMAL; brute ignores it).",
        ),
    ] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the decision to this file.")
    ] = None,
) -> None:
    """Solve a step problem exactly.

    OPTIMAL means proven optimal exactly; FEASIBLE carries the proven bound when there is one
    and, for target, proven_within_ns (how far |L - T| may be from the optimum). Exit 0 with
    a decision, 1 without (infeasible, timed out, solver failure), 2 on bad input.
    """
    from stepopt.solvers.base import get_solver

    if time_limit is not None and time_limit <= 0:
        raise InputError("--time-limit", "must be positive", time_limit)
    if tolerance_ns < 0:
        raise InputError("--tolerance-ns", "must be >= 0", tolerance_ns)
    algo = get_solver(solver)  # unknown names list the valid ones (exit 2)
    prob = load_problem(problem)
    extra = {"target_tolerance_ns": tolerance_ns} if tolerance_ns else {}
    res = algo.solve(prob, time_limit=time_limit, **extra)
    if output is not None and res.decision is not None:
        save_decision(res.decision, output)
    if json_out:
        print_json(res.to_dict())
    else:
        console.print(result_table(res))
    found = res.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)
    exit_with(0 if found and res.decision is not None else 1)


def cmd_export(
    problem: Annotated[Path, typer.Argument(help="Problem file (JSON or YAML).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="lp or mps.")] = "lp",
) -> None:
    """Write the step's MILP (primary objective) for external solvers."""
    from stepopt.formulation import build
    from stepopt.formulation.milp import encode

    if fmt not in EXPORT_FORMATS:
        raise InputError("--format", f"must be one of {', '.join(EXPORT_FORMATS)}", fmt)
    prob = load_problem(problem)
    form = build(prob)
    enc = encode(form)
    enc.prob.setObjective(enc.deviation if form.objective == "target" else -enc.weighted)
    if fmt == "lp":
        enc.prob.writeLP(str(output))
    else:
        enc.prob.writeMPS(str(output))
    console.print(
        f"wrote {output} ({fmt}): {enc.prob.numVariables()} variables, "
        f"{enc.prob.numConstraints()} constraints; objective: minimize "
        + ("|L - T| in ns" if form.objective == "target" else "minus weighted tokens")
    )


def register(app: typer.Typer) -> None:
    app.command("solve")(cmd_solve)
    app.command("export")(cmd_export)
