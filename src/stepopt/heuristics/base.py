"""The heuristic registry: any callable ``(StepProblem) -> Decision`` registered by name.

Packages may add heuristics through the entry-point group ``stepopt.heuristics`` (the entry
point's value is the callable); they are then accepted by name everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from stepopt.errors import UnknownNameError
from stepopt.model import Decision, StepProblem

Heuristic = Callable[[StepProblem], Decision]

ENTRY_POINT_GROUP = "stepopt.heuristics"
_HEURISTICS: dict[str, Heuristic] = {}
_entry_points_loaded = False


def register_heuristic(name: str) -> Callable[[Heuristic], Heuristic]:
    """Decorator: register ``fn`` under ``name``."""

    def deco(fn: Heuristic) -> Heuristic:
        _HEURISTICS[name] = fn
        return fn

    return deco


def _load() -> None:
    global _entry_points_loaded
    import stepopt.heuristics  # noqa: F401  (registers the built-ins)

    if not _entry_points_loaded:
        _entry_points_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in _HEURISTICS:
                _HEURISTICS[ep.name] = _lazy(ep)


def _lazy(ep) -> Heuristic:
    loaded: list[Heuristic] = []

    def call(problem: StepProblem) -> Decision:
        if not loaded:
            loaded.append(ep.load())
        return loaded[0](problem)

    call.__name__ = ep.name
    return call


def heuristic_names() -> list[str]:
    _load()
    return sorted(_HEURISTICS)


def get_heuristic(name: str) -> Heuristic:
    _load()
    if name not in _HEURISTICS:
        raise UnknownNameError("heuristic", name, sorted(_HEURISTICS))
    return _HEURISTICS[name]
