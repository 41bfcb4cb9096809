"""The rules of the step problem, one module per constraint family.

Each family states its rule once: ``check`` (what :func:`stepopt.evaluate.evaluate` runs) and
``encode`` (what the CP-SAT and PuLP encoders run, through :class:`Encoder`). The evaluator and
both encoders loop over :data:`FAMILIES`; the brute-force oracle (``solvers/brute.py``) stays an
independent implementation, the referee. docs/architecture.md walks through adding a rule.
"""

from stepopt.constraints import budget, concurrency, kv, latency_cap, phase, priority
from stepopt.constraints.base import DecisionView, Encoder, Family, Rule, Violation

# In the order the evaluator reports violations.
FAMILIES: tuple[Family, ...] = (budget, concurrency, phase, priority, kv, latency_cap)  # type: ignore[assignment]

__all__ = ["FAMILIES", "DecisionView", "Encoder", "Family", "Rule", "Violation"]
