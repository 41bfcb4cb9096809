"""``target`` (least |L - T|, then most requests, then most tokens) for the structured solver.

The proof is the layers' bounds (:mod:`stepopt.solvers.structured_layers`): a position's
distance bound is ``max(0, lb - T, T - ub)`` and the least over all positions bounds |L - T|
from below. The greedy candidates sit on the lower envelope and rarely land near ``T``, so this
module searches for a decision close to ``T`` at the positions whose interval comes close to
it, in tie-break order (most requests, then most tokens):

- ``A_k`` (k decodes): the latency depends on the subset only through its summed context. The
  subsets met by sliding one element at a time from the k smallest contexts to the k largest
  have non-decreasing sums that step by one gap of the sorted contexts, so a binary search
  finds the sum nearest the one ``T`` asks for.
- ``B`` layers (tokens fixed at the position): the tokens move one at a time from the
  cheapest split (greedy fill of the lower envelope) to the dearest (the upper one); the
  latency along this path steps by one difference of two slopes, and the point nearest ``T``
  is read off vectorised. Pair moves (``u`` tokens from one chunk to another, every pair at
  once) then close the rest: with measured attention tables the slope differences are a few
  hundred ns, far finer than the tokens' step.

Every latency is the model's exact integer (the same floor interpolation as the evaluator),
and the evaluator re-judges the answer (:func:`stepopt.solvers.base.finish`). The search only
finds decisions; what is claimed comes from the bounds: OPTIMAL when |L - T| meets the bound
and no position that could tie has more requests or tokens; otherwise FEASIBLE with the bound
(``proven_within_ns``, compared with ``target_tolerance_ns`` by ``auto``), saying that the
tie-break is not proven.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepopt.model import NS_PER_MS, Decision, StepProblem
from stepopt.solvers.base import SolveResult, SolveStatus, finish
from stepopt.solvers.common import TOLERANCE_PARAM
from stepopt.solvers.structured_curves import allocation, exact_attention, greedy_fill
from stepopt.solvers.structured_layers import BIG, Ctx, Layer

NAME = "structured"
MAX_TRIES = 48  # positions searched, in tie-break order
MIN_WINDOW_NS = 1000  # positions this close to T are searched even with no tolerance
MOVE = 8  # tokens a pair move shifts at most
ROUNDS = 8  # pair-move rounds per position


@dataclass
class Found:
    """One concrete decision with its exact latency, batch size and tokens."""

    dev: int
    b: int
    tok: int
    latency: int
    tokens: dict[str, int]
    layer: str

    def key(self) -> tuple[int, int, int]:
        return (self.dev, -self.b, -self.tok)


def solve(problem: StepProblem, layers: list[Layer], started, time_limit, info) -> SolveResult:
    t = problem.target_ns
    tol = int(info.get(TOLERANCE_PARAM, 0))
    tok, bmax, cand, cand_b, ok = (
        np.concatenate([getattr(ly.arrays, a) for ly in layers])
        for a in ("tok", "bmax", "cand", "cand_b", "ok")
    )
    lb, ub = _exact_bounds(layers)
    reach = lb < BIG
    dev_lb = np.where(reach, np.maximum(np.maximum(lb - t, t - ub), 0), BIG)
    best = _greedy_best(problem, layers, tok, cand, cand_b, ok)
    if best is None and not reach.any():
        return finish(
            problem, NAME, SolveStatus.INFEASIBLE, None, started, time_limit=time_limit, params=info
        )
    bound_ns = int(dev_lb.min())
    found = _search(problem, layers, dev_lb, bmax, tok, bound_ns, tol, best)
    if found is not None and (best is None or found.key() < best.key()):
        best = found
    if best is None:
        from stepopt.solvers.structured import _refuse

        return _refuse(problem, started, time_limit, info, "no candidate decision")
    dec = Decision.of(best.tokens)
    info.update(model_latency_ns=best.latency, layer=best.layer)
    rivals = (dev_lb <= best.dev) & ((bmax > best.b) | ((bmax == best.b) & (tok > best.tok)))
    if best.dev == bound_ns and not rivals.any():
        return finish(
            problem, NAME, SolveStatus.OPTIMAL, dec, started, time_limit=time_limit, params=info
        )
    gap = best.dev - bound_ns
    msg = (
        "|L - T| proven optimal; the tie-break not proven"
        if gap == 0
        else f"|L - T| proven within {gap} ns of the optimum; the tie-break not proven"
    )
    return finish(
        problem,
        NAME,
        SolveStatus.FEASIBLE,
        dec,
        started,
        bound=bound_ns / NS_PER_MS,
        time_limit=time_limit,
        params=info,
        message=msg,
    )


def _exact_bounds(layers: list[Layer]) -> tuple[np.ndarray, np.ndarray]:
    """The layers' latency bounds, exact where a layer has one free chunk: its position fixes
    the chunk, so the candidate is the only decision there (``ok`` checks budget, chunk rules
    and KV exactly). The envelopes are loose there (a convex chunk cost under its chord)."""
    lbs, ubs = [], []
    for ly in layers:
        a = ly.arrays
        if len(ly.items) == 1 and not (a.lb >= BIG).all():
            lbs.append(np.where(a.ok, a.cand, BIG))
            ubs.append(np.where(a.ok, a.cand, -BIG))
        else:
            lbs.append(a.lb)
            ubs.append(a.ub)
    return np.concatenate(lbs), np.concatenate(ubs)


def _greedy_best(problem, layers, tok, cand, cand_b, ok) -> Found | None:
    """The best of the layers' own candidates (greedy fills and the A layer's cheapest
    subsets)."""
    if not ok.any():
        return None
    from stepopt.solvers.structured import _decision, _locate

    t = problem.target_ns
    dev = np.where(ok, np.abs(cand - t), BIG)
    idx = np.flatnonzero(ok)
    i = int(idx[np.lexsort((-tok[idx], -cand_b[idx], dev[idx]))[0]])
    layer, pos = _locate(layers, i)
    tokens = dict(_decision(problem, layer, pos).scheduled())
    return Found(int(dev[i]), int(cand_b[i]), int(tok[i]), int(cand[i]), tokens, layer.name)


def _search(problem, layers, dev_lb, bmax, tok, bound_ns, tol, best) -> Found | None:
    """Positions within the window of the bound, most requests then most tokens first; stop
    at the first decision within the tolerance of the bound."""
    goal = bound_ns + tol
    if best is not None and best.dev <= goal and tol > 0:
        return None
    window = bound_ns + max(tol, MIN_WINDOW_NS)
    cx = Ctx(problem)
    cands = _candidates(cx, layers, dev_lb, window)
    out = None
    for li, pos, d, b, s in cands:
        top = out if out is not None else best
        if top is not None and (d, -b, -s) >= top.key():
            continue  # cannot beat what is in hand
        ly = layers[li]
        a_layer = ly.decode_pick is not None
        f = _a_search(cx, ly, pos) if a_layer else _b_search(cx, ly, pos, _high(ly))
        if f is not None and (out is None or f.key() < out.key()):
            out = f
            if f.dev <= goal:
                break
    return out


def _candidates(cx, layers, dev_lb, window) -> list[tuple[int, int, int, int, int]]:
    """(layer, position, distance bound, batch size bound, tokens) to search, best first.

    Layers ``B0/m`` (``B0`` with its first ``m`` prefills started, see
    ``structured._started_prefixes``) have no bounds of their own: they take B0's at the same
    token count. B layers keep the positions where T lies near the exact latencies of their
    cheapest and dearest greedy splits (a filter on where to search, not a proof)."""
    starts = np.cumsum([0, *(ly.arrays.tok.size for ly in layers)])
    b0 = next((k for k, ly in enumerate(layers) if ly.name == "B0"), None)
    rows = []
    for li, ly in enumerate(layers):
        a = ly.arrays
        if ly.name.startswith("B0/") and b0 is not None:
            parent = layers[b0].arrays
            at = a.tok - parent.tok[0]
            inside = (at >= 0) & (at < parent.tok.size)
            dev = np.where(inside, dev_lb[starts[b0] + np.clip(at, 0, parent.tok.size - 1)], BIG)
        elif ly.decode_pick is None and not ly.items:
            continue  # nothing to split
        else:
            dev = dev_lb[starts[li] : starts[li + 1]]
        keep = dev <= window
        if ly.items and not ly.optional and keep.any():
            att, _ = exact_attention(ly.items, _high(ly))
            dear = a.fixed_part + cx.fseq[a.bmax] + att
            slack = len(ly.items) + window
            low, high = np.minimum(a.cand, dear), np.maximum(a.cand, dear)
            keep &= (low - slack <= cx.target) & (cx.target <= high + slack)
        pos = np.flatnonzero(keep)
        rows.append(np.stack([np.full(pos.size, li), pos, dev[pos], a.bmax[pos], a.tok[pos]]))
    if not rows:
        return []
    m = np.concatenate(rows, axis=1)
    order = np.lexsort((m[2], -m[4], -m[3]))[:MAX_TRIES]
    return [tuple(int(v) for v in m[:, k]) for k in order]


def _high(ly: Layer):
    """The layer's upper-envelope fill (built with the layer for ``target``)."""
    if ly.high is None:
        ly.high = greedy_fill(ly.items, lower=False)
    return ly.high


