"""The results database: one embedded DuckDB file, one table ``results``.

Only the main process writes. Finished problems' rows go in one transaction each and the
primary key is the row identity, so a run killed at any moment loses at most the problems in
flight (and those finished in the last half second, see ``runner``) and a rerun inserts
exactly the missing rows (``INSERT OR IGNORE``). The writer opens the file only to write, so a
report can read a running study in between.
"""

from __future__ import annotations

import contextlib
import time
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
    ("ref_backend", "VARCHAR"),  # the backend whose answer is the reference (auto: which one)
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


def _duckdb():
    try:
        import duckdb
    except ImportError:  # a core dependency, but say clearly what is missing
        raise MissingExtraError("duckdb", "dev", "the study database") from None
    return duckdb


def open_store(path: str | Path, *, read_only: bool = False, wait_s: float = 10.0) -> Store:
    """:class:`Store`, waiting up to ``wait_s`` while another process holds the file (a
    running study writes in short transactions; a report reads in one)."""
    deadline = time.monotonic() + wait_s
    pause = 0.02
    while True:
        try:
            return Store(path, read_only=read_only)
        except DatabaseBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def schema_sql() -> str:
    cols = ",\n  ".join(f"{c} {t}" for c, t in COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS results (\n  {cols},\n"
        f"  created_at TIMESTAMP DEFAULT current_timestamp,\n"
        f"  PRIMARY KEY ({', '.join(KEY)})\n)"
    )


INSERT_ROWS = 200  # rows per INSERT statement


class DatabaseBusy(InputError):
    """Another process holds the database file (DuckDB allows one writer or many readers)."""


class Store:
    """A study database. DuckDB lets one process write or several read a file at a time, so
    writers and readers keep it open briefly (:func:`open_store` waits for a turn)."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        duckdb = _duckdb()
        self.path = Path(path)
        if read_only and not self.path.is_file():
            raise InputError("db", "no such database", str(self.path))
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            first = str(exc).splitlines()[0]
            if "lock" in first.lower():
                raise DatabaseBusy("db", f"in use by another process: {first}", str(path)) from None
            raise InputError("db", f"cannot open: {first}", str(path)) from None
        except duckdb.Error as exc:  # not a DuckDB file at all, or a newer storage version
            first = str(exc).splitlines()[0]
            raise InputError("db", f"not a study database: {first}", str(path)) from None
        try:
            if not read_only:
                self.con.execute(schema_sql())
                # Databases written by an older stepopt get the columns added since (as nulls).
                for col, typ in COLUMNS:
                    self.con.execute(f"ALTER TABLE results ADD COLUMN IF NOT EXISTS {col} {typ}")
            self._check_schema()
        except BaseException:
            self.con.close()
            raise

    def _check_schema(self) -> None:
        """A file of another schema (or another program's database) is named as such."""
        q = "SELECT column_name FROM information_schema.columns WHERE table_name = 'results'"
        have = {row[0] for row in self.con.execute(q).fetchall()}
        if not have:
            raise InputError("db", "not a study database (no results table)", str(self.path))
        missing = [c for c in (*KEY, "kind", "status", "gap_kind") if c not in have]
        if missing:
            raise InputError(
                "db",
                f"not a study database: its results table has no column {missing[0]!r}",
                str(self.path),
            )

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def insert(self, rows: list[dict[str, Any]]) -> int:
        """Insert rows (one problem's, or all a writer holds) in one transaction; returns how
        many were new."""
        if not rows:
            return 0
        before = self.count()
        marks = "(" + ", ".join("?" for _ in NAMES) + ")"
        head = f"INSERT OR IGNORE INTO results ({', '.join(NAMES)}) VALUES "
        self.con.execute("BEGIN TRANSACTION")
        try:
            # Multi-row statements: DuckDB's executemany costs milliseconds per row.
            for k in range(0, len(rows), INSERT_ROWS):
                part = rows[k : k + INSERT_ROWS]
                values = [r.get(c) for r in part for c in NAMES]
                self.con.execute(head + ", ".join(marks for _ in part), values)
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


class ResultWriter:
    """A run's results into the database, the file open only while writing.

    What is pending is written in one transaction, at most every ``every_s`` seconds (opening
    the file costs tens of ms), so a ``SIGKILL`` loses at most that much finished work (a rerun
    redoes it); while a reader holds the file they wait in memory. :meth:`close`
    writes what is left, waiting up to ``final_wait_s`` for a reader to finish.
    """

    def __init__(self, path: str | Path, every_s: float = 0.5, final_wait_s: float = 600.0):
        self.path = path
        self.every_s = every_s
        self.final_wait_s = final_wait_s
        self.pending: list[list[dict[str, Any]]] = []
        self.written = 0
        self.last = float("-inf")

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.pending.append(rows)
        if time.monotonic() - self.last >= self.every_s:
            self.flush(wait_s=0.0)

    def flush(self, wait_s: float) -> None:
        if not self.pending:
            return
        try:
            store = open_store(self.path, wait_s=wait_s)
        except DatabaseBusy:
            if wait_s > 0:
                raise
            return  # a report is reading: write next time
        with store:  # what is pending, in one transaction
            self.written += store.insert([r for rows in self.pending for r in rows])
            self.pending.clear()
        self.last = time.monotonic()

    def close(self) -> None:
        self.flush(wait_s=self.final_wait_s)
