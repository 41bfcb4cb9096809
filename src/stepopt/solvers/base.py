"""The result type every exact solver returns, and the solver registry.

A solver's own objective value is never trusted: ``SolveResult.objective`` and the latency come
from :func:`stepopt.evaluate.evaluate` on the returned decision. ``bound`` and ``gap`` come from
the solver (they are what it proved) and are in the units of the primary objective.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from stepopt.errors import InputError, UnknownNameError
from stepopt.evaluate import Evaluation, evaluate
from stepopt.model import NS_PER_MS, Decision, StepProblem


class SolveStatus(StrEnum):
    OPTIMAL = "OPTIMAL"  # proven optimal (both objective levels for ``target``)
    # a solution, not proven optimal (time limit, or stopped within ``target_tolerance_ns``);
    # see bound, gap and proven_within_ns
    FEASIBLE = "FEASIBLE"
    INFEASIBLE = "INFEASIBLE"  # proven: no decision satisfies the constraints
    NO_SOLUTION = "NO_SOLUTION"  # stopped (time limit) before finding any solution
    ERROR = "ERROR"  # the solver failed; ``message`` says why


@dataclass(frozen=True)
class SolveResult:
    status: SolveStatus
    solver: str
    decision: Decision | None = None
    evaluation: Evaluation | None = None
    bound: float | None = None  # best proven bound on the primary objective (its units)
    wall_ms: float = 0.0
    time_limit_s: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    # Proven distance of the primary objective from the optimum, in integer ns for ``target``
    # (|L - T| minus the proven lower bound): 0 when proven optimal exactly, None when nothing
    # is proven (no bound, or a ``goodput`` result short of optimal).
    proven_within_ns: int | None = None

    @property
    def objective(self) -> float | None:
        """Primary objective of the decision, as the evaluator computes it."""
        return None if self.evaluation is None else self.evaluation.objective

    @property
    def tiebreak(self) -> float | None:
        return None if self.evaluation is None else self.evaluation.tiebreak

    @property
    def gap(self) -> float | None:
        """Relative gap between the decision's primary objective and the bound (0 = proven)."""
        if self.status == SolveStatus.OPTIMAL:
            return 0.0
        obj, bound = self.objective, self.bound
        if obj is None or bound is None:
            return None
        # Relative to the larger magnitude, so the gap stays in [0, 1] even at objective 0.
        denom = max(abs(obj), abs(bound), 1e-9)
        return abs(obj - bound) / denom

    def to_dict(self) -> dict[str, Any]:
        ev = self.evaluation
        return {
            "status": str(self.status),
            "solver": self.solver,
            "objective": self.objective,
            "tiebreak": self.tiebreak,
            "bound": self.bound,
            "gap": self.gap,
            "proven_within_ns": self.proven_within_ns,
            "latency_ms": None if ev is None else ev.latency_ms,
            "latency_ns": None if ev is None else ev.latency_ns,
            "feasible": None if ev is None else ev.feasible,
            "violations": [] if ev is None else [v.to_dict() for v in ev.violations],
            "scheduled_tokens": None if ev is None else ev.scheduled_tokens,
            "batch_size": None if ev is None else ev.batch_size,
            "tokens": {} if self.decision is None else self.decision.scheduled(),
            "solve_ms": self.wall_ms,
            "time_limit_s": self.time_limit_s,
            "params": self.params,
            "message": self.message,
        }


class Solver(Protocol):
    name: str

    def solve(
        self, problem: StepProblem, time_limit: float | None = None, **params: Any
    ) -> SolveResult: ...


@dataclass(frozen=True)
class SolverInfo:
    """A registered solver and what the registry knows about it without building it.

    ``params`` is the set of keyword parameters the solver accepts (or a function that
    returns it, for a set taken from a backend lazily); ``available`` says whether its backend
    is installed. Unknown parameters are rejected here, once, for every solver."""

    name: str
    factory: Callable[[], Solver]
    params: frozenset[str] | Callable[[], frozenset[str]]
    available: Callable[[], bool] = lambda: True
    params_doc: str = ""  # how an error names the valid parameters when there are many

    def accepted(self) -> frozenset[str]:
        return self.params if isinstance(self.params, frozenset) else self.params()

    def check_params(self, params: Mapping[str, Any]) -> None:
        unknown = sorted(set(params) - self.accepted())
        if unknown:
            valid = self.params_doc or ", ".join(sorted(self.accepted())) or "none"
            raise InputError(
                f"{self.name} parameters",
                f"unknown {', '.join(unknown)}; valid: {valid}",
                show_value=False,
            )


