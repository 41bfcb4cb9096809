"""Which running decodes the three-stage greedy schedules when not all of them fit.

An overloaded step (the decodes alone exceed the target, the token budget or the free KV
blocks) may schedule any subset of the running decodes and nothing else (Decode > Prefill; no
rule orders running decodes among themselves). A decode costs the same token and batch terms
whichever it is, plus ``delta * context``: for the objective, the short contexts are the cheap
ones. :class:`DecodeChoice` arranges the decodes as one sequence so that scheduling ``k`` of
them means its first ``k`` (prefix sums, bisection over ``k``); :func:`largest_count`,
:func:`target_swaps` and :func:`fill` pick ``k`` and adjust the set. docs/heuristics.md
(choice 6) describes the orders and the age guard.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from fractions import Fraction
from itertools import accumulate, pairwise
from operator import attrgetter

from stepopt.errors import InputError
from stepopt.model import Request

DECODE_ORDERS = ("cheapest", "queue")

_PRIORITY = attrgetter("priority")
_AGE = attrgetter("priority", "arrival_time")  # the guard's order (stable: queue order)
_CTX = attrgetter("computed_tokens")

LatencyOf = Callable[[int, int], int]
"""``(decodes, context sum) -> ns``: the exact latency of a decode-only step."""


def check_decode_params(decode_order: object, fair_share: object) -> Fraction:
    """Validate the two knobs (one-line errors naming the field); the share as a fraction."""
    if decode_order not in DECODE_ORDERS:
        raise InputError("decode_order", f"must be one of {', '.join(DECODE_ORDERS)}", decode_order)
    if isinstance(fair_share, bool) or not isinstance(fair_share, int | float):
        raise InputError("fair_share", "expected a number in [0, 1]", fair_share)
    if not 0 <= fair_share <= 1:
        raise InputError("fair_share", "must be in [0, 1]", fair_share)
    return Fraction(fair_share).limit_denominator(10_000)


class DecodeChoice:
    """The running decodes as one sequence; ``k`` scheduled decodes are its first ``k``.

    ``order="queue"`` (the seed's): priority, then queue order. ``order="cheapest"``: least
    cost per unit of weight first, cost = ``unit_ps + decode_context_ps * context`` (in strict
    mode every weight is 1, so shortest context first); ties keep queue order. The age guard
    ``share`` (cheapest only) interleaves the oldest decodes by ``(priority, arrival_time)``:
    among the first ``m`` of the sequence, ``ceil(share * m)`` are taken in age order, so the
    oldest decode always comes first and long contexts cannot be skipped forever.

    With a KV limit (``kv_free`` not None), a decode whose context ends on a block boundary
    needs a new block: those past the first ``kv_free`` of them in the sequence are left out,
    so any subset of the sequence fits the free blocks.
    """

    __slots__ = ("ascending", "ctx", "guarded", "seq", "w")

    def __init__(
        self,
        decodes: Sequence[Request],
        order: str,
        share: Fraction,
        top: int | None,
        kv_free: int | None,
        bs: int,
        unit_ps: int,
        dps: int,
    ) -> None:
        if order == "queue":
            ranked, fair = sorted(decodes, key=_PRIORITY), None
        else:
            ranked = _by_cost(decodes, top, unit_ps, dps)
            fair = sorted(decodes, key=_AGE) if share and len(decodes) > 1 else None
        if fair is None and kv_free is None:
            seq, guarded = ranked, None
        else:
            seq, guarded = _interleave(ranked, fair, share, kv_free, bs)
        self.seq: list[Request] = seq
        # Shortest context first throughout: no decode past a prefix is cheaper than the next.
        self.ascending = order == "cheapest" and fair is None and top is None
        self.guarded: bytearray | None = guarded  # 1 where the age guard took the decode
        self.ctx = [0, *accumulate(map(_CTX, seq))]
        if top is None:
            self.w = range(len(seq) + 1)
        else:
            self.w = [0, *accumulate(1 + top - r.priority for r in seq)]

    def __len__(self) -> int:
        return len(self.seq)


def _by_cost(decodes: Sequence[Request], top: int | None, unit_ps: int, dps: int) -> list:
    if top is None:  # strict mode: equal weights, so the cost order is the context order
        return sorted(decodes, key=_CTX)
    return sorted(
        decodes, key=lambda r: (unit_ps + dps * r.computed_tokens) / (1 + top - r.priority)
    )


def _interleave(
    ranked: list[Request],
    fair: list[Request] | None,
    share: Fraction,
    kv_free: int | None,
    bs: int,
) -> tuple[list[Request], bytearray]:
    """Merge the cost order with the age order (``share`` of the picks), dropping decodes that
    need a block once ``kv_free`` blocks are spent. One pass over each list."""
    n = len(ranked)
    used: set[int] = set()  # id() of the decodes already placed or dropped
    kv_left = n if kv_free is None else kv_free
    p, q = share.numerator, share.denominator
    seq: list[Request] = []
    guarded = bytearray()
    pos = [0, 0]  # next index in ranked, in fair
    lists = (ranked, fair or [])
    while len(used) < n:
        m = len(seq)
        turn = 1 if fair and -(-(m + 1) * p // q) > -(-m * p // q) else 0
        for src in (turn, 1 - turn):  # the other list when this one is exhausted
            lst, i = lists[src], pos[src]
            while i < len(lst) and id(lst[i]) in used:
                i += 1
            pos[src] = i
            if i < len(lst):
                break
        else:
            break
        r = lst[i]
        used.add(id(r))
        if kv_free is not None and r.computed_tokens % bs == 0:
            if kv_left == 0:
                continue  # no block left for it (nor for any later one that needs one)
            kv_left -= 1
        seq.append(r)
        guarded.append(src)
    return seq, guarded


def largest_count(
    latency_of: LatencyOf, ctx: Sequence[int], k_max: int, target: int, knots: Sequence[int]
) -> int:
    """The largest ``k <= k_max`` with ``latency_of(k, ctx[k]) <= target`` (-1 if none).

    The latency is not monotone in ``k`` (the token curve has tile and wave steps), but on each
    piece between the curves' breakpoints ``knots`` it is a line plus a convex context sum: a
    bisection finds the answer among the ``k`` below the first breakpoint that busts the
    target, and each later breakpoint that meets it (a dip after a step) is followed to the end
    of its piece. A handful of curve evaluations per call.
    """

    def ok(k: int) -> bool:
        return latency_of(k, ctx[k]) <= target

    if k_max < 0 or not ok(0):
        return -1
    best = _last_ok(ok, 0, k_max)
    cuts = [x for x in knots if best < x <= k_max] + [k_max + 1]
    for a, b in pairwise(cuts):
        if ok(b - 1):
            best = b - 1
        elif ok(a):
            best = _last_ok(ok, a, b - 1)
    return best


def _last_ok(ok: Callable[[int], bool], lo: int, hi: int) -> int:
    """Largest ``k`` in ``[lo, hi]`` with ``ok(k)``, given ``ok(lo)``, treating ``ok`` as
    monotone on the range."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def fill(choice: DecodeChoice, k: int, k_max: int, latency_of: LatencyOf, target: int) -> list[int]:
    """Positions past ``k`` (the cheapest first) that still fit under the target after the
    sequence's first ``k``: where the age guard or the weights put an expensive decode next."""
    seq = choice.seq
    rest = sorted(range(k, len(seq)), key=lambda j: seq[j].computed_tokens)
    out, n, ctx = [], k, choice.ctx[k]
    for j in rest:
        if n >= k_max:
            break
        c = ctx + seq[j].computed_tokens
        if latency_of(n + 1, c) > target:
            break  # the rest have longer contexts: none fits
        out.append(j)
        n, ctx = n + 1, c
    return out


def target_swaps(choice: DecodeChoice, k: int, need: float, kv: bool, bs: int) -> list[list]:
    """Swaps that raise the context sum of the first ``k`` decodes by about ``need`` tokens
    (so that ``|L - T|`` shrinks while ``k`` stays): each is a list of ``(in, out)`` sequence
    positions. Decodes the age guard took stay in; with a KV limit only decodes that need no
    new block are swapped. Coarse swaps (shortest in for longest out) while a whole one fits,
    then the best single swap just under and just over what is left."""
    seq, guarded = choice.seq, choice.guarded

    def movable(j: int) -> bool:
        return not (kv and seq[j].computed_tokens % bs == 0)

    ins = sorted(
        (seq[j].computed_tokens, j) for j in range(k) if movable(j) and not (guarded and guarded[j])
    )
    outs = sorted((seq[j].computed_tokens, j) for j in range(k, len(seq)) if movable(j))
    coarse = []
    i, o = 0, len(outs) - 1
    while i < len(ins) and o >= 0 and 0 < outs[o][0] - ins[i][0] <= need:
        need -= outs[o][0] - ins[i][0]
        coarse.append((ins[i][1], outs[o][1]))
        i, o = i + 1, o - 1
    ins, outs = ins[i:], outs[: o + 1]
    if not ins or not outs or need <= 0:
        return [coarse] if coarse else []
    under, over = _closest_pairs(ins, outs, need)
    found = [[*coarse, pair] for pair in (under, over) if pair is not None]
    return found + ([coarse] if coarse else [])


def _closest_pairs(ins: list, outs: list, need: float) -> tuple:
    """The ``(in, out)`` pairs whose context gain is the largest ``<= need`` and the smallest
    ``> need``; a bisection per element of the shorter list."""
    best_under, best_over = (-1.0, None), (float("inf"), None)
    if len(ins) <= len(outs):
        keys = [c for c, _ in outs]
        for c_in, j_in in ins:
            pos = bisect_right(keys, c_in + need)
            for t in (pos - 1, pos):
                if 0 <= t < len(outs):
                    best_under, best_over = _keep(
                        outs[t][0] - c_in, (j_in, outs[t][1]), need, best_under, best_over
                    )
    else:
        keys = [c for c, _ in ins]
        for c_out, j_out in outs:
            pos = bisect_left(keys, c_out - need)
            for t in (pos - 1, pos):
                if 0 <= t < len(ins):
                    best_under, best_over = _keep(
                        c_out - ins[t][0], (ins[t][1], j_out), need, best_under, best_over
                    )
    return best_under[1], best_over[1]


def _keep(gain: int, pair: tuple, need: float, under: tuple, over: tuple) -> tuple:
    if 0 < gain <= need and gain > under[0]:
        under = (gain, pair)
    elif gain > need and gain < over[0]:
        over = (gain, pair)
    return under, over


Candidate = tuple[int, int, int, tuple]
"""``(decodes, context sum, weighted tokens, detail)``; detail ``("d", k)``: the first ``k`` of
the sequence, ``("D", positions)``: those positions."""


def overload_sets(
    choice: DecodeChoice,
    latency_of: LatencyOf,
    k_max: int,
    target: int,
    goodput: bool,
    knots: Sequence[int],
    kv: bool,
    bs: int,
    dps: int,
) -> list[Candidate]:
    """Decode-only candidates for an overloaded step (``k_max``: the most decodes the token
    budget allows): the longest prefix under the target; for goodput, that prefix completed
    with the cheapest decodes that still fit; for target, the prefix with swaps toward
    ``|L - T| = 0`` and one decode more (just over the target)."""
    k = largest_count(latency_of, choice.ctx, k_max, target, knots)
    out = [_prefix(choice, k)] if k >= 0 else []
    if k >= 0 and goodput and not choice.ascending:
        extra = fill(choice, k, k_max, latency_of, target)
        if extra:
            out.append(_positions(choice, [*range(k), *extra]))
    elif k >= 0 and not goodput and dps > 0:
        need = (target - latency_of(k, choice.ctx[k])) * 1000 / dps  # context tokens
        for swaps in target_swaps(choice, k, need, kv, bs):
            gone = {a for a, _ in swaps}
            out.append(
                _positions(choice, [j for j in range(k) if j not in gone] + [b for _, b in swaps])
            )
    if not goodput and k + 1 <= k_max:
        out.append(_prefix(choice, k + 1))
    return out


def _prefix(choice: DecodeChoice, k: int) -> Candidate:
    return (k, choice.ctx[k], choice.w[k], ("d", k))


def _positions(choice: DecodeChoice, positions: list[int]) -> Candidate:
    seq, w = choice.seq, choice.w
    ctx = sum(seq[j].computed_tokens for j in positions)
    wt = sum(w[j + 1] - w[j] for j in positions)
    return (len(positions), ctx, wt, ("D", positions))


def decode_ids(choice: DecodeChoice | None, detail: tuple) -> list[str]:
    """The request ids of a candidate's detail."""
    if choice is None:
        return []
    seq = choice.seq
    if detail[0] == "d":
        return [r.id for r in seq[: detail[1]]]
    return [seq[j].id for j in detail[1]]
