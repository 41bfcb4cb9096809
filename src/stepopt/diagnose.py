"""Why a step has no feasible decision, in words a user can act on.

The empty decision breaks none of the scheduling rules (no prefill before decodes, no admission,
no block), so a problem is infeasible only when even the empty step is: its fixed latency is
above a ``goodput`` target, or the running queue alone holds more requests than
``max_num_running_reqs``. The evaluator says which, as for any decision.
"""

from __future__ import annotations

from stepopt.evaluate import evaluate
from stepopt.model import Decision, StepProblem


def infeasibility_reason(problem: StepProblem) -> str:
    """A sentence naming the rules the empty step breaks ("" when it breaks none)."""
    ev = evaluate(problem, Decision({}))
    if not ev.violations:
        return ""
    return "even the empty step is infeasible: " + "; ".join(
        f"{v.rule}: {v.message}" for v in ev.violations
    )
