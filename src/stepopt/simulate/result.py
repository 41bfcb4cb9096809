"""A simulator run's result: the step rows as columns, the counters, the records.

A mixin of :class:`stepopt.simulate.engine._Engine` (its attributes live there).
"""

from __future__ import annotations

from typing import Any

from stepopt.simulate.state import _STEP_COLUMNS, SimResult
from stepopt.simulate.trace import NS_PER_S


class Results:
    __slots__ = ()

    def _result(self, wall: float, cpu: float) -> SimResult:
        if self.snapshots is not None:
            self.snapshots.close()
        step, n_total = self.step, self.n_total
        stats = {
            "steps": step,
            "wall_s": wall,
            "cpu_s": cpu,
            "steps_per_s": step / wall if wall > 0 else None,
            "requests": n_total,
            "finished": self.n_finished,
            "rejected": self.n_rejected,
            "unfinished": n_total - self.n_finished - self.n_rejected,
            "preemptions": self.n_preemptions,
            "idle_jumps": self.idle_jumps,
            "end_time_s": self.t / NS_PER_S,
            "policy": self.policy.stats.to_dict(),
        }
        return SimResult(
            policy=self.policy.name,
            target_rule=self.target.spec,
            source=self.trace.source,
            preset=self.latency.name,
            config=self.cfg,
            steps=_columns(self.rows),
            requests=self.states,
            stats=stats,
            decisions=self.decisions,
            preempted=self.preempted_log,
        )


def _columns(rows: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """The step rows (tuples in ``_STEP_COLUMNS`` order) as one list per column."""
    if not rows:
        return {c: [] for c in _STEP_COLUMNS}
    return {c: list(v) for c, v in zip(_STEP_COLUMNS, zip(*rows, strict=True), strict=True)}