class _Checked:
    """The solver with its parameters checked against the registry before it runs."""

    def __init__(self, info: SolverInfo) -> None:
        self.info = info
        self.inner = info.factory()
        self.name = getattr(self.inner, "name", info.name)

    def solve(
        self, problem: StepProblem, time_limit: float | None = None, **params: Any
    ) -> SolveResult:
        self.info.check_params(params)
        return self.inner.solve(problem, time_limit=time_limit, **params)


_SOLVERS: dict[str, SolverInfo] = {}


def register_solver(
    name: str,
    *,
    params: Iterable[str] | Callable[[], frozenset[str]],
    available: Callable[[], bool] | None = None,
    params_doc: str = "",
) -> Callable[[Callable[[], Solver]], Callable[[], Solver]]:
    """Register a zero-argument factory for a solver under ``name`` with the parameters it
    accepts and a check of its backend."""
    accepted = params if callable(params) else frozenset(params)

    def deco(factory: Callable[[], Solver]) -> Callable[[], Solver]:
        _SOLVERS[name] = SolverInfo(
            name, factory, accepted, available or (lambda: True), params_doc
        )
        return factory

    return deco


def _load_builtin() -> None:
    # Importing the package registers the built-in solvers.
    import stepopt.solvers  # noqa: F401


def solver_names() -> list[str]:
    _load_builtin()
    return sorted(_SOLVERS)


def solver_info(name: str) -> SolverInfo:
    _load_builtin()
    if name not in _SOLVERS:
        raise UnknownNameError("solver", name, sorted(_SOLVERS))
    return _SOLVERS[name]


def get_solver(name: str) -> Solver:
    """The named solver; its ``solve`` rejects parameters the solver does not accept."""
    return _Checked(solver_info(name))


def solve(
    problem: StepProblem, solver: str = "cpsat", time_limit: float | None = None, **params: Any
) -> SolveResult:
    """Solve ``problem`` exactly with the named solver."""
    return get_solver(solver).solve(problem, time_limit=time_limit, **params)


def finish(
    problem: StepProblem,
    solver: str,
    status: SolveStatus,
    decision: Decision | None,
    started: float,
    *,
    bound: float | None = None,
    time_limit: float | None = None,
    params: dict[str, Any] | None = None,
    message: str = "",
) -> SolveResult:
    """Build a result, judging the decision with the evaluator (solvers call this last)."""
    ev = None if decision is None else evaluate(problem, decision)
    model_ns = (params or {}).get("model_latency_ns")
    if ev is not None and status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        # A solver's claim is checked, never trusted.
        if not ev.feasible:
            status = SolveStatus.ERROR
            message = "evaluator rejects the decision: " + "; ".join(
                v.message for v in ev.violations
            )
        elif model_ns is not None and model_ns != ev.latency_ns:
            # The decision stands (the evaluator judged it), but a proof built on a different
            # latency is not trusted: at most FEASIBLE. (MILP incumbents found under a time
            # limit can be a few ns off within the backend's tolerances.)
            status = SolveStatus.FEASIBLE
            note = f"solver latency {model_ns} ns != evaluator latency {ev.latency_ns} ns"
            message = f"{message}; {note}" if message else note
    if status == SolveStatus.OPTIMAL and bound is None and ev is not None:
        bound = ev.objective  # proven: the bound is the optimum itself
    return SolveResult(
        status=status,
        solver=solver,
        decision=decision,
        evaluation=ev,
        bound=bound,
        wall_ms=(time.perf_counter() - started) * 1000.0,
        time_limit_s=time_limit,
        params=dict(params or {}),
        message=message,
        proven_within_ns=_proven_within_ns(problem, status, ev, bound),
    )


def _proven_within_ns(
    problem: StepProblem, status: SolveStatus, ev: Evaluation | None, bound: float | None
) -> int | None:
    if ev is None:
        return None
    if status == SolveStatus.OPTIMAL:
        return 0
    if status != SolveStatus.FEASIBLE or bound is None or problem.objective != "target":
        return None
    # The bound is an integer number of ns reported in ms: round() recovers it exactly.
    return max(ev.deviation_ns - round(bound * NS_PER_MS), 0)
