"""The example suite (examples/my_heuristic) turns red, with messages a user can act on, when
its heuristic is broken. (It runs green as part of this project's own suite: testpaths include
``examples``.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_heuristic"

# The team "optimizes" its heuristic: when a prefill chunk is scheduled, it drops the decodes
# to save their KV reads, forgetting that decodes come first.
BROKEN = """
from my_heuristic_v1 import decode_first_spf as _v1
from stepopt.model import Decision


def decode_first_spf(problem):
    tokens = _v1(problem).scheduled()
    if any(not problem.by_id[k].is_decode for k in tokens):
        tokens = {k: v for k, v in tokens.items() if not problem.by_id[k].is_decode}
    return Decision.of(tokens)
"""


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("suite")
    shutil.copy(EXAMPLE / "test_my_heuristic.py", work)
    shutil.copy(EXAMPLE / "my_heuristic.py", work / "my_heuristic_v1.py")
    (work / "my_heuristic.py").write_text(BROKEN)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(work),
            "-q",
            "-p",
            "no:xdist",
            "--stepopt-oracle-cache",
            str(work / "oracle"),
            "-o",
            "addopts=",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, work


def test_example_files_are_there():
    assert (EXAMPLE / "my_heuristic.py").is_file()
    assert (EXAMPLE / "test_my_heuristic.py").is_file()


def test_broken_heuristic_fails_every_check(broken_run):
    proc, _ = broken_run
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    summary = out.strip().splitlines()[-1]
    assert re.search(r"6 failed", summary), summary


def test_messages_are_actionable(broken_run):
    proc, work = broken_run
    out = proc.stdout
    # The rule broken, and what it asks of the heuristic.
    assert "priority_decode_first" in out
    assert "no prefill token unless every running decode gets its token" in out
    # The problem is saved and the command that shows the same verdict is printed.
    m = re.search(r"stepopt evaluate (\S+\.problem\.json) (\S+\.decision\.json)", out)
    assert m, out
    assert Path(m[1]).is_file() and Path(m[2]).is_file()
    assert Path(m[1]).parent == work / "oracle" / "failures"
    from stepopt.cli import main

    assert main(["evaluate", m[1], m[2]]) == 1
    assert "--name my_heuristic:decode_first_spf" in out
