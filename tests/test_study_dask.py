"""The same study on a Dask cluster (a local one) gives the same rows as the process pool."""

from __future__ import annotations

import sys

import pytest
from test_study import assert_same_outcomes

from stepopt.errors import InputError, MissingExtraError
from stepopt.scenarios import GenerateOptions, generate
from stepopt.studies import StudyConfig, load_rows, run_study
from stepopt.studies.runner import dask_address

HEURISTICS = ("test_study:decodes_only",)


def test_dask_executor_matches_inline(tmp_path):
    distributed = pytest.importorskip("distributed")
    problems = tmp_path / "p"
    generate(
        "synthetic",
        GenerateOptions(
            count=6, seed=5, presets=("demo",), concurrency=6, max_waiting=6, priority_mode="strict"
        ),
        problems,
    )
    inline = tmp_path / "inline.duckdb"
    run_study(StudyConfig(problems=problems, heuristics=HEURISTICS, db=inline, workers=0))
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        db = tmp_path / "dask.duckdb"
        cfg = StudyConfig(
            problems=problems,
            heuristics=HEURISTICS,
            db=db,
            executor=f"dask://{cluster.scheduler_address}",
        )
        s = run_study(cfg)
        assert s.ran == 6
        assert run_study(cfg).ran == 0  # resumable there too

    assert_same_outcomes(load_rows(db), load_rows(inline))


def test_dask_address_forms():
    assert dask_address("dask://10.0.0.1:8786") == "tcp://10.0.0.1:8786"
    assert dask_address("dask://inproc://x/1") == "inproc://x/1"
    with pytest.raises(InputError):
        dask_address("dask://")
    with pytest.raises(InputError, match="executor"):
        StudyConfig(executor="ray://x")


def test_missing_dask_names_the_extra(tmp_path, monkeypatch):
    from stepopt.studies.runner import run_dask

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingExtraError, match=r"stepopt\[dask\]"):
        next(run_dask([], "tcp://127.0.0.1:1"))
