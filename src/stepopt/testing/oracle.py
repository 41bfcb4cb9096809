"""Exact optima cached on disk, so a test suite solves each problem once.

The key is the problem's content hash plus every setting that can change the answer: solver
name, its parameters, the time limit and the stepopt version. Only proven results (``OPTIMAL``,
``INFEASIBLE``) are written to disk: a time-limited ``FEASIBLE`` answer depends on the machine,
so it is solved again next run. Cached decisions are re-judged by the evaluator on load, never
trusted blindly: a cached decision the evaluator rejects is dropped and solved again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from stepopt.evaluate import evaluate
from stepopt.io import problem_hash
from stepopt.model import Decision, StepProblem
from stepopt.solvers.base import SolveResult, SolveStatus

ENV_VAR = "STEPOPT_ORACLE_CACHE"
CACHED_STATUSES = frozenset({SolveStatus.OPTIMAL, SolveStatus.INFEASIBLE})

_default_dir: Path | None = None


def set_default_cache_dir(path: str | Path | None) -> None:
    """Where :func:`default_oracle` keeps its files (the pytest plugin sets this)."""
    global _default_dir, _default_oracle
    _default_dir = None if path is None else Path(path)
    _default_oracle = None


def default_cache_dir() -> Path | None:
    """``$STEPOPT_ORACLE_CACHE``, else :func:`set_default_cache_dir`'s, else the pytest
    session's (``--stepopt-oracle-cache``), else ``None`` (memory only)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    if _default_dir is not None:
        return _default_dir
    plugin = sys.modules.get("stepopt.testing.pytest_plugin")
    return None if plugin is None else plugin.session_cache_dir()


def _version() -> str:
    from stepopt import __version__

    return __version__


def settings_key(
    problem_key: str, solver: str, time_limit: float | None, params: dict[str, Any]
) -> dict[str, Any]:
    """Everything the cached answer depends on."""
    return {
        "problem_hash": problem_key,
        "solver": solver,
        "time_limit": time_limit,
        "params": {k: params[k] for k in sorted(params)},
        "stepopt_version": _version(),
    }


class OracleCache:
    """Solve step problems exactly, memoized in memory and (if ``directory``) on disk.

    ``solver_calls`` counts real solves, ``hits`` answers served from the cache.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = None if directory is None else Path(directory)
        self.solver_calls = 0
        self.hits = 0
        self._memory: dict[str, SolveResult] = {}

    def __repr__(self) -> str:
        return (
            f"OracleCache({str(self.directory)!r}, solver_calls={self.solver_calls}, "
            f"hits={self.hits})"
        )

    def key(
        self,
        problem: StepProblem,
        solver: str = "cpsat",
        time_limit: float | None = None,
        **params: Any,
    ) -> str:
        doc = settings_key(problem_hash(problem), solver, time_limit, params)
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / key[:2] / f"{key}.json"

    def solve(
        self,
        problem: StepProblem,
        solver: str = "cpsat",
        time_limit: float | None = None,
        **params: Any,
    ) -> SolveResult:
        """The solver's result for ``problem``: from the cache when these settings have
        proven it before, else solved now (and cached when proven)."""
        key = self.key(problem, solver, time_limit, **params)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        cached = self._read(problem, key)
        if cached is not None:
            self.hits += 1
            self._memory[key] = cached
            return cached
        from stepopt.solvers.base import solve

        self.solver_calls += 1
        res = solve(problem, solver, time_limit=time_limit, **params)
        if res.status in CACHED_STATUSES:
            self._memory[key] = res
            self._write(problem, key, res, solver, time_limit, params)
        return res

    # ---- files --------------------------------------------------------------------------
    def _read(self, problem: StepProblem, key: str) -> SolveResult | None:
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            status = SolveStatus(doc["status"])
            tokens = doc["tokens"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a torn or foreign file: solve again and overwrite it
        decision = None if tokens is None else Decision.of(tokens)
        ev = None if decision is None else evaluate(problem, decision)
        if ev is not None and not ev.feasible:
            return None
        return SolveResult(
            status=status,
            solver=doc.get("solver", ""),
            decision=decision,
            evaluation=ev,
            bound=doc.get("bound"),
            wall_ms=float(doc.get("wall_ms", 0.0)),
            time_limit_s=doc.get("time_limit"),
            params=dict(doc.get("params") or {}),
            message="from the oracle cache " + str(path),
        )

    def _write(
        self,
        problem: StepProblem,
        key: str,
        res: SolveResult,
        solver: str,
        time_limit: float | None,
        params: dict[str, Any],
    ) -> None:
        path = self.path(key)
        if path is None:
            return
        doc = settings_key(problem_hash(problem), solver, time_limit, params)
        doc.update(
            status=str(res.status),
            tokens=None if res.decision is None else res.decision.scheduled(),
            bound=res.bound,
            wall_ms=res.wall_ms,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic: parallel test workers may write the same entry.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, sort_keys=True, default=str)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)


_default_oracle: OracleCache | None = None


def default_oracle() -> OracleCache:
    """A process-wide oracle on :func:`default_cache_dir` (memory only when there is none)."""
    global _default_oracle
    directory = default_cache_dir()
    if _default_oracle is None or _default_oracle.directory != directory:
        _default_oracle = OracleCache(directory)
    return _default_oracle
