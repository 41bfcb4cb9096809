"""Windows of steps: the hindsight-optimal plan over K steps, its judge, and the regret of
per-step policies against it (docs/horizon.md)."""

from stepopt.horizon.evaluate import Plan, WindowEvaluation, WindowState, evaluate_window
from stepopt.horizon.problem import Slo, WindowProblem, WindowRequest
from stepopt.horizon.replay import replay_policy
from stepopt.horizon.solve import WindowResult, solve_window

__all__ = [
    "Plan",
    "Slo",
    "WindowEvaluation",
    "WindowProblem",
    "WindowRequest",
    "WindowResult",
    "WindowState",
    "evaluate_window",
    "replay_policy",
    "solve_window",
]
