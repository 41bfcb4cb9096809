"""Several policies on one trace, under the same latency model, target rule and engine: the
multi-policy comparison behind ``stepopt simulate --policies`` (usable from Python too)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepopt.latency.model import LatencyModel
from stepopt.simulate.engine import SimConfig, simulate
from stepopt.simulate.metrics import request_columns, summarize
from stepopt.simulate.policies import Policy
from stepopt.simulate.targets import TargetRule
from stepopt.simulate.trace import Trace

ProgressFactory = Callable[[str, int], AbstractContextManager[Any]]


@dataclass
class PolicyRun:
    """One policy's run: its summary (with the policy's own counters), the per-request
    columns (for plots) and the files written."""

    name: str
    summary: dict[str, Any]
    columns: Any
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Outputs:
    """Where each run writes: a plan file (``plan``; one per policy when several run),
    simulator snapshots (``snapshots``: a factory taking the run's folder)."""

    plan: Path | None = None
    snapshots: Callable[[Path], Any] | None = None
    snapshot_dir: Path | None = None


def slug(name: str) -> str:
    """A file-name-safe form of a policy name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def per_policy(path: Path, name: str, many: bool) -> Path:
    """``path`` itself for a single policy, ``<stem>.<policy><suffix>`` for each of several
    (``.parquet`` when ``path`` has no suffix)."""
    if not many:
        return path
    suffix = path.suffix or ".parquet"
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{stem}.{slug(name)}{suffix}")


def compare_policies(
    trace: Trace,
    policies: Sequence[Policy],
    latency: LatencyModel,
    rule: TargetRule,
    config: SimConfig,
    *,
    slo_ttft_ms: float,
    slo_tbt_ms: float,
    outputs: Outputs = Outputs(),
    progress: ProgressFactory | None = None,
    progress_every: int = 20,
) -> list[PolicyRun]:
    """Run every policy on ``trace`` (in order) and summarise each run."""
    many = len(policies) > 1
    runs = []
    for pol in policies:
        snaps = None
        if outputs.snapshots is not None and outputs.snapshot_dir is not None:
            snaps = outputs.snapshots(
                outputs.snapshot_dir / slug(pol.name) if many else outputs.snapshot_dir
            )
        what = f"{pol.name}: {len(trace)} requests of {trace.source}, target {rule.spec}"
        bar = progress(what, len(trace)) if progress is not None else nullcontext(None)
        with bar as tick:
            res = simulate(
                trace,
                pol,
                latency,
                rule,
                config,
                snapshots=snaps,
                progress=tick,
                progress_every=progress_every,
            )
        cols = request_columns(res)
        summary = summarize(res, slo_ttft_ms, slo_tbt_ms, columns=cols)
        written: list[str] = []
        if outputs.plan is not None:
            from stepopt.simulate.plan import write_plan

            written = [str(p) for p in write_plan(res, per_policy(outputs.plan, pol.name, many))]
        if snaps is not None:
            written.append(str(snaps.dir / "manifest.json"))
        summary["policy_stats"] = res.stats["policy"]
        runs.append(PolicyRun(pol.name, summary, cols, written))
    return runs
