"""The problems an assertion judges: drawn from a hypothesis strategy the same way every
run, or given, without duplicates."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from stepopt.io import problem_hash
from stepopt.model import StepProblem


@contextmanager
def _without_local_constants() -> Iterator[None]:
    """Hypothesis mixes literals from the project's loaded modules into its draws, so the same
    seed gives other problems depending on what else the process imported. A gap threshold
    must be judged on the same problems every run: draw without them. (Internal hook of
    hypothesis; when it is absent, draws are as hypothesis makes them.)"""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    cache = getattr(getattr(providers, "CONSTANTS_CACHE", None), "cache", None)
    if original is None or cache is None or not hasattr(providers, "Constants"):
        yield
        return
    empty = providers.Constants()
    cache.clear()
    providers._get_local_constants = lambda: empty
    try:
        yield
    finally:
        providers._get_local_constants = original
        cache.clear()


def draw_examples(strategy: Any, max_examples: int) -> list[StepProblem]:
    """``max_examples`` problems from a hypothesis strategy, the same ones every run (and in
    every process, whatever else it imported)."""
    from hypothesis import HealthCheck, Phase, given, settings

    out: list[StepProblem] = []

    @settings(
        max_examples=max_examples,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(problem: StepProblem) -> None:
        out.append(problem)

    with _without_local_constants():
        collect()
    return out


def problem_list(problems: Any, max_examples: int) -> list[StepProblem]:
    """The distinct problems of ``problems`` (a problem, an iterable, or a hypothesis
    strategy to draw ``max_examples`` from)."""
    if isinstance(problems, StepProblem):
        items = [problems]
    elif hasattr(problems, "example") and hasattr(problems, "map"):  # a hypothesis strategy
        items = draw_examples(problems, max_examples)
    else:
        items = list(problems)
    seen: set[str] = set()
    out = []
    for p in items:
        if not isinstance(p, StepProblem):
            raise TypeError(f"problems must be StepProblems, got {type(p).__name__}")
        h = problem_hash(p)
        if h not in seen:
            seen.add(h)
            out.append(p)
    return out
