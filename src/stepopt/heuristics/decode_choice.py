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
from stepopt.heuristics.candidate import StepCandidate
from stepopt.latency.model import LatencyModel
from stepopt.latency.step import step_latency
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
    mode every weight is 1, so shortest context first); ties go to the more urgent decode, then
    queue order. The age guard
    ``share`` (cheapest only) interleaves the oldest decodes by ``(priority, arrival_time)``:
    among the first ``m`` of the sequence, ``ceil(share * m)`` are taken in age order, so the
    oldest decode always comes first and long contexts cannot be skipped forever.

    With a KV limit (``kv_free`` not None), a decode whose context ends on a block boundary
    needs a new block: those past the first ``kv_free`` of them in the sequence are left out,
    so any subset of the sequence fits the free blocks.
    """

    __slots__ = ("ascending", "ctx", "dropped", "guarded", "seq", "top", "w")

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
            seq, guarded, dropped = ranked, None, []
        else:
            seq, guarded, dropped = _interleave(ranked, fair, share, kv_free, bs)
        self.seq: list[Request] = seq
        self.dropped: list[Request] = dropped  # short of a KV block
        self.top = top
        # Shortest context first throughout: no decode past a prefix is cheaper than the next.
        self.ascending = order == "cheapest" and fair is None and top is None
        self.guarded: bytearray | None = guarded  # 1 where the age guard took the decode
        self.ctx = [0, *accumulate(map(_CTX, seq))]
        if top is None:
            self.w = range(len(seq) + 1)
        else:
            self.w = [0, *accumulate(1 + top - r.priority for r in seq)]

    @classmethod
    def for_step(
        cls,
        decodes: Sequence[Request],
        order: str,
        share: Fraction,
        top: int | None,
        kv_free: int | None,
        bs: int,
        lat: LatencyModel,
        tok_curve: Callable[[int], int],
        seq_curve: Callable[[int], int],
    ) -> DecodeChoice:
        """The choice of a step; in weighted mode a decode's cost besides its context is the
        average token and batch cost of one decode when all of them run."""
        n = len(decodes)
        unit = 0
        if top is not None and order == "cheapest" and n:
            unit = max(tok_curve(n) + seq_curve(n) - tok_curve(0) - seq_curve(0), 0) * 1000 // n
        return cls(decodes, order, share, top, kv_free, bs, unit, lat.decode_context_ps)

    def __len__(self) -> int:
        return len(self.seq)

    def candidate(
        self, k: int, gone: Sequence[Request] = (), new: Sequence[Request] = ()
    ) -> tuple[int, int, int, tuple]:
        """``(count, context sum, weighted tokens, detail)`` of the first ``k`` decodes of the
        sequence without ``gone``, plus ``new``; :func:`decode_ids` lists the ids."""
        ctx = self.ctx[k] - sum(map(_CTX, gone)) + sum(map(_CTX, new))
        w = self.w[k] - self._weight(gone) + self._weight(new)
        return (k - len(gone) + len(new), ctx, w, ("S", self, k, tuple(gone), tuple(new)))

    def _weight(self, decodes: Sequence[Request]) -> int:
        top = self.top
        return len(decodes) if top is None else sum(1 + top - r.priority for r in decodes)


def decode_ids(detail: tuple) -> list[str]:
    """The request ids of a candidate's ``("S", choice, k, gone, new)`` detail."""
    _, choice, k, gone, new = detail
    head = choice.seq[:k]
    if gone:
        drop = set(map(id, gone))
        head = [r for r in head if id(r) not in drop]
    return [r.id for r in head] + [r.id for r in new]


def _by_cost(decodes: Sequence[Request], top: int | None, unit_ps: int, dps: int) -> list:
    if top is None:  # strict mode: equal weights, so the cost order is the context order
        return sorted(decodes, key=_CTX)
    # cost per unit of weight, ties to the heavier (more urgent) decode
    return sorted(
        decodes,
        key=lambda r: ((unit_ps + dps * r.computed_tokens) / (1 + top - r.priority), r.priority),
    )


def _interleave(
    ranked: list[Request],
    fair: list[Request] | None,
    share: Fraction,
    kv_free: int | None,
    bs: int,
) -> tuple[list[Request], bytearray, list[Request]]:
    """Merge the cost order with the age order (``share`` of the picks), dropping decodes that
    need a block once ``kv_free`` blocks are spent (the third list). One pass over each list."""
    n = len(ranked)
    used: set[int] = set()  # id() of the decodes already placed or dropped
    kv_left = n if kv_free is None else kv_free
    p, q = share.numerator, share.denominator
    seq: list[Request] = []
    dropped: list[Request] = []
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
                dropped.append(r)  # no block left for it (nor for any later one needing one)
                continue
            kv_left -= 1
        seq.append(r)
        guarded.append(src)
    return seq, guarded, dropped


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


def fill(
    choice: DecodeChoice, k: int, k_max: int, latency_of: LatencyOf, target: int
) -> list[Request]:
    """Decodes past the first ``k`` (shortest context first) that still fit under the target:
    where the age guard or the weights put an expensive decode next."""
    out, n, ctx = [], k, choice.ctx[k]
    for r in sorted(choice.seq[k:], key=_CTX):
        if n >= k_max:
            break
        c = ctx + r.computed_tokens
        if latency_of(n + 1, c) > target:
            break  # the rest have longer contexts: none fits
        out.append(r)
        n, ctx = n + 1, c
    return out


