"""The study runner: problems x algorithms on a process pool or a Dask cluster, results to the
database as they arrive, resumable.

The main process reads the problems, hashes them, skips those whose rows are all stored for
these solver settings and package version, and hands the rest out as :class:`Task`\\ s. It is
the only writer: each finished problem is committed in one transaction.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepopt import __version__
from stepopt.errors import InputError
from stepopt.heuristics.base import get_heuristic
from stepopt.io import problem_hash, read_document
from stepopt.studies.config import DEFAULT_HEURISTICS, StudyConfig
from stepopt.studies.executors import dask_address, run_dask, run_inline, run_local
from stepopt.studies.store import ResultWriter, Store, open_store
from stepopt.studies.worker import Task


@dataclass(frozen=True)
class RunSummary:
    problems: int  # distinct problems in the set
    skipped: int  # already complete in the database
    ran: int  # problems evaluated by this run
    rows_written: int
    seconds: float
    db: str
    # Per algorithm with an error in this run: {"errors": n, "rows": m, "first": message}.
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Reference rows per backend that answered them (``auto``: structured or cpsat).
    backends: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> dict[str, str]:
        """Algorithms that failed on every problem of this run, with their first error."""
        return {a: e["first"] for a, e in self.errors.items() if e["errors"] == e["rows"]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "problems": self.problems,
            "skipped": self.skipped,
            "ran": self.ran,
            "rows_written": self.rows_written,
            "seconds": round(self.seconds, 3),
            "problems_per_second": round(self.ran / self.seconds, 3) if self.seconds else None,
            "db": self.db,
            "errors": self.errors,
            "failed": sorted(self.failed),
            "reference_backends": dict(sorted(self.backends.items())),
        }


class _ErrorTally:
    """Errors per algorithm over the rows of a run (rows are never ERROR silently)."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.first: dict[str, str] = {}
        self.backends: dict[str, int] = {}

    def add(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            a = r["algorithm"]
            if r.get("kind") == "exact" and r.get("ref_backend"):
                b = r["ref_backend"]
                self.backends[b] = self.backends.get(b, 0) + 1
            self.rows[a] = self.rows.get(a, 0) + 1
            if r.get("status") == "ERROR":
                self.errors[a] = self.errors.get(a, 0) + 1
                self.first.setdefault(a, r.get("message") or "")

    def summary(self) -> dict[str, dict[str, Any]]:
        return {
            a: {"errors": n, "rows": self.rows[a], "first": self.first[a]}
            for a, n in sorted(self.errors.items())
        }


def heuristic_list(cfg: StudyConfig) -> tuple[str, ...]:
    """The study's heuristics, each checked to resolve (an unknown name fails before work)."""
    from stepopt.heuristics.base import heuristic_names

    names = cfg.heuristics
    if names is None:
        registered = heuristic_names()
        names = tuple(n for n in DEFAULT_HEURISTICS if n in registered) or tuple(registered)
    for n in names:
        get_heuristic(n)
    return tuple(names)


def ensure_problems(cfg: StudyConfig) -> Path:
    """The problem directory; generated from ``[scenarios]`` when it holds no problem."""
    from stepopt.scenarios import GenerateOptions, default_presets, generate, problem_files

    if cfg.problems is None:
        raise InputError("problems", "no problem directory given (--problems or [study] problems)")
    d = Path(cfg.problems)
    if cfg.scenarios is not None and (not d.is_dir() or not problem_files(d)):
        sc = dict(cfg.scenarios)
        presets = sc.pop("presets", None) or sc.pop("preset", None) or default_presets()
        if isinstance(presets, str):
            presets = presets.split(",")
        source = sc.pop("source", "synthetic")
        for key in ("objective", "priority_mode"):
            if sc.get(key) == "mix":
                sc[key] = None
        if "regimes" in sc:
            sc["regimes"] = tuple(sc["regimes"])
        generate(source, GenerateOptions(presets=tuple(presets), **sc), d)
    return d


def prepare_tasks(
    cfg: StudyConfig, heuristics: tuple[str, ...], store: Store
) -> tuple[list[Task], int, int]:
    """(tasks to run, distinct problems, problems already complete)."""
    from stepopt.io import problem_from_dict
    from stepopt.scenarios import problem_dims, problem_files, read_manifest

    d = ensure_problems(cfg)
    files = problem_files(d)
    if not files:
        raise InputError("problems", "no problem files", str(d))
    manifest = read_manifest(d)
    done = store.done(cfg.settings, __version__)
    wanted = {cfg.solver, *heuristics}
    seen: set[str] = set()
    tasks, skipped = [], 0
    for f in files:
        doc = read_document(f)
        try:
            problem = problem_from_dict(doc)
        except InputError as exc:
            raise InputError(f.name, str(exc), show_value=False) from None
        h = problem_hash(problem)
        if h in seen:
            continue
        seen.add(h)
        stored = done.get(h, set())
        if wanted <= stored:
            skipped += 1
            continue
        dims = {**problem_dims(problem), "problem_file": f.name, "source": "files"}
        rec = manifest.get(f.name)
        if rec is not None and rec.get("hash") in (None, h):
            for k in ("source", "regime", "load", "target_factor"):
                if k in rec:
                    dims[k] = rec[k]
        dims.setdefault("regime", "unknown")
        dims.setdefault("load", dims["demand_ratio"])
        dims.setdefault("target_factor", None)
        for k in ("objective", "target_ms"):
            dims.pop(k, None)  # part of the row identity, set by the worker
        tasks.append(
            Task(
                problem_doc=doc,
                problem_hash=h,
                dims=dims,
                heuristics=tuple(n for n in heuristics if n not in stored),
                solver=cfg.solver,
                time_limit=cfg.time_limit,
                solver_params=dict(cfg.solver_params),
                target_tolerance_ns=cfg.target_tolerance_ns,
                settings=cfg.settings,
                version=__version__,
            )
        )
    return tasks, len(seen), skipped


# ---- progress --------------------------------------------------------------------------------
class _Progress:
    """A rich bar with rate and ETA on a terminal; a line every few seconds otherwise."""

    def __init__(self, total: int, mode: str) -> None:
        self.total, self.mode, self.n = total, mode, 0
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if mode == "rich":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("study"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]} problems/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.task = self.bar.add_task("study", total=total, rate="-")
            self.bar.start()

    def advance(self) -> None:
        self.n += 1
        now = time.perf_counter()
        rate = self.n / max(now - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, rate=f"{rate:.2f}")
        elif self.mode == "plain" and (now - self.last >= 5.0 or self.n == self.total):
            self.last = now
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            print(
                f"study: {self.n}/{self.total} problems, {rate:.2f}/s, ETA {eta:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_study(
    cfg: StudyConfig,
    *,
    progress: str = "quiet",
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> RunSummary:
    """Run (or finish) a study; returns what was done. ``progress``: rich | plain | quiet."""
    heuristics = heuristic_list(cfg)
    from stepopt.solvers.base import get_solver

    get_solver(cfg.solver)  # unknown solver: fail before work
    t0 = time.perf_counter()
    with open_store(cfg.db) as store:
        tasks, total, skipped = prepare_tasks(cfg, heuristics, store)
    if cfg.executor.startswith("dask"):
        address = dask_address(cfg.executor)
        results: Iterable[list[dict[str, Any]]] = run_dask(tasks, address, cfg.workers)
    elif cfg.workers == 0 or len(tasks) <= 1:
        results = run_inline(tasks)
    else:
        results = run_local(tasks, min(cfg.workers, len(tasks)))
    bar = _Progress(len(tasks), progress)
    writer = ResultWriter(cfg.db)
    tally = _ErrorTally()
    ran = 0
    try:
        for rows in results:
            writer.add(rows)
            tally.add(rows)
            ran += 1
            if on_rows is not None:
                on_rows(rows)
            bar.advance()
    finally:
        bar.close()
        writer.close()  # what arrived is kept, on Ctrl-C too
    return RunSummary(
        total,
        skipped,
        ran,
        writer.written,
        time.perf_counter() - t0,
        str(cfg.db),
        tally.summary(),
        tally.backends,
    )
