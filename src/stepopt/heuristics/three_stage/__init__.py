"""The three-stage greedy of the original design (``three-stage``).

Stage 1 chooses a token budget ``S`` per batch size ``b`` by inverting the latency model at the
target; stages 2 and 3 fill that budget greedily (running requests, then waiting ones); the
best candidate by the active objective wins. docs/heuristics.md lists every choice the design
left open. The hot path works on plain integers: one pass over the running queue, a sort of
the waiting queue, prefix sums that stage 3 extends lazily (only as far as some budget can
reach), and bisection instead of scans; it never calls ``evaluate()``.

This module holds the public API (:func:`plan`, the registered ``three-stage``) and the
prefill fallback's two passes; :mod:`.planner` one pass (its inputs and result), with the
stages as methods in :mod:`.search` (stage 1), :mod:`.fill` (stages 2 and 3) and :mod:`.walk`
(weighted mode).
"""

from __future__ import annotations

from dataclasses import dataclass

from stepopt.errors import InputError
from stepopt.heuristics.base import register_heuristic
from stepopt.heuristics.decode_choice import check_decode_params
from stepopt.heuristics.three_stage.planner import FAIR_SHARE, Knobs, Planner
from stepopt.model import Decision, StepProblem

__all__ = ["FAIR_SHARE", "Knobs", "ThreeStagePlan", "plan", "three_stage"]

_DEFAULT = Knobs()


@dataclass(frozen=True, slots=True)
class ThreeStagePlan:
    """The chosen decision and how stage 1 reached it."""

    decision: Decision
    latency_ns: int  # predicted latency of ``decision`` (equals evaluate()'s)
    budget: int  # the token budget S of the winning candidate
    slots: int  # waiting requests the winning candidate could admit (b - running)
    candidates: int  # distinct (S, slots) simulations run


def plan(
    problem: StepProblem,
    *,
    full_scan: bool = False,
    reserve_full_prompt: bool = False,
    decode_order: str = "cheapest",
    fair_share: float = FAIR_SHARE,
    prefill_fallback: bool = True,
) -> ThreeStagePlan:
    """Run the three stages on ``problem``.

    ``full_scan`` tries every batch size up to ``min(max_num_running_reqs, running + waiting)``
    instead of stopping once the slots no longer bind. ``reserve_full_prompt`` admits a waiting
    request only if the blocks of its whole remaining prompt are free, not just those of this
    step's chunk (for online use under KV pressure). ``decode_order`` (``cheapest`` or the
    seed's ``queue``) and ``fair_share`` choose the decodes of an overloaded step;
    ``prefill_fallback`` retries the running prefills cheapest first when the first choice
    left prefill tokens out. See docs/heuristics.md.
    """
    knobs = _knobs(full_scan, reserve_full_prompt, decode_order, fair_share, prefill_fallback)
    return ThreeStagePlan(*_run(problem, knobs)[:5])


def _knobs(
    full_scan: object,
    reserve_full_prompt: object,
    decode_order: object,
    fair_share: object,
    prefill_fallback: object,
) -> Knobs:
    _check_flags(
        full_scan=full_scan,
        reserve_full_prompt=reserve_full_prompt,
        prefill_fallback=prefill_fallback,
    )
    share = check_decode_params(decode_order, fair_share)
    return Knobs(full_scan, reserve_full_prompt, decode_order, share, prefill_fallback)  # type: ignore[arg-type]


def _run(problem: StepProblem, knobs: Knobs) -> tuple:
    """The plan (a tuple as :meth:`Planner.plan` returns it), and with ``prefill_fallback`` a second
    one with the running prefills cheapest first when the first left some of them short: the
    better of the two by rank, with the candidates of both."""
    first = Planner(problem, knobs, False).plan()
    if not first[6]:
        return first
    second = Planner(problem, knobs, True).plan()
    win = second if second[5] < first[5] else first
    return (*win[:4], first[4] + second[4], win[5], False)


@register_heuristic("three-stage")
def three_stage(
    problem: StepProblem,
    full_scan: bool = False,
    reserve_full_prompt: bool = False,
    decode_order: str = "cheapest",
    fair_share: float = FAIR_SHARE,
    prefill_fallback: bool = True,
) -> Decision:
    """The three-stage greedy: budget by latency inversion, running first, then waiting."""
    if (
        full_scan is False
        and reserve_full_prompt is False
        and decode_order == "cheapest"
        and type(fair_share) is float
        and fair_share == FAIR_SHARE
        and prefill_fallback is True
    ):
        knobs = _DEFAULT  # (the default path skips the checks)
    else:
        knobs = _knobs(full_scan, reserve_full_prompt, decode_order, fair_share, prefill_fallback)
    return _run(problem, knobs)[0]


def _check_flags(**flags: object) -> None:
    for name, value in flags.items():
        if value.__class__ is not bool:
            raise InputError(name, "expected true or false", value)
