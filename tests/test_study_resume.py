"""Resumability: SIGKILL a real `stepopt study run` mid-way, rerun, compare with a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_study import assert_same_outcomes

from stepopt.scenarios import GenerateOptions, generate
from stepopt.studies import StudyConfig, load_rows, run_study
from stepopt.studies.store import KEY

TESTS = Path(__file__).resolve().parent
HEURISTICS = ("test_study:decodes_only", "test_study:fill_everything")
N = 16


def _cmd(problems: Path, db: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "stepopt",
        "study",
        "run",
        "--problems",
        str(problems),
        "--heuristics",
        ",".join(HEURISTICS),
        "--db",
        str(db),
        "--workers",
        "1",
        "--time-limit",
        "5",
        "--quiet",
    ]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX process groups")
def test_killed_run_finishes_on_rerun_with_no_row_lost_or_duplicated(tmp_path):
    problems = tmp_path / "problems"
    generate(
        "synthetic",
        GenerateOptions(
            count=N,
            seed=21,
            presets=("demo",),
            concurrency=6,
            max_waiting=6,
            priority_mode="strict",
        ),
        problems,
    )
    db, markers = tmp_path / "killed.duckdb", tmp_path / "markers"
    markers.mkdir()
    # The fake heuristic touches a marker per problem and sleeps, so the run is slow enough
    # to be killed in the middle, and we know when rows are in without opening the database.
    proc = subprocess.Popen(
        _cmd(problems, db),
        env=_env(STEPOPT_TEST_MARKERS=str(markers), STEPOPT_TEST_SLEEP="0.15"),
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    while len(list(markers.iterdir())) < 5:
        if proc.poll() is not None:
            pytest.fail(f"run ended early: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "no progress from the study run"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes
    proc.wait()

    partial = load_rows(db)
    algs = len(HEURISTICS) + 1
    assert 0 < len(partial) < N * algs
    assert len(partial) % algs == 0  # whole problems only: one transaction per problem

    done = subprocess.run(_cmd(problems, db), env=_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    rows = load_rows(db)
    keys = [tuple(r[k] for k in KEY) for r in rows]
    assert len(keys) == len(set(keys)) == N * algs

    clean_db = tmp_path / "clean.duckdb"
    run_study(
        StudyConfig(
            problems=problems, heuristics=HEURISTICS, time_limit=5.0, db=clean_db, workers=0
        )
    )

    assert_same_outcomes(rows, load_rows(clean_db))
