"""The layers of a strict-priority step and their bounds, vectorised over the tokens.

Under strict priority every feasible decision lies in one layer (see docs/structured.md):

- ``A_k``: ``k`` running decodes, nothing else;
- ``B0``: every decode plus any running prefills, each at 0 or a chunk in ``[lo, hi]``;
- ``B_j``: every decode, every running prefill at ``hi``, the first ``j`` waiting requests in
  admission order, each with a chunk in ``[lo, hi]``.

For a B layer, everything is a function of the free tokens ``s`` above the items' starting
chunks: ``lb[s]`` is a proven lower bound of the latency of every decision of the layer with
that many tokens, ``ub[s]`` a proven upper bound, and ``cand[s]`` the exact latency of one
concrete decision (the greedy fill along the lower envelope) where ``ok[s]`` says it is valid
(chunk rules, budget, KV). A layers are exact: the cheapest and dearest decode subsets of each
size come from sorts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from stepopt.model import Request, StepProblem
from stepopt.solvers.structured_curves import (
    Fill,
    ItemCurve,
    curve_table,
    exact_attention,
    greedy_fill,
    item_curve,
)

BIG = np.int64(1) << np.int64(60)  # "no decision here"
EPS = 1e-3  # float slack on envelope values (ns); the values stay far below 2**40


@dataclass
class Arrays:
    """Per-position arrays of one layer: tokens, batch size bounds, latency bounds, the
    candidate's exact latency and batch size, and its validity."""

    tok: np.ndarray
    bmin: np.ndarray
    bmax: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    cand: np.ndarray
    cand_b: np.ndarray
    ok: np.ndarray
    fixed_part: np.ndarray | None = None  # F_tok + decode and fixed prefill terms (B layers)


@dataclass
class Layer:
    name: str
    fixed: dict[str, int]  # request id -> tokens for everything that is not a free item
    items: list[ItemCurve]
    reqs: list[Request]
    arrays: Arrays
    fill: Fill | None = None  # B layers
    decode_pick: tuple | None = None  # A layers: (need-block order, free order, counts)
    optional: bool = False
    b_fixed: int = 0  # requests in the batch besides the free items
    fseq_window: np.ndarray | None = None  # F_seq(b_fixed + q), q = 0..len(items)
    kv0: int = 0  # KV blocks the fixed part takes (B layers)
    high: Fill | None = None  # the greedy fill of the upper envelope (``target`` only)
    room: np.ndarray | None = None  # a candidate layer's ``room``: ``cand``/``ok`` on demand
    fill_top: int | None = None  # a candidate layer's ``fill`` on demand (``low_fill``)


