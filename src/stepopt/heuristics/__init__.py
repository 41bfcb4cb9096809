"""Online heuristics, registered by name: ``three-stage``, ``vllm-v1``, ``vllm-v1-priority``,
``sarathi``. Each is a callable ``(StepProblem, **params) -> Decision``."""

from stepopt.heuristics import sarathi, three_stage, vllm_v1  # noqa: F401  (registration)
from stepopt.heuristics.base import (
    HeuristicInfo,
    builtin_heuristic_names,
    get_heuristic,
    heuristic_info,
    heuristic_names,
    register_heuristic,
)

__all__ = [
    "HeuristicInfo",
    "builtin_heuristic_names",
    "get_heuristic",
    "heuristic_info",
    "heuristic_names",
    "register_heuristic",
]
