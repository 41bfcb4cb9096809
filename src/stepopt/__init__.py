"""stepopt: the scheduling step of LLM serving engines as an optimization problem."""

from stepopt.evaluate import Evaluation, Rule, Violation, evaluate
from stepopt.model import Decision, EngineConfig, Request, StepProblem

__version__ = "0.1.0"

__all__ = [
    "Decision",
    "EngineConfig",
    "Evaluation",
    "Request",
    "Rule",
    "StepProblem",
    "Violation",
    "__version__",
    "evaluate",
]
