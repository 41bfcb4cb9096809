"""Where the shared real data lives (never copied into the repository), and a pytest skip.

The data folder sits next to the repository clone: ``<clone>/../shared/data``. Set
``STEPOPT_SHARED_DATA`` to point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "STEPOPT_SHARED_DATA"


def _candidates() -> list[Path]:
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env).expanduser()]
    # src/stepopt/testing/data.py -> parents[3] is the repository root in a source checkout.
    here = Path(__file__).resolve()
    out = []
    if len(here.parents) > 3:
        out.append(here.parents[3] / ".." / "shared" / "data")
    out.append(Path.cwd() / ".." / "shared" / "data")
    return out


def shared_data_dir() -> Path | None:
    """The shared data folder, or ``None`` when it is absent.

    ``STEPOPT_SHARED_DATA`` overrides the default (``<repo>/../shared/data`` relative to the
    package source, then to the current directory); an override that does not exist gives
    ``None`` rather than falling back, so a typo is not silently ignored.
    """
    for path in _candidates():
        if path.is_dir():
            return path.resolve()
    return None


def require_shared_data(*parts: str) -> Path:
    """The shared data folder (or a path inside it) for a test; skips the test when absent."""
    import pytest

    root = shared_data_dir()
    if root is None:
        where = os.environ.get(ENV_VAR) or "<repo>/../shared/data"
        pytest.skip(f"shared data not found at {where} (set {ENV_VAR})")
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data file missing: {path}")
    return path