def target_swaps(
    choice: DecodeChoice, k: int, need: float, kv: bool, bs: int
) -> list[tuple[list[Request], list[Request]]]:
    """Swaps that raise the context sum of the first ``k`` decodes by about ``need`` tokens, so
    that ``|L - T|`` shrinks while ``k`` stays: each a pair (decodes out, decodes in). Decodes
    the age guard took stay in. With a KV limit a decode is swapped only for one with the same
    block need (so the blocks used stay the same), also for one the limit left out of the
    sequence. Coarse swaps (shortest in for longest out) while a whole one fits, then the best
    single swap just under and just over what is left."""
    seq, guarded = choice.seq, choice.guarded
    ins = (
        seq[:k] if not guarded else [r for r, g in zip(seq[:k], guarded[:k], strict=True) if not g]
    )
    outs = seq[k:] + choice.dropped
    if kv:  # two classes: decodes that need no new block, and those that do
        groups = [
            (
                [r for r in ins if r.computed_tokens % bs],
                [r for r in outs if r.computed_tokens % bs],
            ),
            (
                [r for r in ins if not r.computed_tokens % bs],
                [r for r in outs if not r.computed_tokens % bs],
            ),
        ]
    else:
        groups = [(ins, outs)]
    gone: list[Request] = []
    new: list[Request] = []
    rest = []
    for gi, go in groups:
        gi, go = sorted(gi, key=_CTX), sorted(go, key=_CTX)  # (mostly sorted already)
        ci, co = list(map(_CTX, gi)), list(map(_CTX, go))
        i, o = 0, len(co) - 1
        while i < len(ci) and o >= 0 and 0 < co[o] - ci[i] <= need:
            need -= co[o] - ci[i]
            gone.append(gi[i])
            new.append(go[o])
            i, o = i + 1, o - 1
        rest.append((gi[i:], go[: o + 1], ci[i:], co[: o + 1]))
    under: tuple = (-1.0, None)
    over: tuple = (float("inf"), None)
    for gi, go, ci, co in rest:
        if ci and co and need > 0:
            u, v = _closest_pairs(ci, co, need)
            if u[1] is not None and u[0] > under[0]:
                under = (u[0], (gi[u[1][0]], go[u[1][1]]))
            if v[1] is not None and v[0] < over[0]:
                over = (v[0], (gi[v[1][0]], go[v[1][1]]))
    found = [([*gone, pair[0]], [*new, pair[1]]) for _, pair in (under, over) if pair is not None]
    if gone:
        found.append((gone, new))
    return found


def _closest_pairs(ins: list[int], outs: list[int], need: float) -> tuple[tuple, tuple]:
    """``((gain, (i, o)), (gain, (i, o)))``: the index pairs into the sorted context lists
    whose gain ``outs[o] - ins[i]`` is the largest ``<= need`` (and positive) and the smallest
    ``> need`` (pair None if there is none); a bisection per element of the shorter list."""
    ug, up, og, op = 0, None, float("inf"), None
    if len(ins) <= len(outs):
        n = len(outs)
        for a, c in enumerate(ins):
            pos = bisect_right(outs, c + need)  # outs[pos - 1] - c <= need < outs[pos] - c
            if pos and outs[pos - 1] - c > ug:
                ug, up = outs[pos - 1] - c, (a, pos - 1)
            if pos < n and outs[pos] - c < og:
                og, op = outs[pos] - c, (a, pos)
    else:
        n = len(ins)
        for b, c in enumerate(outs):
            pos = bisect_left(ins, c - need)  # c - ins[pos] <= need < c - ins[pos - 1]
            if pos < n and c - ins[pos] > ug:
                ug, up = c - ins[pos], (pos, b)
            if pos and c - ins[pos - 1] < og:
                og, op = c - ins[pos - 1], (pos - 1, b)
    return (ug, up), (og, op)


Candidate = tuple[int, int, int, tuple]
"""``(decodes, context sum, weighted tokens, detail)``, from :meth:`DecodeChoice.candidate`."""


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
    budget allows): the longest prefix of the sequence under the target; for goodput, that
    prefix completed with the cheapest decodes that still fit; for target, the prefix with
    swaps toward ``|L - T| = 0``, and one decode more (just over the target)."""
    k = largest_count(latency_of, choice.ctx, k_max, target, knots)
    out = [choice.candidate(k)] if k >= 0 else []
    if k >= 0 and goodput and not choice.ascending:
        extra = fill(choice, k, k_max, latency_of, target)
        if extra:
            out.append(choice.candidate(k, (), extra))
    elif k >= 0 and not goodput and dps > 0:
        need = (target - latency_of(k, choice.ctx[k])) * 1000 / dps  # context tokens
        for gone, new in target_swaps(choice, k, need, kv, bs):
            out.append(choice.candidate(k, gone, new))
    if not goodput and k + 1 <= k_max:
        out.append(choice.candidate(k + 1))
    return out


def overloaded_results(
    choices: list[DecodeChoice],
    lat: LatencyModel,
    tok_curve: Callable[[int], int],
    seq_curve: Callable[[int], int],
    target: int,
    goodput: bool,
    budget_cap: int,
    kv_on: bool,
    bs: int,
) -> list[tuple]:
    """Three-stage results (decode-only sets: b = S = decodes) of an overloaded step, from
    each decode sequence (:func:`overload_sets`)."""
    step_ns = step_latency(lat).total
    dps = lat.decode_context_ps

    def latency_of(k: int, ctx: int) -> int:  # k decodes with contexts summing to ctx
        return step_ns(k, k, ctx, 0)

    knots = sorted({*lat.tokens.xs, *lat.batch.xs})
    out = []
    for ch in choices:
        k_max = min(len(ch), budget_cap)
        for n, ctx, w, detail in overload_sets(
            ch, latency_of, k_max, target, goodput, knots, kv_on, bs, dps
        ):
            out.append(StepCandidate(n, n, ctx, 0, w, 0, detail, None, n))
    return out