def _a_search(cx: Ctx, ly: Layer, k: int) -> Found | None:
    """``k`` decodes whose summed context puts L nearest T. Without a binding KV limit, along
    the sliding path over every decode; with one, ``a`` decodes that need a block (the
    cheapest and the dearest layer's counts) and ``k - a`` that do not, one group fixed at its
    smallest or largest members while the other slides."""
    if k == 0 or cx.dps <= 0:
        return None
    base = int(cx.ftok[min(k, cx.budget)] + cx.fseq[k])
    want = (cx.target - base) * 1000 // cx.dps  # decode_ns(want) <= T - base < decode_ns(+1)
    need_up, free_up, a_lo, a_hi = ly.decode_pick
    picks: list[np.ndarray] = []
    if cx.kv is None or need_up.size <= cx.kv:
        order = np.argsort(cx.ctx, kind="stable")
        picks = [order[p] for p in _slide(cx.ctx[order], k, want)]
    else:
        for a in {int(a_lo[k]), int(a_hi[k])}:
            if a > need_up.size or k - a > free_up.size:
                continue
            groups = ((need_up, a), (free_up, k - a))
            for (fix, m), (move, q) in (groups, groups[::-1]):
                for part in (fix[:m], fix[fix.size - m :]):
                    rest = want - int(cx.ctx[part].sum())
                    vals = cx.ctx[move]
                    picks += [np.concatenate([part, move[p]]) for p in _slide(vals, q, rest)]
    out = None
    for pick in picks:
        lat = base + int(cx.decode_ns(np.int64(cx.ctx[pick].sum())))
        tokens = {cx.decodes[int(i)].id: 1 for i in pick}
        f = Found(abs(lat - cx.target), k, k, lat, tokens, "A")
        if out is None or f.key() < out.key():
            out = f
    return out


