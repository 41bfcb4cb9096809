"""Time limits bound the whole call (model building included) and never give less than the
greedy decision; strict mode leaves never-admissible waiting requests out of the model."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stepopt.evaluate import evaluate, rank_key
from stepopt.solvers import SolveStatus, cpsat, solve
from stepopt.solvers.common import admissible
from stepopt.solvers.hint import greedy_hint
from stepopt.solvers.milp import MilpSolver
from stepopt.testing.factories import decodes, make_problem, waitings

LIMIT_S = 2.0


def large(mode: str, n_wait: int):
    rng = random.Random(1)
    prompts = [rng.randint(20, 3000) for _ in range(n_wait)]
    return make_problem(
        decodes(1024, 300),
        waitings(prompts),
        target_ms=60.0,
        priority_mode=mode,
        max_num_scheduled_tokens=2048,
        max_num_running_reqs=1536,
    )


@pytest.mark.parametrize(
    ("name", "mode", "n_wait"),
    [
        (n, m, w)
        for n in ("cpsat", "cbc", "highs")
        for m, w in (("weighted", 256), ("strict", 20_000))
    ],
)
def test_time_limit_bounds_the_whole_call(name, mode, n_wait):
    problem = large(mode, n_wait)
    t = time.perf_counter()
    res = solve(problem, name, time_limit=LIMIT_S)
    wall = time.perf_counter() - t
    assert wall <= 1.2 * LIMIT_S + 0.5, (name, wall)
    # Never worse than the heuristic start, and never an empty schedule when greedy is better.
    assert res.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE), res.message
    greedy = evaluate(problem, greedy_hint(problem))
    assert rank_key(problem, res.evaluation) <= rank_key(problem, greedy)


def test_strict_pruning_keeps_every_admissible_request():
    problem = large("strict", 5_000)
    pruned = admissible(problem)
    # 512 free slots, and the first waiting requests' smallest chunks within the budget
    assert 0 < len(pruned.waiting) <= 512
    kept = {r.id for r in pruned.waiting}
    order = [r.id for r in problem.waiting_order]
    assert set(order[: len(kept)]) == kept  # a prefix of the admission order
    assert admissible(problem.with_changes(priority_mode="weighted")).waiting == problem.waiting


def _gone(pid: int, within: float = 3.0) -> bool:
    """The process has exited (absent, or a zombie waiting for its reaper)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _children() -> list[int]:
    me = str(os.getpid())
    kids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                kids.append(int(d.name))
        except OSError:
            continue
    return kids


def _stuck(pidfile: Path):
    """A solve that ignores its limit and has started a program of its own (as CBC is)."""

    def phases(self, *args):
        proc = subprocess.Popen(["sleep", "60"])
        tmp = pidfile.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()} {proc.pid}")
        tmp.replace(pidfile)  # whole, when the test reads it
        time.sleep(60)

    return phases


@pytest.mark.parametrize("name", ["cbc", "highs", "cpsat"])
def test_a_solve_past_its_deadline_is_killed_with_what_it_spawned(name, monkeypatch, tmp_path):
    pidfile = tmp_path / "pids"
    if name == "cpsat":  # isolated from ISOLATE_FROM requests on
        monkeypatch.setattr(cpsat, "ISOLATE_FROM", 0)
        monkeypatch.setattr(cpsat.CpsatSolver, "_solve", _stuck(pidfile))
    else:
        monkeypatch.setattr(MilpSolver, "_phases", _stuck(pidfile))
    problem = make_problem(decodes(4, 300), waitings([100, 200]), target_ms=60.0)
    before = set(_children())
    t = time.perf_counter()
    res = solve(problem, name, time_limit=1.0)
    assert time.perf_counter() - t <= 1.2 * 1.0 + 0.5
    # the greedy decision, honestly not proven
    assert res.status == SolveStatus.FEASIBLE and res.params["from_hint"], res.message
    assert res.evaluation.feasible
    child, spawned = map(int, pidfile.read_text().split())
    assert _gone(child) and _gone(spawned)
    assert set(_children()) <= before


def test_the_solve_dies_with_a_killed_caller(tmp_path):
    pidfile = tmp_path / "pids"
    script = f"""
import os, subprocess, time
from pathlib import Path
from stepopt.solvers import solve
from stepopt.solvers.milp import MilpSolver
from stepopt.testing.factories import decodes, make_problem, waitings

def phases(self, *args):
    tmp = Path({str(pidfile)!r} + ".tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace({str(pidfile)!r})
    time.sleep(60)

MilpSolver._phases = phases
solve(make_problem(decodes(4, 300), waitings([100]), target_ms=60.0), "highs", time_limit=60)
"""
    caller = subprocess.Popen([sys.executable, "-c", script])
    try:
        end = time.monotonic() + 60
        while not pidfile.exists() and time.monotonic() < end and caller.poll() is None:
            time.sleep(0.05)
        child = int(pidfile.read_text())
    finally:
        caller.kill()
        caller.wait()
    assert _gone(child)
