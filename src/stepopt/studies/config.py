"""Study settings: a TOML file, command-line flags, or both (flags win).

[study]
problems = "problems"            # directory of problem files (relative to this file)
heuristics = ["three-stage", "vllm-v1", "sarathi"]   # or "pkg.module:function"
solver = "auto"                  # structured first, CP-SAT where it does not prove
time_limit = 2.0                 # seconds per problem for the exact solver
target_tolerance_ns = 1000       # target: reference proven within 1 us of the optimum is enough
db = "study.duckdb"
workers = 2
executor = "local"               # "dask" (a local Dask cluster) or "dask://HOST:PORT"

[solver_params]                  # passed to the solver (e.g. num_workers = 1)

[scenarios]                      # optional: generate the problems first when the
source = "synthetic"             # directory holds none (same keys as the CLI)
count = 100
seed = 0
presets = ["a100/llama-2-7b/tp1"]
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stepopt.errors import InputError
from stepopt.limits import check_seed, check_target_ms, check_time_limit

DEFAULT_HEURISTICS = ("three-stage", "vllm-v1", "sarathi")
MAX_WORKERS = 1024
_STUDY_KEYS = {
    "problems",
    "heuristics",
    "solver",
    "time_limit",
    "target_tolerance_ns",
    "db",
    "workers",
    "executor",
}
# A reference |L - T| proven within 1 us of the optimum moves any target gap by at most
# 1 us / T (2e-5 at T = 50 ms), far below the calibrated latency model's ~2 % (~1 ms at
# 50 ms) error; proving the last ns is a subset-sum search that often runs out of time.
DEFAULT_TARGET_TOLERANCE_NS = 1000
_SCENARIO_KEYS = {
    "source",
    "count",
    "seed",
    "presets",
    "preset",
    "target_ms",
    "objective",
    "priority_mode",
    "regimes",
    "load",
    "concurrency",
    "max_waiting",
}


@dataclass(frozen=True)
class StudyConfig:
    problems: Path | None = None
    heuristics: tuple[str, ...] | None = None  # None: every registered heuristic
    solver: str = "auto"
    time_limit: float | None = 2.0
    target_tolerance_ns: int = DEFAULT_TARGET_TOLERANCE_NS
    db: Path = Path("study.duckdb")
    workers: int = 2
    executor: str = "local"
    solver_params: dict[str, Any] = field(default_factory=dict)
    scenarios: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.workers <= MAX_WORKERS:
            raise InputError(
                "workers", f"must be in 0..{MAX_WORKERS} (0 runs in this process)", self.workers
            )
        check_time_limit(self.time_limit, "time_limit")
        tol = self.target_tolerance_ns
        if isinstance(tol, bool) or not isinstance(tol, int) or tol < 0:
            raise InputError("target_tolerance_ns", "must be an integer number of ns >= 0", tol)
        if "target_tolerance_ns" in self.solver_params:
            raise InputError(
                "solver_params.target_tolerance_ns",
                "set it as [study] target_tolerance_ns (part of the row identity)",
                self.solver_params["target_tolerance_ns"],
            )
        if not (self.executor in ("local", "dask") or self.executor.startswith("dask://")):
            raise InputError("executor", "must be local, dask or dask://HOST:PORT", self.executor)

    @property
    def settings(self) -> str:
        """The solver settings part of a row's identity (results with different tolerances never
        mix; tolerance 0 keeps the identity of rows written before the tolerance existed)."""
        params = json.dumps(self.solver_params, sort_keys=True, separators=(",", ":"))
        tol = f";target_tolerance_ns={self.target_tolerance_ns}" if self.target_tolerance_ns else ""
        return f"{self.solver};time_limit={self.time_limit}{tol};params={params}"

    def with_flags(self, **flags: Any) -> StudyConfig:
        """A copy with every flag that is not ``None`` applied."""
        return replace(self, **{k: v for k, v in flags.items() if v is not None})


def load_study(path: str | Path) -> StudyConfig:
    """A study file, every value checked for its type and range (one-line errors naming the
    key, e.g. ``study.time_limit: must be a number (got 'fast')``)."""
    from stepopt.io import check_values, read_text

    p = Path(path)
    text = read_text(p, "study")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError("study", f"{p}: invalid TOML: {exc}", show_value=False) from None
    check_values(doc)  # TOML has inf and nan too
    base = p.resolve().parent
    unknown = set(doc) - {"study", "solver_params", "scenarios"}
    if unknown:
        raise InputError(
            p.name, "unknown table; valid: study, solver_params, scenarios", sorted(unknown)[0]
        )
    study = _table(doc, "study")
    unknown = set(study) - _STUDY_KEYS
    if unknown:
        raise InputError(f"{p.name} [study]", "unknown key", sorted(unknown)[0])
    kw: dict[str, Any] = {}
    for key in ("solver", "executor", "problems", "db"):
        if key in study:
            kw[key] = _str(study[key], f"study.{key}")
    for key in ("problems", "db"):
        if key in kw:
            kw[key] = base / kw[key]
    if "workers" in study:
        kw["workers"] = _int(study["workers"], "study.workers")
    if "time_limit" in study:
        kw["time_limit"] = check_time_limit(
            _num(study["time_limit"], "study.time_limit"), "study.time_limit"
        )
    if "target_tolerance_ns" in study:
        kw["target_tolerance_ns"] = _int(study["target_tolerance_ns"], "study.target_tolerance_ns")
    if "heuristics" in study:
        h = study["heuristics"]
        if not isinstance(h, list) or not all(isinstance(x, str) for x in h):
            raise InputError("study.heuristics", "must be a list of names", h)
        kw["heuristics"] = tuple(h)
    kw["solver_params"] = dict(_table(doc, "solver_params"))
    if "scenarios" in doc:
        kw["scenarios"] = _scenarios(_table(doc, "scenarios"), p, base)
    return StudyConfig(**kw)


def _scenarios(sc: dict[str, Any], p: Path, base: Path) -> dict[str, Any]:
    sc = dict(sc)
    bad = set(sc) - _SCENARIO_KEYS
    if bad:
        raise InputError(f"{p.name} [scenarios]", "unknown key", sorted(bad)[0])
    for key in ("source", "objective", "priority_mode"):
        if key in sc:
            _str(sc[key], f"scenarios.{key}")
    for key in ("count", "concurrency", "max_waiting"):
        if key in sc and _int(sc[key], f"scenarios.{key}") < (0 if key == "count" else 1):
            raise InputError(f"scenarios.{key}", "must be >= 1", sc[key])
    if "seed" in sc:
        check_seed(_int(sc["seed"], "scenarios.seed"), "scenarios.seed")
    if "target_ms" in sc:
        check_target_ms(_num(sc["target_ms"], "scenarios.target_ms"), "scenarios.target_ms")
    if "load" in sc and not _num(sc["load"], "scenarios.load") > 0:
        raise InputError("scenarios.load", "must be > 0", sc["load"])
    for key in ("presets", "preset", "regimes"):
        v = sc.get(key)
        if v is not None and not (
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
        ):
            raise InputError(f"scenarios.{key}", "must be a name or a list of names", v)
    src = str(sc.get("source", "synthetic"))
    kind, _, arg = src.partition(":")
    if arg and not Path(arg).is_absolute():
        sc["source"] = f"{kind}:{base / arg}"
    return sc


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise InputError(key, f"must be a table ([{key}])", value)
    return value


def _str(value: Any, field_name: str) -> str:
    if not isinstance(value, str):
        raise InputError(field_name, "must be a string", value)
    return value


def _num(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(field_name, "must be a number", value)
    return float(value)


def _int(value: Any, field_name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(field_name, "must be an integer", value)
    return value
