"""Sampled simulator states as problem files: the gap studies' ``snapshot`` source.

The directory holds one problem file per captured step (``step-00001234.json``, written with
:func:`stepopt.io.save_problem`) and ``manifest.json``::

    {"format": "stepopt-snapshots/1", "source": TRACE, "policy": NAME, "preset": NAME,
     "every": K | null, "probability": P | null, "seed": S,
     "problems": [{"file": "step-00001234.json", "step": 1234, "time_s": 61.2,
                   "n_running": 57, "n_waiting": 3, "target_ms": 50.0, "policy": NAME}, ...]}

:mod:`stepopt.scenarios.snapshot` reads it (``--source snapshot:DIR``); keys starting with
``n_`` are not copied into a scenario's metadata.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from stepopt.errors import InputError
from stepopt.io import save_problem
from stepopt.model import StepProblem

FORMAT = "stepopt-snapshots/1"
MANIFEST = "manifest.json"


class SnapshotWriter:
    """Capture every ``every``-th step, or each step with ``probability`` (seeded), up to
    ``limit`` files. Steps with empty queues are never seen (the simulator skips them)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        every: int | None = None,
        probability: float | None = None,
        seed: int = 0,
        limit: int | None = None,
        source: str = "",
        preset: str = "",
    ) -> None:
        if (every is None) == (probability is None):
            raise InputError("snapshot", "give exactly one of every or probability", None)
        if every is not None and every < 1:
            raise InputError("snapshot_every", "must be >= 1", every)
        if probability is not None and not 0 < probability <= 1:
            raise InputError("snapshot_probability", "must be in (0, 1]", probability)
        if limit is not None and limit < 1:
            raise InputError("snapshot_limit", "must be >= 1", limit)
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.every, self.probability, self.seed, self.limit = every, probability, seed, limit
        self._rng = random.Random(seed)
        self.rows: list[dict[str, Any]] = []
        self.source, self.preset = source, preset
        self.policy = ""

    def maybe_capture(self, step: int, t_ns: int, problem: StepProblem, policy: str) -> None:
        if self.limit is not None and len(self.rows) >= self.limit:
            return
        if self.every is not None:
            if step % self.every:
                return
        elif self._rng.random() >= self.probability:  # type: ignore[operator]
            return
        name = f"step-{step:08d}.json"
        save_problem(problem, self.dir / name)
        self.policy = policy
        self.rows.append(
            {
                "file": name,
                "step": step,
                "time_s": t_ns / 1e9,
                "n_running": len(problem.running),
                "n_waiting": len(problem.waiting),
                "target_ms": problem.target_latency_ms,
                "policy": policy,
            }
        )

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "source": self.source,
            "policy": self.policy,
            "preset": self.preset,
            "every": self.every,
            "probability": self.probability,
            "seed": self.seed,
            "problems": self.rows,
        }

    def close(self) -> None:
        (self.dir / MANIFEST).write_text(json.dumps(self.manifest(), indent=1) + "\n")
