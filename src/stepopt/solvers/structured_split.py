"""Splits of a B layer's tokens near the target latency (for :mod:`structured_target`).

At a fixed position (tokens, and so ``F_tok``, fixed) the latency depends on how the free
chunks split the tokens. :func:`search` walks the token-by-token path from the cheapest split
(greedy fill of the lower envelope) to the dearest (the upper one) and reads off the point
nearest T (vectorised; each step moves the latency by one difference of two slopes), then
applies single moves (up to ``MOVE`` tokens from one chunk to another, or starting or
emptying an optional chunk) while they bring L nearer T, and last two moves whose changes add
up to exactly T - L. :func:`exact_split` enumerates every split of a position with few
chunks: an exact distance, so a proof. Latencies are the model's exact integers (the
evaluator's floor interpolation); validity covers chunk rules and KV.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stepopt.solvers.structured_curves import allocation, table
from stepopt.solvers.structured_layers import BIG, Ctx, Layer, low_fill

MOVE = 8  # tokens a pair move shifts at most
ROUNDS = 8  # pair-move rounds per position


@dataclass
class Found:
    """One concrete decision with its exact latency, batch size and tokens (``tokens`` may be
    a function that builds them: a decision with thousands of decodes is built only if it is
    the answer)."""

    dev: int
    b: int
    tok: int
    latency: int
    tokens: dict[str, int] | Callable[[], dict[str, int]]
    layer: str

    def key(self) -> tuple[int, int, int]:
        return (self.dev, -self.b, -self.tok)

    def token_map(self) -> dict[str, int]:
        return self.tokens() if callable(self.tokens) else self.tokens


class Items:
    """Per-item arrays of a B layer: exact attention (``att``, the same floor interpolation
    as :func:`stepopt.solvers.structured_curves.pwl_at`), chunk validity and KV blocks."""

    def __init__(self, cx: Ctx, ly: Layer) -> None:
        items = ly.items
        self.lo = np.asarray([it.lo for it in items], dtype=np.int64)
        self.hi = np.asarray([it.hi for it in items], dtype=np.int64)
        self.opt = np.asarray([it.optional for it in items], dtype=bool)
        self.cached = np.asarray([r.computed_tokens for r in ly.reqs], dtype=np.int64)
        self.bs = cx.bs
        self.att = table(items).values if items else None  # shared with the greedy fills
        self.static_moves: tuple | None = None  # see _moves

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


def items_of(cx: Ctx, ly: Layer) -> Items:
    """The layer's :class:`Items`, built once per solve (kept on the problem's context)."""
    cache = cx.__dict__.setdefault("split_items", {})
    if id(ly) not in cache:
        cache[id(ly)] = (ly, Items(cx, ly))  # the layer is kept so its id stays unique
    return cache[id(ly)][1]


def search(cx: Ctx, ly: Layer, s: int, high) -> Found | None:
    """A split of the position's tokens with L nearest T: the path from the cheapest split to
    the dearest, then pair moves."""
    it = items_of(cx, ly)
    x = np.asarray(allocation(ly.items, low_fill(ly), s), dtype=np.int64)
    y = np.asarray(allocation(ly.items, high, s), dtype=np.int64)
    a = ly.arrays
    const = int(a.fixed_part[s])  # F_tok + decodes + fixed prefills
    kv_left = None if cx.kv is None else cx.kv - fixed_blocks(cx, ly)
    c = _path(cx, it, ly, x, y, const, kv_left)
    if c is None and ly.optional:
        c = _started(it, int(x.sum()))
    if c is None or (kv_left is not None and int(it.blocks(np.arange(c.size), c).sum()) > kv_left):
        return None
    c = _pair_moves(cx, it, ly, c, const, kv_left)
    lat = _latency(cx, it, ly, c, const)
    b = ly.b_fixed + int((c > 0).sum())
    return Found(abs(lat - cx.target), b, int(a.tok[s]), lat, _tokens(ly, ly.reqs, c), ly.name)


def _tokens(ly: Layer, reqs, chunks) -> Callable[[], dict[str, int]]:
    """The decision's tokens, built when asked for: the fixed part holds every decode."""

    def build() -> dict[str, int]:
        tokens = dict(ly.fixed)
        tokens.update({r.id: int(v) for r, v in zip(reqs, chunks, strict=True) if v > 0})
        return tokens

    return build


