"""Commands on single problems: evaluate, schema, latency presets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stepopt.cli.common import command, console, exit_with, print_json, sub_app, warn_kv_capacity

if TYPE_CHECKING:
    from rich.table import Table

    from stepopt.evaluate import Evaluation

latency_app = sub_app("Latency models: presets, fitting, plots.")


def evaluation_table(ev: Evaluation, title: str = "evaluation") -> Table:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    t.add_row("feasible", "yes" if ev.feasible else "[red]no[/red]")
    t.add_row("latency", f"{ev.latency_ms:.3f} ms ({ev.latency_ns} ns)")
    t.add_row("target", f"{ev.target_ns / 1e6:.3f} ms")
    name = "|L - T| (ms)" if ev.objective_name == "target" else "weighted tokens"
    t.add_row(f"objective: {name}", f"{ev.objective:g}")
    t.add_row("scheduled tokens", str(ev.scheduled_tokens))
    t.add_row("batch size", str(ev.batch_size))
    t.add_row("admitted", str(ev.num_admitted))
    t.add_row("new KV blocks", str(ev.new_blocks))
    for v in ev.violations:
        t.add_row(f"[red]violation: {v.rule}[/red]", escape(v.message))
    return t


def evaluation_json(ev: Evaluation, tokens: dict[str, int]) -> dict:
    doc = ev.to_dict()
    doc["tokens"] = tokens
    return doc


def cmd_evaluate(
    problem: Annotated[Path, typer.Argument(help="Problem file (JSON or YAML).")],
    decision: Annotated[Path, typer.Argument(help='Decision file: {"tokens": {"id": n}}.')],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Judge a decision: feasibility, latency, objective.

    Lists every violated rule.

    Exit 0 when feasible, 1 when infeasible, 2 on bad input.
    """
    from stepopt.evaluate import evaluate
    from stepopt.io import load_decision, load_problem

    prob = load_problem(problem)
    warn_kv_capacity(prob)
    dec = load_decision(decision)
    ev = evaluate(prob, dec)
    if json_out:
        print_json(evaluation_json(ev, dec.scheduled()))
    else:
        console.print(evaluation_table(ev))
    exit_with(0 if ev.feasible else 1)


def cmd_schema(
    kind: Annotated[str, typer.Option("--kind", help="step (a problem file) or window.")] = "step",
) -> None:
    """Print the JSON Schema of a problem file (or of a window file)."""
    from stepopt.errors import InputError

    if kind == "window":
        from stepopt.horizon.files import window_json_schema

        print_json(window_json_schema())
        return
    if kind != "step":
        raise InputError("--kind", "must be step or window", kind)
    from stepopt.io import problem_json_schema

    print_json(problem_json_schema())


def cmd_presets(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the shipped latency presets."""
    from rich.table import Table

    from stepopt.latency.presets import preset_document, preset_names

    rows = []
    for name in preset_names():
        doc = preset_document(name)
        meta = doc.get("meta", {})
        rows.append(
            {
                "name": name,
                "attention": meta.get("attention", "-"),
                "kernel": meta.get("attention_kernel", "-"),
                "fit_mape_pct": meta.get("fit_mape_pct"),
                "description": doc.get("description", ""),
            }
        )
    if json_out:
        print_json(rows)
        return
    fitted = sum(1 for r in rows if r["fit_mape_pct"] is not None)
    t = Table(
        title=f"{len(rows)} latency presets ({fitted} fitted on GPU profiles, "
        f"{len(rows) - fitted} hand-made)"
    )
    t.add_column("name", no_wrap=True)
    t.add_column("attention")
    t.add_column("kernel")
    t.add_column("fit error (MAPE %)", justify="right")
    for r in rows:
        err = "-" if r["fit_mape_pct"] is None else f"{r['fit_mape_pct']:.2f}"
        t.add_row(r["name"], str(r["attention"]), str(r["kernel"]), err)
    console.print(t)


def cmd_engines(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the engine overhead profiles (added to a preset's batch term)."""
    from rich.table import Table

    from stepopt.latency.engine import ENGINES

    rows = [e.to_dict() for e in ENGINES.values()]
    if json_out:
        print_json(rows)
        return
    t = Table(title="engine overhead profiles: step_ns + per_request_ns * b, for b >= 1")
    for col in ("name", "step (ms)", "per request (ms)", "source"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(
            r["name"],
            f"{r['step_ns'] / 1e6:g}",
            f"{r['per_request_ns'] / 1e6:g}",
            r.get("source", "kernels only"),
        )
    console.print(t)


def register(app: typer.Typer) -> None:
    command(app, "evaluate")(cmd_evaluate)
    command(app, "schema")(cmd_schema)
    command(latency_app, "presets")(cmd_presets)
    command(latency_app, "engines")(cmd_engines)
    app.add_typer(latency_app, name="latency")
