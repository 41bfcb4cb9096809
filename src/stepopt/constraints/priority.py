"""Priority: Decode > Prefill (both modes); in strict mode also Running > Waiting (no waiting
request admitted while a running one gets less than its full chunk) and the waiting queue
admitted as a prefix of its ``(priority, arrival_time, id)`` order.

The encoding reads the implications :mod:`stepopt.formulation.priority` derives from the same
rules (a reduced partial order): ``("sched", i)`` is ``z_i``, ``("full", i)`` a literal that
forces ``c_i >= hi_i``, ``("all", ...)`` an auxiliary conjunction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stepopt.constraints.base import DecisionView, Encoder, Rule, Violation

if TYPE_CHECKING:
    from stepopt.formulation.spec import Formulation

RULES = (Rule.DECODE_FIRST, Rule.RUNNING_FIRST, Rule.WAITING_ORDER)
# What the rule asks of a decision, in the words of the problem's fields (test reports).
HINTS = {
    Rule.DECODE_FIRST: "no prefill token unless every running decode gets its token",
    Rule.RUNNING_FIRST: "strict mode: admit waiting requests only when every running request "
    "gets its full problem.hi(r)",
    Rule.WAITING_ORDER: "strict mode: admitted waiting requests are a prefix of "
    "problem.waiting_order, i.e. sorted by (priority, arrival_time, id)",
}


def check(view: DecisionView) -> list[Violation]:
    problem = view.problem
    tokens, preempted = view.tokens, view.preempted  # tokens: positive counts only
    out = []
    by_id = problem.by_id
    prefill_scheduled = [rid for rid in view.candidates() if not by_id[rid].is_decode]
    starved = (
        [r.id for r in problem.running_decodes if r.id not in tokens and r.id not in preempted]
        if prefill_scheduled
        else []
    )
    if prefill_scheduled and starved:
        out.append(
            Violation(
                Rule.DECODE_FIRST,
                f"prefill tokens scheduled ({', '.join(prefill_scheduled[:5])}) while running "
                f"decodes get none ({', '.join(starved[:5])})",
                tuple(starved),
            )
        )
    if problem.priority_mode != "strict":
        return out
    if view.admitted:
        get, hi = tokens.get, problem.hi
        short = [r.id for r in view.kept if get(r.id, 0) < hi(r)]
        if short:
            out.append(
                Violation(
                    Rule.RUNNING_FIRST,
                    f"waiting requests admitted while running requests get less than their "
                    f"full chunk ({', '.join(short[:5])})",
                    tuple(short),
                )
            )
    order = problem.waiting_order
    k = 0
    while k < len(order) and order[k].id in tokens:
        k += 1
    # The first k admitted form the prefix; any other admitted one skipped ahead.
    skipped_ahead = [r.id for r in order[k:] if r.id in tokens] if k < len(view.admitted) else []
    if skipped_ahead:
        out.append(
            Violation(
                Rule.WAITING_ORDER,
                f"waiting requests admitted out of (priority, arrival, id) order: "
                f"{', '.join(skipped_ahead[:5])} before {order[k].id}",
                tuple(skipped_ahead),
            )
        )
    return out


def encode(enc: Encoder, form: Formulation) -> None:
    lits: dict[Any, Any] = {}

    def lit(node: Any) -> Any:
        kind, ref = node
        if kind == "sched":
            return enc.z[ref]
        if node not in lits:
            v = enc.bool_var(f"{kind}_{ref}")
            if kind == "full":
                enc.at_least_if(enc.c[ref], form.items[ref].hi, v)
            lits[node] = v
        return lits[node]

    # One constraint per dependent node: "v only if all its prerequisites".
    needs: dict[Any, list[Any]] = {}
    for u, v in form.edges:
        needs.setdefault(v, []).append(u)
    for v, us in needs.items():
        enc.only_if_all(lit(v), [lit(u) for u in us])
