"""Exact solvers, registered by name: ``cpsat``, ``cbc``, ``highs``, ``brute``,
``structured`` (strict priority, layers plus bounds), ``auto`` (structured, then CP-SAT)."""

from stepopt.solvers import auto, brute, cpsat, milp, structured  # noqa: F401  (registration)
from stepopt.solvers.base import SolveResult, SolveStatus, get_solver, solve, solver_names

__all__ = ["SolveResult", "SolveStatus", "get_solver", "solve", "solver_names"]
