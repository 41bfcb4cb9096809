"""The study runner: problems x algorithms on a process pool or a Dask cluster, results to the
database as they arrive, resumable.

The main process reads the problems, hashes them, skips those whose rows are all stored for
these solver settings and package version, and hands the rest out as :class:`Task`\\ s. It is
the only writer: each finished problem is committed in one transaction.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepopt import __version__
from stepopt.errors import InputError, MissingExtraError, StepoptError
from stepopt.heuristics.base import resolve_heuristic
from stepopt.io import problem_hash, read_document
from stepopt.studies.config import DEFAULT_HEURISTICS, StudyConfig
from stepopt.studies.store import Store
from stepopt.studies.worker import Task, run_task


@dataclass(frozen=True)
class RunSummary:
    problems: int  # distinct problems in the set
    skipped: int  # already complete in the database
    ran: int  # problems evaluated by this run
    rows_written: int
    seconds: float
    db: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "problems": self.problems,
            "skipped": self.skipped,
            "ran": self.ran,
            "rows_written": self.rows_written,
            "seconds": round(self.seconds, 3),
            "problems_per_second": round(self.ran / self.seconds, 3) if self.seconds else None,
            "db": self.db,
        }


def heuristic_list(cfg: StudyConfig) -> tuple[str, ...]:
    """The study's heuristics, each checked to resolve (an unknown name fails before work)."""
    from stepopt.heuristics.base import heuristic_names

    names = cfg.heuristics
    if names is None:
        registered = heuristic_names()
        names = tuple(n for n in DEFAULT_HEURISTICS if n in registered) or tuple(registered)
    for n in names:
        resolve_heuristic(n)
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


# ---- executors: iterables of row lists, in completion order --------------------------------
def run_inline(tasks: list[Task]) -> Iterator[list[dict[str, Any]]]:
    for t in tasks:
        yield run_task(t)


def run_local(tasks: list[Task], workers: int) -> Iterator[list[dict[str, Any]]]:
    """A process pool (spawned processes: no fork of a threaded parent)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending = iter(tasks)
        inflight = set()
        try:
            # Keep a few tasks per worker in flight: results stream in, memory stays flat.
            for t in pending:
                inflight.add(pool.submit(run_task, t))
                if len(inflight) >= 4 * workers:
                    break
            while inflight:
                finished, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in finished:
                    try:
                        rows = fut.result()
                    except BrokenProcessPool:
                        raise StepoptError(
                            "a worker process died; scripts that run studies on workers need "
                            'the `if __name__ == "__main__":` guard (or use --workers 0)'
                        ) from None
                    yield rows
                    nxt = next(pending, None)
                    if nxt is not None:
                        inflight.add(pool.submit(run_task, nxt))
        finally:
            for fut in inflight:
                fut.cancel()


def dask_address(executor: str) -> str:
    """``dask://HOST:PORT`` -> ``tcp://HOST:PORT``; ``dask://SCHEME://...`` kept as is."""
    rest = executor[len("dask://") :]
    if not rest:
        raise InputError("executor", "dask:// needs HOST:PORT", executor)
    return rest if "://" in rest else f"tcp://{rest}"


def run_dask(tasks: list[Task], address: str) -> Iterator[list[dict[str, Any]]]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise MissingExtraError("distributed", "dask", "--executor dask://") from None
    client = Client(address)
    try:
        futures = client.map(run_task, tasks, pure=False)
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        client.close()


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


def progress_mode(quiet: bool) -> str:
    if quiet:
        return "quiet"
    return "rich" if sys.stderr.isatty() else "plain"


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
    with Store(cfg.db) as store:
        tasks, total, skipped = prepare_tasks(cfg, heuristics, store)
        if cfg.executor.startswith("dask://"):
            results: Iterable[list[dict[str, Any]]] = run_dask(tasks, dask_address(cfg.executor))
        elif cfg.workers == 0 or len(tasks) <= 1:
            results = run_inline(tasks)
        else:
            results = run_local(tasks, min(cfg.workers, len(tasks)))
        bar = _Progress(len(tasks), progress)
        written = ran = 0
        try:
            for rows in results:
                written += store.insert(rows)
                ran += 1
                if on_rows is not None:
                    on_rows(rows)
                bar.advance()
        finally:
            bar.close()
    return RunSummary(total, skipped, ran, written, time.perf_counter() - t0, str(cfg.db))