def _slide(a: np.ndarray, k: int, want: int) -> list[np.ndarray]:
    """Index sets of ``k`` members of the sorted ``a`` whose sums bracket ``want`` (and
    ``want + 1``): the path that slides the k smallest, top member first, one step at a time
    to the k largest has non-decreasing sums."""
    n = a.size
    if k == 0 or k > n:
        return [np.zeros(0, dtype=np.int64)] if k == 0 else []
    pre = np.concatenate([[0], np.cumsum(a)])
    m = np.arange(k)  # members parked at the top
    q = k - 1 - m  # the member that slides, from index q to n - 1 - m
    top = pre[n] - pre[n - m]
    first = pre[q] + a[q] + top
    out = []
    for goal in (want, want + 1):
        st = int(np.clip(np.searchsorted(first, goal, side="right") - 1, 0, k - 1))
        qq, mm = int(q[st]), int(m[st])
        rest = pre[qq] + top[st]
        hi_p = n - 1 - mm
        p = int(np.searchsorted(a[qq : hi_p + 1], goal - rest, side="right")) + qq - 1
        for pp in {max(p, qq), min(p + 1, hi_p)}:
            out.append(np.asarray([*range(qq), pp, *range(n - mm, n)], dtype=np.int64))
    return out


class _Items:
    """Per-item arrays of a B layer: exact attention (the same floor interpolation as
    :func:`stepopt.solvers.structured_curves.pwl_at`), chunk validity and KV blocks."""

    def __init__(self, cx: Ctx, ly: Layer) -> None:
        items = ly.items
        self.lo = np.asarray([it.lo for it in items], dtype=np.int64)
        self.hi = np.asarray([it.hi for it in items], dtype=np.int64)
        self.opt = np.asarray([it.optional for it in items], dtype=bool)
        self.cached = np.asarray([r.computed_tokens for r in ly.reqs], dtype=np.int64)
        self.bs = cx.bs
        sizes = [len(it.xs) for it in items]
        self.first = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        self.last = self.first + np.asarray(sizes, dtype=np.int64) - 1
        self.xs = np.concatenate([np.asarray(it.xs, dtype=np.int64) for it in items])
        self.ys = np.concatenate([np.asarray(it.ys, dtype=np.int64) for it in items])
        self.span = np.int64(int(self.xs.max()) + 2 if self.xs.size else 2)
        owner = np.repeat(np.arange(len(items), dtype=np.int64), sizes)
        self.keys = owner * self.span + self.xs

    def att(self, i: np.ndarray, c: np.ndarray) -> np.ndarray:
        first, last = self.first[i], self.last[i]
        k = np.searchsorted(self.keys, i * self.span + np.minimum(c, self.span - 1), "right") - 1
        k = np.clip(k, first, np.maximum(last - 1, first))
        k1 = np.minimum(k + 1, last)
        dx = np.maximum(self.xs[k1] - self.xs[k], 1)
        val = self.ys[k] + ((self.ys[k1] - self.ys[k]) * (c - self.xs[k])) // dx
        return np.where(c == 0, 0, val)

    def bad(self, i: np.ndarray, c: np.ndarray) -> np.ndarray:
        zero_ok = self.opt[i] & (c == 0)
        return (~(zero_ok | ((c >= self.lo[i]) & (c <= self.hi[i])))).astype(np.int64)

    def blocks(self, i: np.ndarray, c: np.ndarray) -> np.ndarray:
        cached = self.cached[i]
        return np.where(c > 0, -((-(cached + c)) // self.bs) + ((-cached) // self.bs), 0)

    @staticmethod
    def nonzero(i: np.ndarray, c: np.ndarray) -> np.ndarray:
        return (c > 0).astype(np.int64)

    def funcs(self):
        return (self.att, self.nonzero, self.bad, self.blocks)


def _b_search(cx: Ctx, ly: Layer, s: int, high) -> Found | None:
    """A split of the position's tokens with L nearest T: the path from the cheapest split to
    the dearest, then pair moves."""
    it = _Items(cx, ly)
    x = np.asarray(allocation(ly.items, ly.fill, s), dtype=np.int64)
    y = np.asarray(allocation(ly.items, high, s), dtype=np.int64)
    a = ly.arrays
    const = int(a.fixed_part[s])  # F_tok + decodes + fixed prefills
    kv_left = None if cx.kv is None else cx.kv - _fixed_blocks(cx, ly)
    c = _path(cx, it, ly, x, y, const, kv_left)
    if c is None:
        return None
    c = _pair_moves(cx, it, ly, c, const, kv_left)
    lat = _latency(cx, it, ly, c, const)
    tokens = dict(ly.fixed)
    tokens.update({r.id: int(v) for r, v in zip(ly.reqs, c, strict=True) if v > 0})
    b = ly.b_fixed + int((c > 0).sum())
    return Found(abs(lat - cx.target), b, int(a.tok[s]), lat, tokens, ly.name)


def _fixed_blocks(cx: Ctx, ly: Layer) -> int:
    by_id = cx.problem.by_id
    out = 0
    for rid, c in ly.fixed.items():
        cached = by_id[rid].computed_tokens
        out += -((-(cached + c)) // cx.bs) + ((-cached) // cx.bs)
    return out


def _latency(cx: Ctx, it: _Items, ly: Layer, c: np.ndarray, const: int) -> int:
    idx = np.arange(c.size)
    b = ly.b_fixed + int((c > 0).sum())
    return const + int(cx.fseq[b]) + int(it.att(idx, c).sum())


def _side(it: _Items, items: np.ndarray, start: np.ndarray, amount: np.ndarray, sign: int, t):
    """Attention, non-zero count, invalid count and KV blocks summed over the items on one
    side of the path (donors, sign -1; receivers, +1) at every step ``t``: items before the
    current one have moved all their tokens, items after it none."""
    cum = np.concatenate([[0], np.cumsum(amount)])
    k = np.clip(np.searchsorted(cum, t, side="right") - 1, 0, amount.size - 1)
    c_now = start[k] + sign * (t - cum[k])
    end = start + sign * amount
    out = []
    for f in it.funcs():
        f_start = f(items, start).astype(np.int64)
        f_end = f(items, end).astype(np.int64)
        moved = np.concatenate([[0], np.cumsum(f_end - f_start)])
        out.append(f_start.sum() + moved[k] + f(items[k], c_now).astype(np.int64) - f_start[k])
    return out


def _path(cx, it: _Items, ly: Layer, x, y, const, kv_left) -> np.ndarray | None:
    """The valid split nearest T on the token-by-token path from ``x`` to ``y``."""
    donors, recv = np.flatnonzero(x > y), np.flatnonzero(y > x)
    rest = np.flatnonzero(x == y)
    if donors.size == 0:
        m = 0
        t = np.zeros(1, dtype=np.int64)
    else:
        m = int((x - y)[donors].sum())
        t = np.arange(m + 1, dtype=np.int64)
    parts = [
        [f(rest, x[rest]).astype(np.int64).sum() for f in it.funcs()],
    ]
    if m:
        parts.append(_side(it, donors, x[donors], (x - y)[donors], -1, t))
        parts.append(_side(it, recv, x[recv], (y - x)[recv], 1, t))
    att, nz, bad, blocks = (sum(p[j] for p in parts) for j in range(4))
    lat = const + cx.fseq[np.minimum(ly.b_fixed + nz, cx.fseq.size - 1)] + att
    valid = np.broadcast_to(bad == 0, t.shape)
    if kv_left is not None:
        valid = valid & (blocks <= kv_left)
    if not valid.any():
        return None
    dev = np.where(valid, np.abs(lat - cx.target), BIG)
    j = int(np.argmin(dev))
    if m == 0:
        return x.copy()
    return _point(x, y, donors, recv, j)


def _point(x, y, donors, recv, j: int) -> np.ndarray:
    """The split ``j`` tokens along the path from ``x`` to ``y``."""
    c = x.copy()
    left = j
    for i in donors:
        step = min(left, int(x[i] - y[i]))
        c[i] -= step
        left -= step
    left = j
    for i in recv:
        step = min(left, int(y[i] - x[i]))
        c[i] += step
        left -= step
    return c


def _moves(it: _Items, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate moves (receiver, donor, tokens): up to ``MOVE`` tokens between any two
    chunks; where chunks may be 0 (``B0``), also starting a chunk at ``lo..lo + MOVE`` and
    emptying one."""
    n = c.size
    r, d = (g.ravel() for g in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    keep = r != d
    r, d = r[keep], d[keep]
    u = np.arange(1, MOVE + 1, dtype=np.int64)
    rs, ds, vs = [np.repeat(r, u.size)], [np.repeat(d, u.size)], [np.tile(u, r.size)]
    if it.opt.any():
        rs.append(np.repeat(r, u.size))
        ds.append(np.repeat(d, u.size))
        vs.append(np.repeat(it.lo[r], u.size) + np.tile(u - 1, r.size))
        rs.append(r)
        ds.append(d)
        vs.append(c[d])
    return np.concatenate(rs), np.concatenate(ds), np.concatenate(vs)


def _pair_moves(cx, it: _Items, ly: Layer, c, const, kv_left) -> np.ndarray:
    """Greedy rounds of the single move that brings L nearest T (every candidate move at
    once); the tokens stay the same."""
    if c.size < 2:
        return c
    ar = np.arange(c.size)
    for _ in range(ROUNDS):
        err = _latency(cx, it, ly, c, const) - cx.target
        if err == 0:
            break
        r, d, v = _moves(it, c)
        up, down = c[r] + v, c[d] - v
        ok = (v > 0) & (it.bad(r, up) == 0) & (it.bad(d, down) == 0)
        r, d, up, down = r[ok], d[ok], up[ok], down[ok]
        if r.size == 0:
            break
        att, blk = it.att(ar, c), it.blocks(ar, c)
        nz = int((c > 0).sum())
        dnz = (up > 0).astype(np.int64) - (c[r] > 0) + (down > 0) - (c[d] > 0)
        b_now = ly.b_fixed + nz
        dseq = cx.fseq[b_now + dnz] - cx.fseq[b_now]
        delta = it.att(r, up) - att[r] + it.att(d, down) - att[d] + dseq
        score = np.abs(err + delta)
        if kv_left is not None:
            new_blk = blk.sum() + it.blocks(r, up) - blk[r] + it.blocks(d, down) - blk[d]
            score = np.where(new_blk <= kv_left, score, BIG)
        k = int(np.argmin(score))
        if score[k] >= abs(err):
            break
        c = c.copy()
        c[r[k]], c[d[k]] = up[k], down[k]
    return c
