"""The ``simulate`` command's report: the policies side by side, as a table or one JSON
object."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepopt.cli.common import console, print_json

if TYPE_CHECKING:
    from rich.table import Table

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


def report(header: dict[str, Any], runs: list, plot: Path | None, json_out: bool) -> None:
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
