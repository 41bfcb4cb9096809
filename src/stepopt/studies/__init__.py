"""Optimality-gap studies: runner, executors (process pool, Dask), DuckDB store, reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stepopt.studies.config import StudyConfig, load_study
from stepopt.studies.runner import RunSummary, run_study
from stepopt.studies.store import Store, open_store


def load_rows(db: str | Path, settings: str = "all") -> list[dict[str, Any]]:
    """The result rows of a study database: ``all``, the ``latest`` (solver settings,
    version) run, or the rows of one settings string (see ``report.select_rows``). A study
    that is running is read between its writes (it keeps the file open only to write)."""
    from stepopt.studies.report import select_rows

    with open_store(db, read_only=True) as store:
        return select_rows(store.rows(), settings)


def load_dataframe(db: str | Path):
    """The ``results`` table as a pandas DataFrame (pandas needed)."""
    from stepopt.errors import MissingExtraError

    try:
        import pandas  # noqa: F401
    except ImportError:
        raise MissingExtraError("pandas", "parquet", "load_dataframe") from None
    with open_store(db, read_only=True) as store:
        return store.con.execute("SELECT * FROM results ORDER BY problem_hash, algorithm").df()


def report_document(rows: list[dict[str, Any]], by: str = "regime") -> dict[str, Any]:
    """``{info, summary, by, breakdown}``: report.json and ``study report --json``."""
    from stepopt.studies.report import breakdown, study_info, summarize

    return {
        "info": study_info(rows),
        "summary": summarize(rows),
        "by": by,
        "breakdown": breakdown(rows, by),
    }


def write_report(
    db: str | Path,
    out_dir: str | Path,
    by: str = "regime",
    plots: bool = True,
    settings: str = "latest",
    rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """report.md, report.json and the PNG plots in ``out_dir`` for the rows ``settings``
    selects (default: the latest run; ``rows`` when already loaded); returns the JSON
    document."""
    from stepopt.studies.markdown import markdown_report

    if rows is None:
        rows = load_rows(db, settings)
    doc = report_document(rows, by)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    if plots and rows:
        from stepopt.studies.plots import write_plots

        names = write_plots(rows, out)
    (out / "report.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (out / "report.md").write_text(markdown_report(rows, by, names), encoding="utf-8")
    return doc


__all__ = [
    "RunSummary",
    "Store",
    "StudyConfig",
    "load_dataframe",
    "load_rows",
    "load_study",
    "report_document",
    "run_study",
    "write_report",
]
