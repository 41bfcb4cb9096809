"""Terminal output: study results (rich tables) and the progress mode, shared by the CLI and
the demo script (which must not import the CLI)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table


def progress_mode(quiet: bool) -> str:
    """``quiet``, ``rich`` on a terminal, ``plain`` (log lines) otherwise."""
    if quiet:
        return "quiet"
    return "rich" if sys.stderr.isatty() else "plain"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def summary_table(summary: list[dict]) -> Table:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="relative gap to the proven optimum", box=box.SIMPLE_HEAD, padding=(0, 1))
    cols = (
        "algorithm",
        "obj",
        "n",
        "opt",
        "feas",
        "err",
        "mean",
        "med",
        "p95",
        "max",
        "in tol",
        "unprov",
        "dec ms",
        "exact ms",
    )
    for col in cols:
        # Long algorithm names (module:function) wrap rather than lose their end.
        t.add_column(
            col, justify="left" if col in ("algorithm", "obj") else "right", overflow="fold"
        )
    for s in summary:
        errors = s["count_error"]
        t.add_row(
            escape(s["heuristic"]),
            s["objective"],
            str(s["count"]),
            _pct(s["share_proven_optimal"]),
            _pct(s["share_feasible"]),
            f"[red]{errors}[/red]" if errors else "0",
            _pct(s["gap_mean"]),
            _pct(s["gap_median"]),
            _pct(s["gap_p95"]),
            _pct(s["gap_max"]),
            str(s["count_reference_within_tolerance"]),
            str(s["count_reference_unproven"]),
            _ms(s["decision_ms_median"]),
            _ms(s["solve_ms_median"]),
        )
    return t


def breakdown_table(rows: list[dict], by: str) -> Table:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"by {by}", box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("algorithm", "obj", by, "n", "opt", "feas", "mean", "p95", "max"):
        t.add_column(
            col, justify="left" if col in ("algorithm", "obj", by) else "right", overflow="fold"
        )
    for b in rows:
        t.add_row(
            escape(b["heuristic"]),
            b["objective"],
            escape(str(b[by])),
            str(b["count"]),
            _pct(b["share_proven_optimal"]),
            _pct(b["share_feasible"]),
            _pct(b["gap_mean"]),
            _pct(b["gap_p95"]),
            _pct(b["gap_max"]),
        )
    return t


def print_report(rows: list[dict], by: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    from stepopt.studies.report import (
        breakdown,
        study_info,
        summarize,
        tolerance_sentence,
        where_it_loses,
    )

    # Piped output gets a width that fits the tables (rich would assume 80 columns).
    console = Console(width=None if sys.stdout.isatty() else 132)

    info = study_info(rows)
    st = info["reference_status"]
    console.print(
        f"{info['problems']} problems, exact reference: "
        + ", ".join(f"{v} {k}" for k, v in st.items())
        + f" ({info['reference_unproven']} not proven: no gap; bound gap shown where the "
        "solver had a solution)"
    )
    console.print(tolerance_sentence(info))
    summary = summarize(rows)
    console.print(summary_table(summary))
    for s in summary:
        if s["count_error"]:
            console.print(
                f"[red]errors[/red]: {escape(s['heuristic'])} ({s['objective']}) failed on "
                f"{s['count_error']} of {s['count']} problems; first: {escape(s['first_error'])}"
            )
    pre = [s for s in summary if s["count_preempted"]]
    if pre:
        console.print(
            "decisions that preempt (no gap: the exact model does not preempt): "
            + ", ".join(f"{s['heuristic']} {s['objective']} {s['count_preempted']}" for s in pre)
        )
    console.print(breakdown_table(breakdown(rows, by), by))
    for h in sorted({r["algorithm"] for r in rows if r["kind"] == "heuristic"}):
        for line in where_it_loses(rows, h):
            console.print(f"- {line}")
