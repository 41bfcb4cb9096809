"""Exact solvers, registered by name: ``cpsat``, ``cbc``, ``highs``, ``brute``."""

from stepopt.solvers import brute, cpsat, milp  # noqa: F401  (registration)
from stepopt.solvers.base import SolveResult, SolveStatus, get_solver, solve, solver_names

__all__ = ["SolveResult", "SolveStatus", "get_solver", "solve", "solver_names"]
