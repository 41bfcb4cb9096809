"""The study's Markdown report (``report.md``), from the rows and the figures of
:mod:`stepopt.studies.report`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stepopt.studies.report import (
    breakdown,
    fmt_value,
    largest_gaps,
    study_info,
    summarize,
    tolerance_sentence,
    where_it_loses,
    worst_bins,
)

SUMMARY_COLUMNS = (
    ("heuristic", "algorithm", False),
    ("objective", "objective", False),
    ("count", "n", False),
    ("share_proven_optimal", "optimal", True),
    ("share_feasible", "feasible", True),
    ("count_error", "errors", False),
    ("gap_mean", "gap mean", True),
    ("gap_median", "median", True),
    ("gap_p95", "p95", True),
    ("gap_max", "max", True),
    ("gap_min", "min", True),
    ("count_reference_within_tolerance", "ref in tol", False),
    ("count_reference_unproven", "unproven", False),
    ("gap_incumbent_max", "solution gap max", True),
    ("gap_bound_max", "bound gap max", True),
    ("decision_ms_median", "decision ms", False),
    ("solve_ms_median", "solve ms", False),
)


def markdown_table(records: list[dict[str, Any]], columns: Iterable[tuple[str, str, bool]]) -> str:
    cols = list(columns)
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = [
        "| " + " | ".join(fmt_value(r.get(k), pct) for k, _, pct in cols) + " |" for r in records
    ]
    return "\n".join([head, sep, *body])


def markdown_report(rows: list[dict[str, Any]], by: str, plots: Iterable[str] = ()) -> str:
    """The study's report: what was measured and how exact it is, the summary table, the
    errors and violations, where each heuristic loses, the breakdown by ``by``, the plots."""
    info = study_info(rows)
    summary = summarize(rows)
    lines = [*_intro(info), "## Summary", "", markdown_table(summary, SUMMARY_COLUMNS), ""]
    lines += _notes(summary)
    lines += _losses(rows)
    cols = (
        ("heuristic", "algorithm", False),
        ("objective", "objective", False),
        (by, by, False),
        ("count", "n", False),
        ("share_proven_optimal", "optimal", True),
        ("share_feasible", "feasible", True),
        ("gap_mean", "gap mean", True),
        ("gap_p95", "p95", True),
        ("gap_max", "max", True),
    )
    lines += [f"## By {by}", "", markdown_table(breakdown(rows, by), cols), ""]
    plots = list(plots)
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p}]({p})" for p in plots]
        lines.append("")
    return "\n".join(lines)


def _intro(info: dict[str, Any]) -> list[str]:
    """The title, what was run, and what a gap means and how exact it is."""
    st = info["reference_status"]
    unproven = info["reference_unproven"]
    return [
        "# Optimality-gap study",
        "",
        f"{info['problems']} problems; exact reference: "
        + ", ".join(f"{v} {k}" for k, v in st.items())
        + f"; solver settings: {', '.join(info['settings'])};"
        f" stepopt {', '.join(info['versions'])}; presets: {', '.join(info['presets'])}.",
        "",
        "Gaps are relative (as defined in stepopt's docs/formulation.md): "
        "`target`: (|L_h - T| - |L_* - T|) / T; "
        "`goodput`: (obj_* - obj_h) / obj_*. They are computed only where the solver proved "
        "the optimum, exactly or (`target`) within the tolerance. "
        + tolerance_sentence(info)
        + f" On {unproven} problem(s) it proved neither (time limit or no solution): "
        "those rows give no gap; where the solver had a solution, the true gap lies between the "
        "gap to its solution (a lower estimate) and the gap to its bound (an upper estimate, "
        "*bound gap*; loose for `target`, whose bound is often 0). A schedule that breaks a "
        "rule (with `goodput`, L > T) is counted as infeasible, not as a gap.",
        "",
    ]


def _notes(summary: list[dict[str, Any]]) -> list[str]:
    """Errors, preempting decisions and violations by rule (each only when there are any)."""
    lines: list[str] = []
    failing = [s for s in summary if s["count_error"]]
    if failing:
        lines += ["Errors (no decision, so neither a gap nor a feasibility count):", ""]
        lines += [
            f"- {s['heuristic']} ({s['objective']}): {s['count_error']} of {s['count']}; "
            f"first: `{s['first_error']}`"
            for s in failing
        ]
        lines.append("")
    pre = [s for s in summary if s["count_preempted"]]
    if pre:
        lines += [
            "Decisions that preempt running requests free slots and KV blocks, which the exact "
            "model does not do: they get no gap (the optimum is no reference for them). "
            + "; ".join(f"{s['heuristic']} ({s['objective']}): {s['count_preempted']}" for s in pre)
            + ".",
            "",
        ]
    viol = [s for s in summary if s["violation_rules"]]
    if viol:
        lines += ["Violations by rule:", ""]
        for s in viol:
            rules = ", ".join(f"{k} x{v}" for k, v in s["violation_rules"].items())
            lines.append(f"- {s['heuristic']} ({s['objective']}): {rules}")
        lines.append("")
    return lines


def _losses(rows: list[dict[str, Any]]) -> list[str]:
    """Per heuristic: where it loses, its worst bins, its largest gaps."""
    lines: list[str] = []
    heur = sorted({r["algorithm"] for r in rows if r["kind"] == "heuristic"})
    if heur:
        lines += ["## Where the heuristics lose", ""]
        for h in heur:
            for line in where_it_loses(rows, h):
                lines.append(f"- {line}")
            for obj in sorted({r["objective"] for r in rows if r["algorithm"] == h}):
                phrase = worst_bins(rows, h, obj)
                if phrase:
                    lines.append(f"  - {h}, {obj}, largest mean gap at: {phrase}")
            big = largest_gaps(rows, h)
            if big:
                lines.append(
                    f"  - {h}, largest gaps (inspect with `stepopt solve` / "
                    "`stepopt heuristic` on the file):"
                )
                lines += [f"    - {b}" for b in big]
        lines.append("")
    return lines
