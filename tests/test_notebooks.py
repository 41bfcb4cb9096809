"""Every notebook under notebooks/ runs top to bottom (outputs are not kept)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepopt.testing.data import shared_data_dir

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if shared_data_dir() is None:
        pytest.skip("shared data folder absent (../shared/data or STEPOPT_SHARED_DATA)")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.km = client.create_kernel_manager()
        client.start_new_kernel()
        client.start_new_kernel_client()
    except Exception as exc:  # no kernel spec, no ipykernel, sandbox without sockets...
        pytest.skip(f"notebook kernel cannot start: {type(exc).__name__}: {exc}")
    try:
        client.execute()
    finally:
        if client.km is not None and client.km.has_kernel:
            client.km.shutdown_kernel(now=True)
