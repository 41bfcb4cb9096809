"""Token budget: the step's tokens ``S = sum c_i`` stay within ``max_num_scheduled_tokens``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stepopt.constraints.base import DecisionView, Encoder, Rule, Violation

if TYPE_CHECKING:
    from stepopt.formulation.spec import Formulation

RULES = (Rule.BUDGET,)
# What the rule asks of a decision, in the words of the problem's fields (test reports).
HINTS = {
    Rule.BUDGET: "the tokens of all requests sum to at most config.max_num_scheduled_tokens",
}


def check(view: DecisionView) -> list[Violation]:
    budget = view.problem.config.max_num_scheduled_tokens
    total = sum(view.tokens.values())
    if total <= budget:
        return []
    return [
        Violation(
            Rule.BUDGET, f"{total} tokens scheduled, budget max_num_scheduled_tokens={budget}"
        )
    ]


def encode(enc: Encoder, form: Formulation) -> None:
    # ``form.s_max`` is min(budget, every request's largest chunk): the row binds at most there.
    enc.add(enc.tokens <= form.s_max, "budget")
