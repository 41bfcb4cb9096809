"""A study while it runs and when it dies: reports read partial results, a SIGKILL of
`stepopt study run` leaves no process behind, an algorithm that fails everywhere is an error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stepopt.cli import main
from stepopt.scenarios import GenerateOptions, generate
from stepopt.studies import load_rows

TESTS = Path(__file__).resolve().parent
SLOW = "test_study:decodes_only"  # touches a marker per problem and sleeps (see test_study)

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("live")
    opts = GenerateOptions(
        count=12, seed=4, presets=("demo",), concurrency=4, max_waiting=4, priority_mode="strict"
    )
    generate("synthetic", opts, d)
    return d


def _env(markers: Path, sleep: float) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.update(STEPOPT_TEST_MARKERS=str(markers), STEPOPT_TEST_SLEEP=str(sleep))
    return env


def _start(problems: Path, db: Path, markers: Path, *extra: str, sleep: float = 0.3):
    markers.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "stepopt",
        "study",
        "run",
        "--problems",
        str(problems),
        "--heuristics",
        SLOW,
        "--db",
        str(db),
        "--time-limit",
        "5",
        "--quiet",
        *extra,
    ]
    return subprocess.Popen(cmd, env=_env(markers, sleep), stderr=subprocess.PIPE)


def _wait_for(markers: Path, n: int, proc: subprocess.Popen, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while len(list(markers.iterdir())) < n:
        if proc.poll() is not None:
            pytest.fail(f"run ended early: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "no progress from the study run"
        time.sleep(0.05)


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            out.setdefault(ppid, []).append(int(name))
    return out


def _descendants(pid: int) -> list[int]:
    kids, found, stack = _children(), [], [pid]
    while stack:
        for c in kids.get(stack.pop(), []):
            found.append(c)
            stack.append(c)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie is dead, waiting for a reaper


def _kill_and_check_no_orphan(proc: subprocess.Popen, want_at_least: int) -> None:
    deadline = time.monotonic() + 60
    while len(kids := _descendants(proc.pid)) < want_at_least:
        assert time.monotonic() < deadline, f"expected {want_at_least} child processes: {kids}"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # the run alone: its children get no signal from us
    proc.wait()
    try:
        deadline = time.monotonic() + 15
        while alive := [k for k in kids if _alive(k)]:
            assert time.monotonic() < deadline, f"orphaned processes still alive: {alive}"
            time.sleep(0.1)
    finally:
        for k in kids:  # never leave a process behind, even when the test fails
            if _alive(k):
                os.kill(k, signal.SIGKILL)


def test_sigkill_of_a_pool_run_leaves_no_worker_or_resource_tracker(problems, tmp_path):
    proc = _start(problems, tmp_path / "s.duckdb", tmp_path / "m", "--workers", "2")
    _wait_for(tmp_path / "m", 2, proc)
    # two workers and multiprocessing's resource tracker
    _kill_and_check_no_orphan(proc, want_at_least=3)


def test_sigkill_of_a_local_dask_run_leaves_no_process(problems, tmp_path):
    pytest.importorskip("distributed")
    proc = _start(
        problems, tmp_path / "s.duckdb", tmp_path / "m", "--executor", "dask", "--workers", "1"
    )
    _wait_for(tmp_path / "m", 1, proc)
    _kill_and_check_no_orphan(proc, want_at_least=1)


def test_report_reads_a_running_study(problems, tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    proc = _start(problems, db, tmp_path / "m", "--workers", "0", sleep=0.4)
    try:
        _wait_for(tmp_path / "m", 4, proc)
        time.sleep(0.6)  # past one write interval: some rows are in
        assert main(["study", "report", str(db), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert 0 < doc["info"]["problems"] < 12
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(load_rows(db)) == 12 * 2  # nothing lost to the reader


def test_an_algorithm_that_fails_everywhere_is_an_error(problems, tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    argv = [
        "study",
        "run",
        "--problems",
        str(problems),
        "--db",
        str(db),
        "--workers",
        "0",
        "--heuristics",
        "test_study:decodes_only,test_study:broken",
        "--time-limit",
        "5",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error: test_study:broken failed on every problem (12)" in err
    assert "RuntimeError: boom" in err.split("failed on every problem")[1]
    out = tmp_path / "rep"
    assert main(["study", "report", str(db), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "errors: test_study:broken (" in text and "first: RuntimeError: boom" in text
    md = (out / "report.md").read_text()
    assert "Errors (no decision" in md and "test_study:broken" in md
    doc = json.loads((out / "report.json").read_text())
    broken = [s for s in doc["summary"] if s["heuristic"] == "test_study:broken"]
    assert broken and all(s["count_error"] == s["count"] for s in broken)
    assert all(s["first_error"] for s in broken)


def test_report_md_cites_only_files_that_exist(problems, tmp_path):
    db = tmp_path / "s.duckdb"
    assert (
        main(
            [
                "study",
                "run",
                "--problems",
                str(problems),
                "--db",
                str(db),
                "-q",
                "--workers",
                "0",
                "--heuristics",
                "test_study:decodes_only",
            ]
        )
        == 0
    )
    out = tmp_path / "rep"
    assert main(["study", "report", str(db), "-o", str(out)]) == 0
    md = (out / "report.md").read_text()
    import re

    for link in re.findall(r"\]\(([^)]+)\)", md):
        assert (out / link).is_file(), link
    repo = TESTS.parent
    for cited in re.findall(r"\b((?:docs|src|benchmarks)/[\w./-]+\.\w+)", md):
        assert (repo / cited).is_file(), cited
    assert "FORMULATION.md" not in md
