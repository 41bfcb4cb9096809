"""Progress of a simulation on stderr: a rich bar on a terminal, a line every few seconds in a
log, nothing when quiet. It shows finished requests, engine steps, simulated time and an ETA."""

from __future__ import annotations

import sys
import time
from typing import Any

from stepopt.console import progress_mode

__all__ = ["SimProgress", "progress_mode"]

PLAIN_EVERY_S = 10.0
NS_PER_S = 1_000_000_000


class SimProgress:
    """A context manager whose instance is the simulator's ``progress`` callback."""

    def __init__(self, label: str, total: int, mode: str) -> None:
        self.label, self.total, self.mode = label, total, mode
        self.t0 = self.last = time.perf_counter()
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> SimProgress:
        if self.mode == "rich":
            from rich.console import Console
            from rich.markup import escape
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("finished, {task.fields[steps]} steps, sim {task.fields[sim]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.bar.add_task(escape(self.label), total=self.total, steps=0, sim="0 s")
            self.bar.start()
        return self

    def __call__(self, step: int, finished: int, total: int, sim_ns: int) -> None:
        sim = f"{sim_ns / NS_PER_S:.1f} s"
        if self.bar is not None:
            self.bar.update(self.task, completed=finished, steps=step, sim=sim)
            return
        now = time.perf_counter()
        if self.mode != "plain" or now - self.last < PLAIN_EVERY_S:
            return
        self.last = now
        elapsed = now - self.t0
        eta = f"{elapsed * (total - finished) / finished:.0f} s" if finished else "-"
        print(
            f"{self.label}: {finished}/{total} finished, {step} steps, simulated {sim}, "
            f"{elapsed:.0f} s elapsed, ETA {eta}",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
