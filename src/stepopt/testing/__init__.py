"""Test helpers for stepopt and for teams testing their own scheduling heuristics.

- :mod:`stepopt.testing.strategies`: hypothesis strategies that build valid problems
  (``problems(max_requests=..., objective=..., priority_mode=..., preset=...)``).
- :func:`assert_feasible`, :func:`assert_gap_within`: assertions with actionable messages.
- :class:`OracleCache`: exact optima cached on disk; the pytest plugin exposes it as the
  ``stepopt_oracle`` fixture and the ``--stepopt-oracle-cache DIR`` option.
- :mod:`stepopt.testing.factories`: small problem factories with keyword defaults.

Names are imported on first use, so the pytest plugin stays cheap to load.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "assert_feasible": "stepopt.testing.assertions",
    "assert_gap_within": "stepopt.testing.assertions",
    "gap": "stepopt.testing.assertions",
    "GapReport": "stepopt.testing.assertions",
    "OracleCache": "stepopt.testing.oracle",
    "problems": "stepopt.testing.strategies",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stepopt.testing' has no attribute {name!r}")
