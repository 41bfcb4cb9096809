"""The record three-stage scores: one candidate step, as aggregates plus how to rebuild it."""

from __future__ import annotations

from typing import Any, NamedTuple


class StepCandidate(NamedTuple):
    """One candidate step of three-stage (a typed tuple: no per-instance dict, built and read
    in the heuristic's hot loop).

    ``detail`` says how to rebuild the decision (``("d", n)``: the first ``n`` decodes of the
    decode choice; ``("r", j, tail)``: every decode, the first ``j`` running prefills in full,
    ``tail`` after them; ``("w", ...)``/``("x", ...)``: the walks over the waiting queue).
    ``grow_at`` is the smallest budget that would schedule more (None: none does);
    ``least_budget`` the smallest budget that gives this same candidate.
    """

    tokens: int  # S
    batch: int  # b
    context: int  # decode context summed over the batch's decodes
    attention: int  # prefill attention, ns
    weighted: int  # weighted tokens
    admitted: int  # waiting requests admitted
    detail: Any
    grow_at: int | None
    least_budget: int
