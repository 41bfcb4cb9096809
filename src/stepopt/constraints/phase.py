"""Phase: a scheduled decode gets exactly 1 token; a scheduled prefill a chunk in
``[lo, hi]`` (``StepProblem.lo``/``hi``: the minimum chunk and the capped remaining prompt)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stepopt.constraints.base import DecisionView, Encoder, Rule, Violation

if TYPE_CHECKING:
    from stepopt.formulation.spec import Formulation

RULES = (Rule.PHASE,)
# What the rule asks of a decision, in the words of the problem's fields (test reports).
HINTS = {
    Rule.PHASE: "a decode gets 0 or 1 token; a prefill 0 or problem.lo(r)..problem.hi(r) "
    "(hi = remaining prompt capped by long_prefill_token_threshold, lo = min(min_prefill_chunk, "
    "hi))",
}


def check(view: DecisionView) -> list[Violation]:
    problem, by_id = view.problem, view.problem.by_id
    out = []
    tokens = view.tokens
    for rid in view.candidates():  # positive counts of known ids, in request order
        r, n = by_id[rid], tokens[rid]
        if n == 1 and r.is_decode:
            continue  # problem.lo(r) == problem.hi(r) == 1 (the common case, kept cheap)
        lo, hi = problem.lo(r), problem.hi(r)
        if not lo <= n <= hi:
            kind = "decode" if r.is_decode else "prefill"
            out.append(
                Violation(Rule.PHASE, f"{r.id}: {n} tokens, {kind} allows 0 or {lo}..{hi}", (r.id,))
            )
    return out


def encode(enc: Encoder, form: Formulation) -> None:
    # A decode's token variable is its ``z`` (0 or 1): nothing to add.
    for it in form.items:
        if not it.decode:
            ci, zi = enc.c[it.index], enc.z[it.index]
            enc.add(ci >= it.lo * zi)
            enc.add(ci <= it.hi * zi)
