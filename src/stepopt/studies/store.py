"""The results database: one embedded DuckDB file, one table ``results``.

Only the main process writes. Each finished problem's rows go in one transaction and the
primary key is the row identity, so a run killed at any moment loses at most the problems in
flight and a rerun inserts exactly the missing rows (``INSERT OR IGNORE``).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from stepopt.errors import InputError, MissingExtraError

# (column, SQL type); the first six columns are the row identity (primary key).
KEY = ("problem_hash", "algorithm", "objective", "target_ms", "settings", "version")
COLUMNS: tuple[tuple[str, str], ...] = (
    ("problem_hash", "VARCHAR"),
    ("algorithm", "VARCHAR"),
    ("objective", "VARCHAR"),
    ("target_ms", "DOUBLE"),
    ("settings", "VARCHAR"),
    ("version", "VARCHAR"),
    ("kind", "VARCHAR"),
    # dimensions for breakdowns
    ("problem_file", "VARCHAR"),
    ("source", "VARCHAR"),
    ("regime", "VARCHAR"),
    ("preset", "VARCHAR"),
    ("priority_mode", "VARCHAR"),
    ("load", "DOUBLE"),
    ("target_factor", "DOUBLE"),
    ("queue_size", "INTEGER"),
    ("n_running", "INTEGER"),
    ("n_decodes", "INTEGER"),
    ("n_prefills", "INTEGER"),
    ("n_waiting", "INTEGER"),
    ("budget", "INTEGER"),
    ("demand_ratio", "DOUBLE"),
    ("threshold", "INTEGER"),
    ("min_chunk", "INTEGER"),
    ("max_running", "INTEGER"),
    ("kv_limited", "BOOLEAN"),
    # outcome
    ("status", "VARCHAR"),
    ("message", "VARCHAR"),
    ("feasible", "BOOLEAN"),
    ("hard_feasible", "BOOLEAN"),
    ("violations", "VARCHAR"),
    ("latency_ms", "DOUBLE"),
    ("objective_value", "DOUBLE"),
    ("tiebreak", "DOUBLE"),
    ("scheduled_tokens", "INTEGER"),
    ("batch_size", "INTEGER"),
    ("n_preempted", "INTEGER"),
    ("bound", "DOUBLE"),
    ("solver_gap", "DOUBLE"),
    ("ref_status", "VARCHAR"),
    ("ref_objective", "DOUBLE"),
    ("ref_proven_within_ns", "BIGINT"),
    ("target_tolerance_ns", "BIGINT"),
    ("gap", "DOUBLE"),
    ("gap_abs", "DOUBLE"),
    ("gap_bound", "DOUBLE"),
    ("gap_incumbent", "DOUBLE"),
    ("gap_kind", "VARCHAR"),
    ("decision_ms", "DOUBLE"),
    ("solve_ms", "DOUBLE"),
    ("decision", "VARCHAR"),
    ("worker", "VARCHAR"),
)
NAMES = tuple(c for c, _ in COLUMNS)
DIMENSIONS = ("load", "queue_size", "preset", "target", "regime", "priority_mode", "source")


def _duckdb():
    try:
        import duckdb
    except ImportError:  # a core dependency, but say clearly what is missing
        raise MissingExtraError("duckdb", "dev", "the study database") from None
    return duckdb


def schema_sql() -> str:
    cols = ",\n  ".join(f"{c} {t}" for c, t in COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS results (\n  {cols},\n"
        f"  created_at TIMESTAMP DEFAULT current_timestamp,\n"
        f"  PRIMARY KEY ({', '.join(KEY)})\n)"
    )


class Store:
    """A writable study database (open it in one process only)."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        duckdb = _duckdb()
        self.path = Path(path)
        if read_only and not self.path.is_file():
            raise InputError("db", "no such database", str(self.path))
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            raise InputError("db", f"cannot open: {str(exc).splitlines()[0]}", str(path)) from None
        if not read_only:
            self.con.execute(schema_sql())
            # Databases written by an older stepopt get the columns added since (as nulls).
            for col, typ in COLUMNS:
                self.con.execute(f"ALTER TABLE results ADD COLUMN IF NOT EXISTS {col} {typ}")
        elif not self._has_table():
            raise InputError("db", "not a study database (no results table)", str(self.path))

    def _has_table(self) -> bool:
        q = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'results'"
        return self.con.execute(q).fetchone()[0] > 0

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def insert(self, rows: list[dict[str, Any]]) -> int:
        """Insert one problem's rows in one transaction; returns how many were new."""
        if not rows:
            return 0
        before = self.count()
        marks = ", ".join("?" for _ in NAMES)
        sql = f"INSERT OR IGNORE INTO results ({', '.join(NAMES)}) VALUES ({marks})"
        values = [[r.get(c) for c in NAMES] for r in rows]
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.executemany(sql, values)
            self.con.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(Exception):  # an interrupted query may have rolled back
                self.con.execute("ROLLBACK")
            if isinstance(exc, RuntimeError) and "interrupt" in str(exc).lower():
                # DuckDB turns Ctrl-C during a query into an error: report it as what it is.
                raise KeyboardInterrupt from None
            raise
        return self.count() - before

    def count(self) -> int:
        return self.con.execute("SELECT count(*) FROM results").fetchone()[0]

    def done(self, settings: str, version: str) -> dict[str, set[str]]:
        """Algorithms already stored per problem hash for these solver settings and version."""
        q = "SELECT problem_hash, algorithm FROM results WHERE settings = ? AND version = ?"
        out: dict[str, set[str]] = defaultdict(set)
        for h, a in self.con.execute(q, [settings, version]).fetchall():
            out[h].add(a)
        return out

    def rows(self, where: str = "", params: list[Any] | None = None) -> list[dict[str, Any]]:
        """All result rows as dictionaries (ordered by problem and algorithm)."""
        sql = "SELECT * FROM results"
        if where:
            sql += f" WHERE {where}"
        sql += " ORDER BY problem_hash, algorithm"
        cur = self.con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
