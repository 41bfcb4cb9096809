"""pytest plugin (registered through the ``pytest11`` entry point): the exact-optimum cache.

``--stepopt-oracle-cache DIR`` sets where optima are kept (default: ``stepopt-oracle`` under
pytest's cache directory, so a second run of a suite does not solve again; ``pytest
--cache-clear`` empties it). The ``stepopt_oracle`` fixture is that cache;
:func:`stepopt.testing.assert_gap_within` uses it by default. Nothing heavy is imported until a
test asks for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from stepopt.testing.oracle import OracleCache

OPTION = "--stepopt-oracle-cache"
_DIR_KEY = pytest.StashKey[Path | None]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stepopt", "stepopt heuristic validation")
    group.addoption(
        OPTION,
        dest="stepopt_oracle_cache",
        metavar="DIR",
        default=None,
        help="Directory of cached exact optima (default: stepopt-oracle under pytest's cache "
        "directory).",
    )


def oracle_cache_dir(config: pytest.Config) -> Path | None:
    """The cache directory of this session (``None``: no cache provider, memory only)."""
    if _DIR_KEY in config.stash:
        return config.stash[_DIR_KEY]
    opt = config.getoption("stepopt_oracle_cache", default=None)
    if opt:
        path: Path | None = Path(opt).expanduser().resolve()
    elif getattr(config, "cache", None) is not None:
        path = Path(config.cache.mkdir("stepopt-oracle"))
    else:
        path = None
    config.stash[_DIR_KEY] = path
    return path


# Sessions in this process, innermost last (pytester runs a session inside a session).
_sessions: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    # Remember the session; its directory is resolved (and created) only when an oracle is
    # first used, so suites that never use stepopt pay nothing.
    _sessions.append(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if config in _sessions:
        _sessions.remove(config)


def session_cache_dir() -> Path | None:
    """The running session's oracle cache directory (``None`` outside pytest)."""
    return oracle_cache_dir(_sessions[-1]) if _sessions else None


def pytest_report_header(config: pytest.Config) -> str | None:
    opt = config.getoption("stepopt_oracle_cache", default=None)
    return f"stepopt oracle cache: {oracle_cache_dir(config)}" if opt else None


@pytest.fixture(scope="session")
def stepopt_oracle(pytestconfig: pytest.Config) -> OracleCache:
    """Exact optima on disk: ``stepopt_oracle.solve(problem, "cpsat", time_limit=10)``."""
    from stepopt.testing.oracle import OracleCache

    return OracleCache(oracle_cache_dir(pytestconfig))
