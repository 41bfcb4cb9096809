"""Concurrency: running requests that stay plus admitted ones fit ``max_num_running_reqs``
(running requests keep their slots; a preempted one gives its slot back)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stepopt.constraints.base import DecisionView, Encoder, Rule, Violation, ids

if TYPE_CHECKING:
    from stepopt.formulation.spec import Formulation

RULES = (Rule.CONCURRENCY,)
# What the rule asks of a decision, in the words of the problem's fields (test reports).
HINTS = {
    Rule.CONCURRENCY: "len(running) + admitted waiting requests <= config.max_num_running_reqs",
}


def check(view: DecisionView) -> list[Violation]:
    cap = view.problem.config.max_num_running_reqs
    kept, admitted = view.kept, view.admitted
    if len(kept) + len(admitted) <= cap:
        return []
    return [
        Violation(
            Rule.CONCURRENCY,
            f"{len(kept)} running + {len(admitted)} admitted exceed max_num_running_reqs={cap}",
            ids(admitted),
        )
    ]


def encode(enc: Encoder, form: Formulation) -> None:
    waiting = [enc.z[it.index] for it in form.items if not it.running]
    if len(waiting) > form.free_slots:
        enc.add(enc.total(waiting) <= form.free_slots, "concurrency")
