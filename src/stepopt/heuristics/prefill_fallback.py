"""Three-stage's prefill fallback: what it tries when the first chunk candidate busts the target.

Stage 2 gives the running prefills their chunks in the design's order (priority, most tokens
left first) and stage 1 sizes the budget by inverting the latency model without the chunk's
own attention. Two things then throw tokens away: the re-inversions jump over the target (the
chunk busts it, one budget lower drops it), and an expensive chunk (a long cached context)
comes first while a cheap one would fit. docs/heuristics.md (choice 13) has the details.
"""

from __future__ import annotations

from collections.abc import Callable

from stepopt.heuristics.common import AttentionFn
from stepopt.model import Request


def bisect_boundary(
    consider: Callable[[int, int], tuple],
    under: int,
    over: int,
    slots: int,
    target: int,
    floor: int,
) -> int:
    """The prefill fallback's bisection, when the re-inversions jumped over the target (a
    chunk's own attention busts it at one budget, a smaller budget drops the chunk) or never
    got under it (the token curve falls where more budget buys no more tokens): bisect
    between the largest budget tried under the target (``under``; at least ``floor``, every
    decode and nothing more, if that is under it: fewer decodes are the decode choice's
    business) and the smallest over it (``over``). Returns the most admissions seen."""
    admitted = 0
    if under < floor:
        res, lat_ns, _, _ = consider(floor, slots)
        if lat_ns > target:
            return 0
        under, admitted = floor, res.admitted
    while under + 1 < over:
        mid = (under + over) // 2
        res, lat_ns, _, _ = consider(mid, slots)
        admitted = max(admitted, res.admitted)
        if lat_ns <= target:
            under = mid
        else:
            over = mid
    return admitted


def cheap_prefill_key(
    attn: AttentionFn, thr: int, min_chunk: int, unit: float, top: int | None
) -> Callable[[Request], float]:
    """Sort key of the prefill fallback: cost per token (per unit of weight) of a request's
    smallest chunk, so a chunk on a short cached context comes before one on a long one."""

    def key(r: Request) -> float:
        c, rem = r.computed_tokens, r.prompt_tokens - r.computed_tokens
        hi = rem if thr <= 0 or rem < thr else thr
        lo = min_chunk if min_chunk < hi else hi
        per_token = unit + attn(lo, c, rem) / lo
        return per_token if top is None else per_token / (1 + top - r.priority)

    return key
