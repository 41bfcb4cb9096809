"""Latency cap (``goodput`` objective only): the predicted step latency stays within the
target, ``L <= T``. Under ``target`` the latency is the objective, not a constraint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stepopt.constraints.base import DecisionView, Encoder, Rule, Violation
from stepopt.model import NS_PER_MS

if TYPE_CHECKING:
    from stepopt.formulation.spec import Formulation

RULES = (Rule.LATENCY_CAP,)
# What the rule asks of a decision, in the words of the problem's fields (test reports).
HINTS = {
    Rule.LATENCY_CAP: "goodput objective: the predicted latency stays <= target_latency_ms",
}


def check(view: DecisionView) -> list[Violation]:
    problem = view.problem
    latency, target = view.latency_ns, problem.target_ns
    if problem.objective != "goodput" or latency <= target:
        return []
    return [
        Violation(
            Rule.LATENCY_CAP,
            f"predicted latency {latency / NS_PER_MS:.3f} ms exceeds the target "
            f"{target / NS_PER_MS:.3f} ms",
        )
    ]


def encode(enc: Encoder, form: Formulation) -> None:
    if form.objective == "goodput":
        enc.add(enc.latency <= form.target_ns, "latency_cap")