def _started(it: Items, total: int) -> np.ndarray | None:
    """A valid split of ``total`` tokens over optional chunks when the envelope path has none
    (every point leaves a chunk between 0 and ``lo``): the chunks with the smallest ``lo``
    started, at ``lo``, then filled up to ``hi`` in that order."""
    order = np.argsort(it.lo, kind="stable")
    los, his = np.cumsum(it.lo[order]), np.cumsum(it.hi[order])
    m = int(np.searchsorted(his, total, side="left"))  # fewest chunks that can hold it
    if m >= order.size or los[m] > total:
        return None
    c = np.zeros(it.lo.size, dtype=np.int64)
    take = order[: m + 1]
    c[take] = it.lo[take]
    left = total - int(c.sum())
    for i in take:
        add = min(left, int(it.hi[i] - c[i]))
        c[i] += add
        left -= add
    return c


def fixed_blocks(cx: Ctx, ly: Layer) -> int:
    """New KV blocks of the layer's fixed part: every decode (one token: a block exactly when
    its context fills its last block) and the prefills at a fixed chunk."""
    by_id = cx.problem.by_id
    out = int(cx.need.sum()) if ly.decode_pick is None else 0
    for rid, c in ly.fixed.items():
        if rid in cx.decode_tokens:
            continue
        cached = by_id[rid].computed_tokens
        out += -((-(cached + c)) // cx.bs) + ((-cached) // cx.bs)
    return out


def _latency(cx: Ctx, it: Items, ly: Layer, c: np.ndarray, const: int) -> int:
    idx = np.arange(c.size)
    b = ly.b_fixed + int((c > 0).sum())
    return const + int(cx.fseq[b]) + int(it.att(idx, c).sum())


def _side(it: Items, items: np.ndarray, start: np.ndarray, amount: np.ndarray, sign: int, t):
    """Attention, non-zero count, invalid count and KV blocks summed over the items on one
    side of the path (donors, sign -1; receivers, +1) at every step ``t``: items before the
    current one have moved all their tokens, items after it none."""
    cum = np.concatenate([[0], np.cumsum(amount)])
    k = np.minimum(np.maximum(np.searchsorted(cum, t, side="right") - 1, 0), amount.size - 1)
    c_now = start[k] + sign * (t - cum[k])
    end = start + sign * amount
    # Each function reads the starts, the ends and the moving chunks in one call.
    n = items.size
    who = np.concatenate([items, items, items[k]])
    chunk = np.concatenate([start, end, c_now])
    out = []
    for f in it.funcs():
        v = f(who, chunk).astype(np.int64)
        f_start, f_end = v[:n], v[n : 2 * n]
        moved = np.concatenate([[0], np.cumsum(f_end - f_start)])
        out.append(f_start.sum() + moved[k] + v[2 * n :] - f_start[k])
    return out


def _path(cx, it: Items, ly: Layer, x, y, const, kv_left) -> np.ndarray | None:
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


def _moves(it: Items, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate moves (receiver, donor, tokens): up to ``MOVE`` tokens between any two
    chunks; where chunks may be 0 (``B0``), also starting a chunk at ``lo..lo + MOVE`` and
    emptying one. The fixed part is built once per layer."""
    if it.static_moves is None:
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
        it.static_moves = (np.concatenate(rs), np.concatenate(ds), np.concatenate(vs), r, d)
    r_all, d_all, v_all, r, d = it.static_moves
    if not it.opt.any():
        return r_all, d_all, v_all
    return np.concatenate([r_all, r]), np.concatenate([d_all, d]), np.concatenate([v_all, c[d]])


def _move_table(cx, it: Items, ly: Layer, c: np.ndarray):
    """Every valid single move from ``c``: receiver, donor, their new chunks, the exact change
    of L, of the batch size and of the KV blocks."""
    r, d, v = _moves(it, c)
    up, down = c[r] + v, c[d] - v
    ok = (v > 0) & (it.bad(r, up) == 0) & (it.bad(d, down) == 0)
    r, d, up, down = r[ok], d[ok], up[ok], down[ok]
    # The chunks now, the receivers' and the donors' new chunks: one read each of the curves
    # and the blocks (the calls' overhead outweighs their work at these sizes).
    n, m = c.size, r.size
    who, chunk = np.concatenate([np.arange(n), r, d]), np.concatenate([c, up, down])
    att_all, blk_all = it.att(who, chunk), it.blocks(who, chunk)
    att, blk = att_all[:n], blk_all[:n]
    dnz = (up > 0).astype(np.int64) - (c[r] > 0) + (down > 0) - (c[d] > 0)
    b_now = ly.b_fixed + int((c > 0).sum())
    dseq = cx.fseq[b_now + dnz] - cx.fseq[b_now]
    delta = att_all[n : n + m] - att[r] + att_all[n + m :] - att[d] + dseq
    dblk = blk_all[n : n + m] - blk[r] + blk_all[n + m :] - blk[d]
    return r, d, up, down, delta, dnz, dblk, int(blk.sum())


def _pair_moves(cx, it: Items, ly: Layer, c, const, kv_left) -> np.ndarray:
    """Greedy rounds of the single move that brings L nearest T (every candidate move at
    once), then two moves that land on T exactly if there are such; the tokens stay the
    same."""
    if c.size < 2:
        return c
    err = _latency(cx, it, ly, c, const) - cx.target
    for _ in range(ROUNDS):
        if err == 0:
            return c
        r, d, up, down, delta, _, dblk, blk = _move_table(cx, it, ly, c)
        if r.size == 0:
            return c
        score = np.abs(err + delta)
        if kv_left is not None:
            score = np.where(blk + dblk <= kv_left, score, BIG)
        k = int(np.argmin(score))
        if score[k] >= abs(err):
            break
        c = c.copy()
        c[r[k]], c[d[k]] = up[k], down[k]
        err += int(delta[k])  # the move's exact change of L
    return _two_moves(cx, it, ly, c, kv_left, err)


def _two_moves(cx, it: Items, ly: Layer, c, kv_left, err: int) -> np.ndarray:
    """Two single moves on four different chunks that keep the batch size and together
    change L by exactly T - L (``err`` is L - T now; their changes add up exactly then): a
    sorted search."""
    if err == 0 or c.size < 4:
        return c
    r, d, up, down, delta, dnz, dblk, blk = _move_table(cx, it, ly, c)
    keep = dnz == 0
    r, d, up, down, delta, dblk = r[keep], d[keep], up[keep], down[keep], delta[keep], dblk[keep]
    order = np.argsort(delta, kind="stable")
    sd = delta[order]
    want = -err - delta
    for shift in range(3):  # a few equal values in a row, for four distinct chunks
        p = np.searchsorted(sd, want) + shift
        inside = p < sd.size
        j = order[np.minimum(p, sd.size - 1)]
        hit = inside & (sd[np.minimum(p, sd.size - 1)] == want)
        hit &= (r != r[j]) & (r != d[j]) & (d != r[j]) & (d != d[j])
        if kv_left is not None:
            hit &= blk + dblk + dblk[j] <= kv_left
        if hit.any():
            i = int(np.flatnonzero(hit)[0])
            k = int(j[i])
            c = c.copy()
            c[r[i]], c[d[i]], c[r[k]], c[d[k]] = up[i], down[i], up[k], down[k]
            return c
    return c


def _active(ly: Layer, total: int) -> list[int] | None:
    """The chunks that can take part in a split of ``total`` tokens (an optional chunk whose
    ``lo`` is larger stays at 0); None when a compulsory one cannot."""
    out = []
    for k, item in enumerate(ly.items):
        if item.lo <= total:
            out.append(k)
        elif not item.optional:
            return None
    return out


def split_count(cx: Ctx, ly: Layer, pos: int) -> tuple[int, int]:
    """How many splits :func:`exact_split` enumerates at ``pos`` (chunk choices of every
    active chunk but the last, which takes the rest), and how many chunks are active."""
    total = int(ly.arrays.tok[pos]) - sum(ly.fixed.values())
    act = _active(ly, total)
    if act is None:
        return 0, 0
    out = 1
    for k in act[:-1]:
        item = ly.items[k]
        out *= max(min(item.hi, total) - item.lo + 1, 0) + item.optional
    return out, len(act)


def exact_split(cx: Ctx, ly: Layer, pos: int) -> tuple[int, Found | None]:
    """Every split of the layer's tokens at ``pos`` (a few active chunks: see
    :func:`split_count`): the exact least |L - T| there (``BIG`` when no split is valid) and
    a split that attains it (most requests first). Each chunk's values are tabulated once
    over ``0..tokens``."""
    it = items_of(cx, ly)
    total = int(ly.arrays.tok[pos]) - sum(ly.fixed.values())
    act = _active(ly, total)
    if act is None or (not act and total > 0):
        return int(BIG), None
    span = np.arange(total + 1, dtype=np.int64)
    tabs = []
    for k in act:
        ks = np.full(span.size, k, dtype=np.int64)
        tabs.append((it.att(ks, span), it.bad(ks, span) == 0, it.blocks(ks, span)))
    axes = [np.flatnonzero(valid) for _, valid, _ in tabs[:-1]]
    grid = [g.ravel() for g in np.meshgrid(*axes, indexing="ij")] if axes else []
    rest = total - (np.sum(grid, axis=0) if grid else np.zeros(1, dtype=np.int64))
    ok = rest >= 0
    grid, rest = [g[ok] for g in grid], rest[ok]
    c = [*grid, rest] if act else []
    ok = tabs[-1][1][rest] if act else np.ones(1, dtype=bool)
    blocks = sum((tab[2][ck] for tab, ck in zip(tabs, c, strict=True)), np.zeros(1, np.int64))
    if cx.kv is not None:
        ok &= blocks <= cx.kv - fixed_blocks(cx, ly)
    c = [ck[ok] for ck in c]
    if not ok.any():
        return int(BIG), None
    nz = sum(((ck > 0).astype(np.int64) for ck in c), np.zeros(int(ok.sum()), np.int64))
    att = sum((tab[0][ck] for tab, ck in zip(tabs, c, strict=True)), np.zeros(1, np.int64))
    lat = int(ly.arrays.fixed_part[pos]) + cx.fseq[ly.b_fixed + nz] + att
    dev = np.abs(lat - cx.target)
    k = int(np.lexsort((-nz, dev))[0])
    tokens = _tokens(ly, [ly.reqs[a] for a in act], [int(ck[k]) for ck in c])
    b = ly.b_fixed + int(nz[k])
    found = Found(int(dev[k]), b, int(ly.arrays.tok[pos]), int(lat[k]), tokens, ly.name)
    return int(dev[k]), found


def fill_attention(cx: Ctx, ly: Layer, fill, s: np.ndarray) -> np.ndarray:
    """Exact summed attention of a greedy fill's allocation at the positions ``s`` (as
    :func:`stepopt.solvers.structured_curves.exact_attention`, at those positions only)."""
    it = items_of(cx, ly)
    starts = np.asarray([i.start for i in ly.items], dtype=np.int64)
    base = int(it.att(np.arange(starts.size), starts).sum())
    if fill.item.size == 0:
        return np.full(s.size, base, dtype=np.int64)
    edge, into = fill.at(s)
    e = np.maximum(edge, 0)
    c = fill.x0[e] + into
    part = it.att(fill.item[e], c) - fill.y0[e]
    return np.where(edge >= 0, base + fill.cum_val[e] + part, base)