def _kv_blocks(cached: np.ndarray, c: np.ndarray, bs: int) -> np.ndarray:
    """New KV blocks of chunks ``c`` over ``cached`` tokens (0 for an empty chunk)."""
    return np.where(c > 0, -((-(cached + c)) // bs) - (-((-cached) // bs)), 0)


class Ctx:
    """Everything the layers share, computed once per problem."""

    def __init__(self, problem: StepProblem) -> None:
        cfg = problem.config
        lat = problem.latency
        self.problem = problem
        self.budget = cfg.max_num_scheduled_tokens
        self.bs = cfg.block_size
        self.kv = cfg.num_free_blocks
        self.target = problem.target_ns
        n_all = len(problem.requests)
        self.ftok = curve_table(lat.tokens, self.budget)
        self.fseq = curve_table(lat.batch, n_all)
        self.dps = lat.decode_context_ps
        self.decodes = problem.running_decodes
        self.ctx = np.asarray([r.computed_tokens for r in self.decodes], dtype=np.int64)
        self.need = (self.ctx % self.bs == 0) if self.decodes else np.zeros(0, dtype=bool)
        self.decode_const = int(self.decode_ns(np.int64(self.ctx.sum())))
        self.target_objective = problem.objective == "target"
        self.items: dict[tuple[int, int, bool], ItemCurve] = {}  # see ``_item``
        self._merged: dict[int, tuple] = {}  # see ``with_decodes``

    def decode_ns(self, ctx: np.ndarray) -> np.ndarray:
        return (self.dps * ctx) // 1000

    @cached_property
    def decode_tokens(self) -> dict[str, int]:
        """Every decode at 1 token (the B layers' fixed part; not needed when the decodes
        alone fill the budget)."""
        return {r.id: 1 for r in self.decodes}

    def with_decodes(self, fixed: dict[str, int]) -> tuple[dict[str, int], int]:
        """A B layer's fixed part (every decode, then ``fixed``) and its tokens. Layers share
        it (nothing writes to it): B0 and its candidate layers have no fixed prefill, and the
        admission layers all pass the same dict of running prefills at ``hi``."""
        if not fixed:
            return self.decode_tokens, len(self.decode_tokens)
        got = self._merged.get(id(fixed))  # the entry keeps ``fixed`` alive: its id stays
        if got is None:
            merged = {**self.decode_tokens, **fixed}
            got = self._merged[id(fixed)] = (fixed, merged, sum(merged.values()))
        return got[1], got[2]


def a_layer(cx: Ctx) -> Layer:
    """Decodes only: for every k the cheapest and dearest subsets under the KV limit."""
    n = len(cx.decodes)
    need_idx = np.flatnonzero(cx.need)
    free_idx = np.flatnonzero(~cx.need)
    need_up = need_idx[np.argsort(cx.ctx[need_idx], kind="stable")]
    free_up = free_idx[np.argsort(cx.ctx[free_idx], kind="stable")]
    k = np.arange(n + 1, dtype=np.int64)
    cap = n if cx.kv is None else cx.kv
    lo_a = np.maximum(0, k - free_up.size)
    hi_a = np.minimum(np.minimum(need_up.size, cap), k)
    feasible = (lo_a <= hi_a) & (k <= cx.budget)

    def best(
        need_sorted: np.ndarray, free_sorted: np.ndarray, sign: int
    ) -> tuple[np.ndarray, np.ndarray]:
        pn = np.concatenate([[0], np.cumsum(cx.ctx[need_sorted])])
        pf = np.concatenate([[0], np.cumsum(cx.ctx[free_sorted])])
        # Among the k first of the merged order, how many need a block; the sum over
        # ``a`` block-needing + ``k - a`` free is convex (concave) in ``a``: clamp the merge.
        merged = np.concatenate([cx.ctx[need_sorted], cx.ctx[free_sorted]])
        tag = np.concatenate([np.ones(need_sorted.size), np.zeros(free_sorted.size)])
        order = np.argsort(sign * merged, kind="stable")
        cnt = np.concatenate([[0], np.cumsum(tag[order])]).astype(np.int64)
        a = np.minimum(np.maximum(cnt, lo_a), np.maximum(hi_a, lo_a))
        a = np.minimum(a, need_sorted.size)
        b = np.minimum(np.maximum(k - a, 0), free_sorted.size)
        return pn[a] + pf[b], a

    lo_ctx, a_lo = best(need_up, free_up, 1)
    base = cx.ftok[np.minimum(k, cx.budget)] + cx.fseq[k]
    lb = np.where(feasible, base + cx.decode_ns(lo_ctx), BIG)
    if cx.target_objective:  # the dearest subsets matter to |L - T| only
        hi_ctx, a_hi = best(need_up[::-1], free_up[::-1], -1)
        ub = np.where(feasible, base + cx.decode_ns(hi_ctx), -BIG)
    else:
        ub, a_hi = np.where(feasible, BIG, -BIG), a_lo
    arrays = Arrays(k, k, k, lb, ub, lb.copy(), k, feasible)
    return Layer("A", {}, [], [], arrays, decode_pick=(need_up, free_up, a_lo, a_hi))


def first_layers(cx: Ctx) -> list[Layer]:
    """The decode layer ``A`` and, with running prefills, ``B0``; B0 is left out when the
    decodes alone fill the budget (every B layer runs every decode and more)."""
    layers = [a_layer(cx)]
    running_pre = list(cx.problem.running_prefills)
    if running_pre and len(cx.decodes) < cx.budget:
        b0 = b_layer(cx, "B0", {}, [], running_pre, optional=True)
        if b0 is not None:
            layers.append(b0)
    return layers


def b_layer(
    cx: Ctx,
    name: str,
    fixed: dict[str, int],
    fixed_reqs: list[Request],
    free: list[Request],
    optional: bool,
    bounds: bool = True,
) -> Layer | None:
    """A layer with every decode, ``fixed`` prefills at their given chunk and ``free`` items.
    ``bounds`` False: a candidate layer whose bounds are never read (``lb``/``ub`` say no
    decision), its upper-envelope fill built on demand (``structured_target._high``) and its
    ``cand``/``ok`` left unset (``ok`` False) until :func:`fill_candidates` asks for them."""
    # long: one layer's bounds (KV, tokens, latency envelope) share the layer's fixed part: read
    # top-down
    lat = cx.problem.latency
    fixed, s0 = cx.with_decodes(fixed)
    kv0 = int(cx.need.sum()) + sum(
        int(_kv_blocks(np.int64(r.computed_tokens), np.int64(fixed[r.id]), cx.bs))
        for r in fixed_reqs
    )
    if s0 > cx.budget or (cx.kv is not None and kv0 > cx.kv):
        return None
    const = cx.decode_const + sum(
        lat.prefill(fixed[r.id], r.computed_tokens, r.remaining_prompt) for r in fixed_reqs
    )
    items = [_item(cx, r, kv0, optional) for r in free]
    start = sum(it.start for it in items)
    top = cx.budget - s0 - start  # more free tokens than this break the budget
    # A candidate layer builds its fill when searched: most never are.
    low = greedy_fill(items, lower=True, top=top) if bounds or optional else None
    n = len(items)
    s = np.arange(_span(items, top) + 1 if low is None else low.span + 1, dtype=np.int64)
    tok = s0 + start + s
    # Upper bound on the free tokens from the KV capacity (chunk minimums ignored: a relaxation).
    cached = np.asarray([r.computed_tokens for r in free], dtype=np.int64)
    his = np.asarray([it.hi for it in items], dtype=np.int64)
    room = tok <= cx.budget
    if cx.kv is not None and n:
        slack = np.minimum((-cached) % cx.bs, his)
        room &= start + s <= int(slack.sum()) + (cx.kv - kv0) * cx.bs
    b_fixed = len(fixed)
    if optional and n:
        # q requests among the items: at least enough of the longest chunks to hold s tokens,
        # at most as many of the shortest minimum chunks as fit in s.
        big_first = np.concatenate([[0], np.cumsum(np.sort(his)[::-1])])
        small_first = np.concatenate([[0], np.cumsum(np.sort([it.lo for it in items]))])
        qmin = np.minimum(np.searchsorted(big_first, s, side="left"), n)
        qmax = np.searchsorted(small_first, s, side="right") - 1
        qmin = np.where(s > 0, np.maximum(qmin, 1), 0)
        # min / max of F_seq over q in [qmin, qmax] (positions with none lose their room)
        room &= qmin <= qmax
        fmin, fmax = _range_extremes(cx.fseq[b_fixed : b_fixed + n + 1], qmin, qmax)
        bmin, bmax = b_fixed + qmin, b_fixed + qmax
        cand_b = b_fixed + low.started
    else:
        bmin = bmax = cand_b = np.full(s.size, b_fixed + n, dtype=np.int64)
        fmin = fmax = np.full(s.size, cx.fseq[b_fixed + n], dtype=np.int64)
    ftok = cx.ftok[np.minimum(tok, cx.budget)]
    window = cx.fseq[b_fixed : b_fixed + n + 1]
    if not bounds:
        lay = Layer(name, fixed, items, list(free), None, low, None, optional, b_fixed, window, kv0)
        lay.fill_top = top
        lay.arrays = Arrays(
            tok,
            bmin,
            bmax,
            np.full(s.size, BIG),
            np.full(s.size, -BIG),
            np.zeros(s.size, dtype=np.int64),
            cand_b,
            np.zeros(s.size, dtype=bool),
            ftok + const,
        )
        lay.room = room
        return lay
    # Each floor-interpolated chunk cost is at most 1 ns below its envelope value.
    lb = np.ceil(low.relax - n - EPS).astype(np.int64) + ftok + fmin + const
    high = None
    if cx.target_objective:  # the upper bound matters to |L - T| only
        high = greedy_fill(items, lower=False, top=top)
        ub = np.floor(high.relax + EPS).astype(np.int64) + ftok + fmax + const
    else:
        ub = np.full(s.size, BIG)
    lb = np.where(room, lb, BIG)
    ub = np.where(room, ub, -BIG)
    if cx.target_objective or not items:
        cand, ok = _greedy_candidates(cx, items, low, free, kv0, ftok + const, cand_b, room, None)
    else:
        cand, ok = _top_candidates(cx, items, low, free, kv0, ftok + const, cand_b, room, lb)
    arrays = Arrays(tok, bmin, bmax, lb, ub, cand, cand_b, ok, ftok + const)
    layer = Layer(name, fixed, items, list(free), arrays, low, None, optional, b_fixed, window, kv0)
    layer.high = high
    return layer


def _range_extremes(window: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Least and largest ``window[lo..hi]`` per position, read off (n + 1)^2 tables (the
    window is short; an empty range reads an arbitrary value, its position has no room)."""
    n = window.size
    upper = np.triu(np.ones((n, n), dtype=bool))  # row a: the window from a on
    least = np.minimum.accumulate(np.where(upper, window, BIG), axis=1)
    most = np.maximum.accumulate(np.where(upper, window, -BIG), axis=1)
    hi = np.maximum(hi, lo)
    return least[lo, hi], most[lo, hi]


def _span(items: list[ItemCurve], top: int) -> int:
    """The free tokens a greedy fill covers (its ``relax.size - 1``): each item's edges run
    from its first breakpoint to its last."""
    total = sum(it.low_edges[-1][2] - it.low_edges[0][0] for it in items if it.low_edges)
    return max(min(total, top), 0)


def low_fill(ly: Layer) -> Fill | None:
    """The layer's lower-envelope fill, built now for a candidate layer that left it."""
    if ly.fill is None and ly.fill_top is not None:
        ly.fill = greedy_fill(ly.items, lower=True, top=ly.fill_top)
        assert ly.fill.span + 1 == ly.arrays.tok.size  # _span agrees
    return ly.fill


def fill_candidates(cx: Ctx, ly: Layer, at: np.ndarray) -> None:
    """A candidate layer's ``cand`` and ``ok`` at the positions ``at`` (as ``b_layer`` would
    give them; positions never asked for keep ``ok`` False)."""
    if ly.room is None or at.size == 0:
        return
    a = ly.arrays
    cand, ok = _greedy_candidates(
        cx, ly.items, low_fill(ly), ly.reqs, ly.kv0, a.fixed_part[at], a.cand_b[at], ly.room[at], at
    )
    a.cand[at], a.ok[at] = cand, ok


def _top_candidates(cx: Ctx, items, fill: Fill, free, kv0, fixed_part, cand_b, room, lb):
    """``goodput``: the greedy decisions only from the most tokens down to the first one within
    ``T`` (``ok`` False elsewhere). The solver reads a layer's candidates for its best one
    within ``T`` (a decision's latency is at least ``lb``, so positions with ``lb > T`` hold
    none) and settles every position with at least that many tokens exactly."""
    cand = np.zeros(lb.size, dtype=np.int64)
    ok = np.zeros(lb.size, dtype=bool)
    idx = np.flatnonzero(lb <= cx.target)
    end, step = idx.size, 64
    while end > 0:
        at = idx[max(end - step, 0) : end]
        c, o = _greedy_candidates(
            cx, items, fill, free, kv0, fixed_part[at], cand_b[at], room[at], at
        )
        cand[at], ok[at] = c, o
        if (o & (c <= cx.target)).any():
            break
        end, step = end - step, step * 4
    return cand, ok


def _greedy_candidates(cx: Ctx, items, fill: Fill, free, kv0, fixed_part, cand_b, room, at):
    """Exact latency and validity of the greedy fill's decision at every position (``at``
    only, when given; the per-position arrays passed are then taken at ``at``)."""
    att, valid = exact_attention(items, fill, at)
    cand = fixed_part + cx.fseq[np.minimum(cand_b, cx.fseq.size - 1)] + att
    ok = valid & room
    if cx.kv is not None and items:
        cached = np.asarray([r.computed_tokens for r in free], dtype=np.int64)
        ok &= kv0 + _fill_blocks(items, fill, cached, cx.bs, at) <= cx.kv
    return cand, ok


def _item(cx: Ctx, r: Request, kv0: int, optional: bool) -> ItemCurve:
    """The free item of ``r``, once per solve (the candidate layers repeat B0's requests)."""
    key = (id(r), kv0, optional)  # the object: a hand-built problem may repeat an id
    it = cx.items.get(key)
    if it is None:
        p = cx.problem
        curve = p.latency.prefill.curve(r.computed_tokens, r.remaining_prompt)
        it = item_curve(curve, p.lo(r), kv_hi(cx, r, p.lo(r), p.hi(r), kv0), optional)
        cx.items[key] = it
    return it


def kv_hi(cx: Ctx, r: Request, lo: int, hi: int, kv0: int) -> int:
    """``hi`` capped by the KV blocks left: a chunk ``c`` needs at least ``(c - slack) / bs``
    new blocks, ``slack`` the free room in the request's last block. Valid for every decision
    of the layer, so both latency bounds may use it; the cap is dropped below ``lo`` (the
    bounds then stay as loose as before rather than change the item's domain)."""
    if cx.kv is None:
        return hi
    cap = (-r.computed_tokens) % cx.bs + (cx.kv - kv0) * cx.bs
    return hi if cap < lo else min(hi, cap)


def _fill_blocks(
    items: list[ItemCurve], fill: Fill, cached: np.ndarray, bs: int, at: np.ndarray | None
) -> np.ndarray:
    """KV blocks of the free items in the greedy allocation at every ``s`` (``at`` only)."""
    starts = np.asarray([it.start for it in items], dtype=np.int64)
    base = int(_kv_blocks(cached, starts, bs).sum())
    edge, into = (fill.edge, fill.into) if at is None else fill.at(at)
    if fill.item.size == 0:
        return np.full(edge.size, base, dtype=np.int64)
    c_at = cached[fill.item]
    delta = _kv_blocks(c_at, fill.x1, bs) - _kv_blocks(c_at, fill.x0, bs)
    cum = np.concatenate([[0], np.cumsum(delta)])
    e = np.maximum(edge, 0)
    c = fill.x0[e] + into
    part = _kv_blocks(c_at[e], c, bs) - _kv_blocks(c_at[e], fill.x0[e], bs)
    return np.where(edge >= 0, base + cum[e] + part, base)
