"""Many windows solved and replayed in parallel, stored beside study results.

Each task solves one window exactly and replays each per-step policy from its start state;
one row per (window, algorithm) goes into the table ``horizon`` of the same DuckDB file a gap
study uses (:mod:`stepopt.studies.store`). A rerun skips the (window, settings) pairs already
stored, so a killed run resumes. Tasks run in this process, a local process pool or on Dask,
through the study executors.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE = "horizon"
COLUMNS: tuple[tuple[str, str], ...] = (
    ("window_hash", "VARCHAR"),
    ("algorithm", "VARCHAR"),
    ("settings", "VARCHAR"),
    ("window_file", "VARCHAR"),
    ("requests", "INTEGER"),
    ("steps", "INTEGER"),
    ("status", "VARCHAR"),
    ("feasible", "BOOLEAN"),
    ("slo_met", "INTEGER"),
    ("slo_met_weighted", "INTEGER"),
    ("slo_attainment", "DOUBLE"),
    ("tokens", "BIGINT"),
    ("busy_ms", "DOUBLE"),
    ("ttft_p50_ms", "DOUBLE"),
    ("ttft_p99_ms", "DOUBLE"),
    ("tbt_p99_p50_ms", "DOUBLE"),
    ("tbt_p99_p99_ms", "DOUBLE"),
    ("opt_status", "VARCHAR"),
    ("opt_slo_met_weighted", "INTEGER"),
    ("slo_bound", "INTEGER"),
    ("regret", "INTEGER"),
    ("regret_bound", "INTEGER"),
    ("wall_s", "DOUBLE"),
    ("message", "VARCHAR"),
    ("plan", "VARCHAR"),
)
KEY = ("window_hash", "algorithm", "settings")


@dataclass(frozen=True)
class WindowTask:
    doc: dict[str, Any]
    window_hash: str
    window_file: str
    policies: tuple[str, ...]
    time_limit: float | None
    settings: str


def window_hash(doc: dict[str, Any]) -> str:
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_window_task(task: WindowTask) -> list[dict[str, Any]]:
    """The optimum row and one row per policy (errors become rows with a message)."""
    # long: the rows of one window: the policies' replays (the solver's hints), the optimum, one
    # row each, with the regret columns side by side
    from stepopt.horizon.files import window_from_dict
    from stepopt.horizon.replay import replay_policy
    from stepopt.horizon.solve import solve_window

    w = window_from_dict(task.doc, name=task.window_file)
    base = {
        "window_hash": task.window_hash,
        "settings": task.settings,
        "window_file": task.window_file,
        "requests": len(w.requests),
        "steps": w.steps,
    }
    # Policies first: their feasible plans are hints, so the window's incumbent is never
    # worse than a policy (the bound is the solver's).
    replays = []
    for pol in task.policies:
        t1 = time.perf_counter()
        try:
            plan, ev = replay_policy(w, pol)
            status, message = ("OK" if ev.feasible else "INFEASIBLE"), None
        except Exception as exc:  # a row says what failed; the study goes on
            plan, ev, status, message = None, None, "ERROR", f"{type(exc).__name__}: {exc}"
        replays.append((pol, plan, ev, status, message, time.perf_counter() - t1))
    t0 = time.perf_counter()
    try:
        hints = [p for _, p, ev, *_ in replays if ev is not None and ev.feasible]
        res = solve_window(w, task.time_limit, hints=hints)
        opt_ev, opt_status, bound = res.evaluation, res.status, res.slo_bound
        message = None
    except Exception as exc:
        opt_ev, opt_status, bound, message = None, "ERROR", None, f"{type(exc).__name__}: {exc}"
        res = None
    best = opt_ev.met_weighted if opt_ev is not None else None
    rows = [
        {
            **base,
            **_ev_cols(opt_ev),
            "algorithm": "optimum",
            "status": opt_status,
            "opt_status": opt_status,
            "opt_slo_met_weighted": best,
            "slo_bound": bound,
            "regret": 0 if best is not None else None,
            "regret_bound": None if bound is None or best is None else bound - best,
            "wall_s": time.perf_counter() - t0,
            "message": message,
            "plan": json.dumps(res.plan) if res is not None else None,
        }
    ]
    for pol, plan, ev, status, message, wall in replays:
        got = ev.met_weighted if ev is not None and ev.feasible else None
        rows.append(
            {
                **base,
                **_ev_cols(ev),
                "algorithm": pol,
                "status": status,
                "opt_status": opt_status,
                "opt_slo_met_weighted": best,
                "slo_bound": bound,
                "regret": None if got is None or best is None else best - got,
                "regret_bound": None if got is None or bound is None else bound - got,
                "wall_s": wall,
                "message": message,
                "plan": json.dumps(plan) if plan is not None else None,
            }
        )
    return rows


def _ev_cols(ev: Any) -> dict[str, Any]:
    if ev is None:
        return {}
    m = ev.metrics
    return {
        "feasible": ev.feasible,
        "slo_met": ev.met_count,
        "slo_met_weighted": ev.met_weighted,
        "slo_attainment": m.get("slo_attainment"),
        "tokens": ev.tokens,
        "busy_ms": ev.busy_ns / 1e6,
        "ttft_p50_ms": m.get("ttft_p50_ms"),
        "ttft_p99_ms": m.get("ttft_p99_ms"),
        "tbt_p99_p50_ms": m.get("tbt_p99_p50_ms"),
        "tbt_p99_p99_ms": m.get("tbt_p99_p99_ms"),
    }


def _ensure(con: Any) -> None:
    cols = ",\n  ".join(f"{c} {t}" for c, t in COLUMNS)
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (\n  {cols},\n"
        f"  created_at TIMESTAMP DEFAULT current_timestamp,\n  PRIMARY KEY ({', '.join(KEY)})\n)"
    )


def run_horizon_study(
    windows: list[Path],
    db: Path,
    policies: list[str],
    time_limit: float | None = 10.0,
    workers: int = 0,
    executor: str = "local",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Solve and replay every window not yet stored under these settings."""
    from stepopt.horizon.files import window_from_dict
    from stepopt.io import read_document
    from stepopt.simulate.policies import make_policy
    from stepopt.studies import executors
    from stepopt.studies.store import open_store

    for p in policies:
        make_policy(p)  # unknown names fail now, with the valid ones listed
    settings = json.dumps({"policies": sorted(policies), "time_limit": time_limit})
    tasks = []
    for path in windows:
        doc = read_document(path)
        window_from_dict(doc)  # bad files fail before any work, naming the field
        tasks.append(
            WindowTask(doc, window_hash(doc), str(path), tuple(policies), time_limit, settings)
        )
    with open_store(db) as store:
        _ensure(store.con)
        done = {
            h
            for (h,) in store.con.execute(
                f"SELECT DISTINCT window_hash FROM {TABLE} WHERE settings = ?", [settings]
            ).fetchall()
        }
    todo = [t for t in tasks if t.window_hash not in done]
    if executor.startswith("dask"):
        stream = executors.run_dask(
            todo, executors.dask_address(executor), max(workers, 1), fn=run_window_task
        )
    elif workers > 0:
        stream = executors.run_local(todo, workers, fn=run_window_task)
    else:
        stream = executors.run_inline(todo, fn=run_window_task)
    n = 0
    for rows in stream:
        with open_store(db) as store:
            _insert(store.con, rows)
        n += 1
        if progress is not None:
            progress(n, len(todo))
    return {"windows": len(tasks), "skipped": len(tasks) - len(todo), "solved": n}


def _insert(con: Any, rows: list[dict[str, Any]]) -> None:
    names = [c for c, _ in COLUMNS]
    con.execute("BEGIN")
    for r in rows:
        con.execute(
            f"INSERT OR IGNORE INTO {TABLE} ({', '.join(names)}) VALUES "
            f"({', '.join('?' for _ in names)})",
            [r.get(c) for c in names],
        )
    con.execute("COMMIT")


def horizon_rows(db: Path) -> list[dict[str, Any]]:
    from stepopt.studies.store import open_store

    with open_store(db, read_only=True) as store:
        cur = store.con.execute(f"SELECT * FROM {TABLE} ORDER BY window_file, algorithm")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
