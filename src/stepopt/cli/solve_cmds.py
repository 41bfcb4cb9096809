"""Commands of the exact solvers: ``solve`` and ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stepopt.cli.common import (
    command,
    console,
    exit_with,
    output_file,
    print_json,
    warn_kv_capacity,
)
from stepopt.errors import InputError
from stepopt.limits import check_time_limit

if TYPE_CHECKING:
    from rich.table import Table

    from stepopt.solvers.base import SolveResult


def result_table(res: SolveResult) -> Table:
    from rich.markup import escape
    from rich.table import Table

    from stepopt.solvers.base import SolveStatus

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
        t.add_row("message", escape(res.message))
    if res.decision is not None:
        t.add_row("decision", escape(decision_text(res.decision.scheduled())))
    return t


def decision_text(tokens: dict[str, int], limit: int = 20) -> str:
    """``id=tokens, ...`` for a table cell: the first ``limit`` entries and how many more."""
    shown = ", ".join(f"{k}={v}" for k, v in list(tokens.items())[:limit])
    more = f" ... (+{len(tokens) - limit})" if len(tokens) > limit else ""
    return (shown or "(empty)") + more


def cmd_solve(
    problem: Annotated[Path, typer.Argument(help="Problem file (JSON or YAML).")],
    solver: Annotated[
        str,
        typer.Option(
            "--solver",
            "-s",
            help="auto (structured, then CP-SAT), structured, cpsat, cbc, highs, brute.",
        ),
    ] = "auto",
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
    from stepopt.io import load_problem, save_decision

    check_time_limit(time_limit)
    if tolerance_ns < 0:
        raise InputError("--tolerance-ns", "must be >= 0", tolerance_ns)
    output_file(output, "--output")
    prob = load_problem(problem)  # bad input fails before the solvers are imported
    warn_kv_capacity(prob)

    from stepopt.solvers.base import SolveStatus, get_solver

    algo = get_solver(solver)  # unknown names list the valid ones (exit 2)
    extra = {"target_tolerance_ns": tolerance_ns} if tolerance_ns else {}
    res = algo.solve(prob, time_limit=time_limit, **extra)
    if res.status == SolveStatus.INFEASIBLE and not res.message:
        from dataclasses import replace

        from stepopt.diagnose import infeasibility_reason

        res = replace(res, message=infeasibility_reason(prob))
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
    map_path: Annotated[
        Path | None,
        typer.Option(
            "--map", help="Variable-to-request map to write (default: OUTPUT's stem + .map.json)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Write the step's MILP for external solvers (LP or MPS).

    The model has the primary objective. The map of its token variables to request ids
    (OUTPUT's stem + .map.json) lets `stepopt import-solution` read a solver's answer back.
    """
    from stepopt.exchange import default_map_path, export_milp
    from stepopt.io import load_problem

    output_file(output, "--output")
    map_path = output_file(map_path, "--map") or default_map_path(output)
    doc = export_milp(load_problem(problem), output, fmt, map_path)
    if json_out:
        print_json(doc)
        return
    print(
        f"wrote {output} ({fmt}): {doc['variables']} variables, {doc['constraints']} "
        f"constraints; objective: {doc['objective']}; variable map: {map_path}"
    )


def cmd_import_solution(
    problem: Annotated[Path, typer.Argument(help="The problem file that was exported.")],
    solution: Annotated[
        Path, typer.Argument(help="The solver's solution file (CBC, HiGHS, name-value lines).")
    ],
    map_path: Annotated[
        Path, typer.Option("--map", help="The map `stepopt export` wrote next to the model.")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the decision to this file.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Read an external solver's answer back as a decision.

    The solution of a model written by `stepopt export` becomes a decision file (-o), judged
    by the evaluator like any other.

    Exit 0 when the decision is feasible, 1 when not, 2 on bad input.
    """
    from stepopt.cli.core import evaluation_json, evaluation_table
    from stepopt.evaluate import evaluate
    from stepopt.exchange import load_map, read_solution
    from stepopt.io import load_problem, save_decision

    output_file(output, "--output")
    prob = load_problem(problem)
    decision = read_solution(solution, load_map(map_path, prob))
    ev = evaluate(prob, decision)
    if output is not None:
        save_decision(decision, output)
    if json_out:
        print_json(evaluation_json(ev, decision.scheduled()))
    else:
        console.print(evaluation_table(ev, title=f"solution {solution.name}"))
    exit_with(0 if ev.feasible else 1)


def register(app: typer.Typer) -> None:
    command(app, "solve")(cmd_solve)
    command(app, "export")(cmd_export)
    command(app, "import-solution")(cmd_import_solution)
