"""The exact least latency of one B layer at one token count: what the envelope bounds leave.

The layer bounds are within about one ns per item of the truth (each attention curve is
floor-interpolated), and the greedy split they come with may be no decision at all (an
optional chunk below ``lo``, a KV limit broken). For one layer and one token total ``S``:

1. A Lagrangian bound from exact integer values: with the slope ``lam`` of the greedy fill's
   edge at ``S``, any split costs ``lam * S + sum_i (A_i(c_i) - lam * c_i) + F_seq(b)``, so
   ``lam * S`` plus each item's least reduced cost (0 for an item left out) plus the least
   ``F_seq`` bounds it. Above the limit: the position is closed at once.
2. Otherwise every item keeps only the chunks whose reduced cost is within the slack
   (``limit`` minus that bound) of its least one: any decision at or below the limit uses
   only kept chunks. A min-plus dynamic program over the kept chunks (state: tokens so far,
   items left at 0, KV blocks where the limit can bind) gives the least latency and its
   split exactly.

So the answer is exact (never a guess); when the kept sets are too large for the program it
gives up (None) and the caller leaves the position open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from stepopt.solvers.structured_curves import _values_at
from stepopt.solvers.structured_layers import EPS, Ctx, Layer, _kv_blocks
from stepopt.solvers.structured_local import incumbent, layer_s0
from stepopt.solvers.structured_reduced import Pieces, least, pieces

MAX_CELLS = 20_000_000  # dynamic-program cell updates per position before giving up
INF = np.int64(1) << np.int64(62)
GATHER_MAX = 400_000  # options x cells gathered at once (memory); beyond, one option at a time
# One slice-minimum per option beats one gather of every option's window once an option
# covers this many cells per option (a numpy call's overhead is worth a few cells of work).
SLICE_MIN_CELLS = 4
RUN_MIN = 12  # consecutive chunks from which one strided minimum beats a slice per option


@dataclass(frozen=True)
class Exact:
    """``latency``: the least latency at the position when it is at most the limit (with the
    items' ``chunks``); None when every decision there is above the limit."""

    latency: int | None
    chunks: tuple[int, ...] | None = None


@dataclass
class _Domains:
    """Every item's non-zero chunks ``[lo, min(hi, most)]`` and their exact values, read once
    per layer."""

    cs: list[np.ndarray]
    gs: list[np.ndarray]
    s0: int  # tokens of the fixed part


def _domains(cx: Ctx, layer: Layer) -> _Domains:
    cached = getattr(layer, "_exact_domains", None)
    if cached is not None:
        return cached
    s0 = layer_s0(layer)
    most = cx.budget - s0
    cs = [np.arange(it.lo, min(it.hi, most) + 1, dtype=np.int64) for it in layer.items]
    item = np.repeat(np.arange(len(cs), dtype=np.int64), [c.size for c in cs])
    vals = _values_at(layer.items, item, np.concatenate(cs)) if item.size else item
    gs = np.split(vals, np.cumsum([c.size for c in cs])[:-1])
    out = _Domains(cs, gs, s0)
    layer._exact_domains = out  # type: ignore[attr-defined]
    return out


def exact_min(cx: Ctx, layer: Layer, pos: int, limit: int) -> Exact | None:
    """The least latency of ``layer``'s decisions at position ``pos`` (token count
    ``layer.arrays.tok[pos]``) if it is at most ``limit``; None when it cannot tell."""
    a = layer.arrays
    total = int(a.tok[pos]) - layer_s0(layer)
    fp = int(a.fixed_part[pos])
    window = layer.fseq_window
    n = len(layer.items)
    lam = _slope(layer, pos)
    m, flat = least(_pieces(cx, layer), lam, total)
    if layer.optional:
        ms = np.concatenate([[0.0], np.cumsum(np.sort(m))])
        vals = window[: n + 1] + ms
        if total > 0:
            vals[0] = np.inf
        lag, best = float(vals.min()), np.minimum(m, 0.0)
        fmin = int(window[1:].min()) if total > 0 else int(window[0])
    else:
        lag, best = float(window[n] + m.sum()), m
        fmin = int(window[n])
    low = fp + lam * total + lag
    if not np.isfinite(lag) or low - EPS > limit:
        return Exact(None)
    # A split at the integer bound is the least one; a better split than the incumbent is
    # all the program has to look for.
    inc = incumbent(cx, layer, pos, total, flat, fp, math.ceil(low - EPS))
    at = (total, fp, low, fp + lam * total + float(best.sum()) + fmin)  # the filter's bound
    if inc is not None and inc[0] <= limit:
        if inc[0] == math.ceil(low - EPS):
            return Exact(inc[0], inc[1])
        got = _deepen(cx, layer, (lam, best), at, inc[0] - 1)
        return Exact(*inc) if got is not None and got.latency is None else got
    return _deepen(cx, layer, (lam, best), at, limit)


def _pieces(cx: Ctx, layer: Layer) -> Pieces:
    got = getattr(layer, "_pieces", None)
    if got is None:
        got = layer._pieces = pieces(layer.items, cx.budget - layer_s0(layer))  # type: ignore[attr-defined]
    return got


def _deepen(cx: Ctx, layer: Layer, parts, at: tuple[int, int, float, float], limit: int):
    """The program at limits deepening from the bound ``low`` up to ``limit``: a split near
    the bound keeps the kept sets (and the program) small, and the least latency at or below
    any limit is exact."""
    total, fp, low, base = at
    window = layer.fseq_window
    # The program reads every chunk of every item.
    lam, best = parts
    dom = _domains(cx, layer)
    cs = [c[c <= total] for c in dom.cs]
    gs = [g[: c.size] for g, c in zip(dom.gs, cs, strict=True)]
    parts = (cs, gs, [g - lam * c for g, c in zip(gs, cs, strict=True)], best)
    step = 1024
    while True:
        lim = min(limit, math.ceil(low) + step)
        got = _within(cx, layer, parts, total, window, fp, lim - base + EPS)
        if got is not None and got.latency is not None and got.latency > lim:
            got = Exact(None)
        if got is None or got.latency is not None or lim >= limit:
            return got
        step *= 16


def _within(cx: Ctx, layer: Layer, parts, total: int, window, fp: int, slack: float):
    """The least latency among the splits whose reduced costs each stay within ``slack`` of
    their least one (so does every split within the limit ``slack`` stands for)."""
    cs, gs, hs, best = parts
    n = len(cs)
    keep = [h - b <= slack for h, b in zip(hs, best, strict=True)]
    choices = [(c[k], g[k]) for c, g, k in zip(cs, gs, keep, strict=True)]
    zero_ok = [layer.optional and -b <= slack for b in best]
    # Items with no kept chunk stay at 0: out of the program.
    live = [k for k in range(n) if choices[k][0].size]
    if any(not zero_ok[k] for k in range(n) if k not in live):
        return Exact(None)
    zeros = n - len(live)
    found = _program(
        cx,
        _Sub(layer, live),
        [choices[k] for k in live],
        [zero_ok[k] for k in live],
        total,
        window[n - zeros :: -1],
    )
    if found is None:
        return None
    cost, part = found
    if cost >= INF:
        return Exact(None)
    chunks = [0] * n
    for k, c in zip(live, part, strict=True):
        chunks[k] = c
    return Exact(fp + int(cost), tuple(chunks))


@dataclass
class _Sub:
    """The items of ``layer`` that enter the program."""

    reqs: list
    kv0: int

    def __init__(self, layer: Layer, live: list[int]) -> None:
        self.reqs = [layer.reqs[k] for k in live]
        self.kv0 = layer.kv0


def _slope(layer: Layer, pos: int) -> float:
    fill = layer.fill
    if fill is None or fill.slope.size == 0:
        return 0.0
    e = int(fill.edge[pos])
    return float(fill.slope[max(e, 0)])


def _program(
    cx: Ctx,
    layer: Layer | _Sub,
    choices: list[tuple[np.ndarray, np.ndarray]],
    zero_ok: list[bool],
    total: int,
    fseq_by_zeros: np.ndarray,
) -> tuple[int, tuple[int, ...]] | None:
    """Min-plus program over the kept chunks: (least ``F_seq`` + attention sum, chunks); cost
    ``INF`` when no split of ``total`` exists; None past the work cap."""
    if any(c.size == 0 and not z for (c, _), z in zip(choices, zero_ok, strict=True)):
        return INF, ()
    blocks, kv_room = _block_choices(cx, layer, choices)
    if kv_room is not None and sum(int(b.max(initial=0)) for b in blocks) <= kv_room:
        kv_room = None  # the limit cannot bind on these chunks
    # Without the KV dimension first: when its best split fits the limit it is the answer.
    free = _run(choices, zero_ok, total, fseq_by_zeros, None, 1)
    if free is None or free[0] >= INF or kv_room is None:
        return free
    used = sum(
        int(bl[np.flatnonzero(c == ck)[0]])
        for (c, _), bl, ck in zip(choices, blocks, free[1], strict=True)
        if ck
    )
    if used <= kv_room:
        return free
    return _run(choices, zero_ok, total, fseq_by_zeros, blocks, kv_room + 1)


def _run(choices, zero_ok, total, fseq_by_zeros, blocks, nb):
    """The program itself; ``blocks`` None: no KV dimension."""
    n = len(choices)
    lo_c = [0 if z else int(c.min()) for (c, _), z in zip(choices, zero_ok, strict=True)]
    hi_c = [int(c.max()) if c.size else 0 for c, _ in choices]
    if blocks is None:
        blocks = [np.zeros(c.size, dtype=np.int64) for c, _ in choices]
    nz = sum(zero_ok) + 1
    # Windows of reachable partial sums before each item.
    pre_lo = np.concatenate([[0], np.cumsum(lo_c)])
    pre_hi = np.concatenate([[0], np.cumsum(hi_c)])
    lo_w = np.maximum(pre_lo, total - (pre_hi[-1] - pre_hi))
    hi_w = np.minimum(pre_hi, total - (pre_lo[-1] - pre_lo))
    if (lo_w > hi_w).any():
        return INF, ()
    work = sum(
        (c.size + z) * nz * nb * int(hi_w[k + 1] - lo_w[k + 1] + 1)
        for k, ((c, _), z) in enumerate(zip(choices, zero_ok, strict=True))
    )
    if work > MAX_CELLS:
        return None
    cost = np.full((nz, nb, 1), INF, dtype=np.int64)
    cost[0, 0, 0] = 0
    stages = [(cost, None)]
    for k in range(n):
        c, g = choices[k]
        opts = np.stack([c, g, np.zeros_like(c), blocks[k]], axis=1)
        if zero_ok[k]:
            opts = np.concatenate([opts, np.asarray([[0, 0, 1, 0]], dtype=np.int64)])
        cost = _step(cost, opts, int(lo_w[k]), int(lo_w[k + 1]), int(hi_w[k + 1]), nb)
        stages.append((cost, opts))
    final = cost[:, :, 0] + fseq_by_zeros[:nz, None]
    z, b = np.unravel_index(int(np.argmin(final)), final.shape)
    best = int(final[z, b])
    if best >= INF:
        return INF, ()
    # Back through the stages: an option whose predecessor's value plus its own gives the
    # value reached (the values are exact integers).
    chunks = [0] * n
    t = total
    for k in range(n - 1, -1, -1):
        prev, opts = stages[k][0], stages[k + 1][1]
        want = int(stages[k + 1][0][z, b, t - int(lo_w[k + 1])])
        pz, pb, pt = z - opts[:, 2], b - opts[:, 3], t - opts[:, 0] - int(lo_w[k])
        inside = (pz >= 0) & (pb >= 0) & (pt >= 0) & (pt < prev.shape[2])
        vals = np.full(opts.shape[0], INF, dtype=np.int64)
        vals[inside] = prev[pz[inside], pb[inside], pt[inside]] + opts[inside, 1]
        j = int(np.flatnonzero(vals == want)[0])
        chunks[k] = int(opts[j, 0])
        z, b, t = int(pz[j]), int(pb[j]), t - int(opts[j, 0])
    return best, tuple(chunks)


def _step(cost: np.ndarray, opts: np.ndarray, lo_old: int, lo_new: int, hi_new: int, nb: int):
    """One item: ``new[z + dz, b + db, t + c] = min(cost[z, b, t] + g)`` over its options
    (rows ``c, g, dz, db``). Options with the same ``(dz, db)`` are gathered at once (a
    min-plus convolution over the token axis)."""
    nz, _, old_w = cost.shape
    width = hi_new - lo_new + 1
    new = np.full((nz, nb, width), INF, dtype=np.int64)
    fit = np.flatnonzero(opts[:, 3] < nb)  # more blocks than the KV limit: never
    if fit.size == 0:
        return new
    shifts = opts[fit, 2] * nb + opts[fit, 3]
    keys = [int(shifts[0])] if (shifts == shifts[0]).all() else np.unique(shifts).tolist()
    for key in keys:
        dz, db = divmod(key, nb)
        if dz >= nz:
            continue
        rows = fit[shifts == key] if len(keys) > 1 else fit
        off = (lo_new - lo_old) - opts[rows, 0]  # old index = new index + off
        dst = new[dz:, db:]
        src = cost[: nz - dz, : nb - db]
        if rows.size * dst.size > GATHER_MAX:
            _one_by_one(src, dst, off, opts[rows, 1], old_w)
            continue
        if rows.size >= RUN_MIN and (np.diff(off) == -1).all():
            _run_min(src, dst, off, opts[rows, 1], old_w)
            continue
        if dst.size >= SLICE_MIN_CELLS * rows.size:
            _one_by_one(src, dst, off, opts[rows, 1], old_w)
            continue
        pad_l = max(0, -int(off.min()))
        padded = np.full((*src.shape[:2], max(old_w + pad_l, width + int(off.max()) + pad_l)), INF)
        padded[:, :, pad_l : pad_l + old_w] = src
        # Every option reads a window of ``width`` cells: whole rows of the windows' view.
        windows = sliding_window_view(padded, width, axis=2)  # (z, b, start, width)
        got = (windows[:, :, off + pad_l] + opts[rows, 1][:, None]).min(axis=2)
        np.minimum(dst, got, out=dst)
    return new


def _run_min(src, dst, off, gains, old_w) -> None:
    """Options with consecutive chunks (``off`` falls by one per option): every new cell reads
    a run of ``m`` consecutive old cells, so one strided view of the runs (no gather) and one
    minimum cover them all."""
    m, width = off.size, dst.shape[2]
    o_min, o_max = int(off[-1]), int(off[0])
    pad_l = max(0, -o_min)
    padded = np.full((*src.shape[:2], pad_l + max(old_w, o_max + width)), INF)
    padded[:, :, pad_l : pad_l + old_w] = src
    # runs[..., s, u] = padded[s + u]; new cell i reads old i + o_min + u with gain m - 1 - u.
    s0 = pad_l + o_min
    runs = sliding_window_view(padded, m, axis=2)[:, :, s0 : s0 + width]
    np.minimum(dst, (runs + gains[::-1]).min(axis=3), out=dst)


def _one_by_one(src, dst, off, gains, old_w) -> None:
    width = dst.shape[2]
    for o, g in zip(off, gains, strict=True):
        a0, a1 = max(-int(o), 0), min(old_w - int(o), width)  # new index i reads old i + o
        if a0 < a1:
            d = dst[:, :, a0:a1]
            np.minimum(d, src[:, :, a0 + o : a1 + o] + g, out=d)


def _block_choices(cx: Ctx, layer: Layer | _Sub, choices) -> tuple[list[np.ndarray], int | None]:
    """KV blocks of every kept chunk, and the blocks left to the items (None: no limit)."""
    if cx.kv is None:
        return [np.zeros(c.size, dtype=np.int64) for c, _ in choices], None
    out = [
        _kv_blocks(np.int64(r.computed_tokens), c, cx.bs)
        for r, (c, _) in zip(layer.reqs, choices, strict=True)
    ]
    return out, int(cx.kv - layer.kv0)
