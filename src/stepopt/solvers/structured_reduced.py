"""Each free item's least reduced cost ``min_c A_i(c) - lam * c`` at one position, exactly,
from the few chunks that can attain it (the Lagrangian bound of ``structured_exact``).

On one linear piece of a curve the floor-interpolated value lies less than 1 ns below the
line through the piece's breakpoints, so the line minus 1 bounds every chunk of the piece from
below. The exact values at the ends of every piece give an upper bound ``ub`` of the least
one; only chunks whose line bound is at most ``ub + FLAT`` are read exactly. So the least
reduced cost is exact (no chunk outside can reach it) and so is the set of chunks within
``FLAT`` of it (what the incumbent moves between), at a few dozen chunks per item instead of
every chunk of its domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepopt.solvers.structured_curves import ItemCurve, table

FLAT = 1.0  # also read the chunks within this of the least reduced cost (the incumbent's)
_SLACK = 1e-6  # float margin on the line bounds (only adds chunks to read)


@dataclass(frozen=True)
class Pieces:
    """Every linear piece of every item's curve, clipped to the item's chunks ``[lo, most]``:
    its item, first breakpoint, slope (``dy / dx``) and chunk range ``[a, b]``."""

    item: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    a: np.ndarray
    b: np.ndarray
    n: int


def pieces(items: list[ItemCurve], most: int) -> Pieces:
    """The pieces of every item; the piece from breakpoint ``k`` evaluates the chunks from
    ``x_k`` (the curve's start for the first) to before the next breakpoint (onwards for the
    last), as :func:`stepopt.solvers.structured_curves.pwl_at` reads them; a one-point curve
    is one flat piece."""
    t = table(items)
    lo = np.asarray([it.lo for it in items], dtype=np.int64)[t.owner]
    top = np.minimum(np.asarray([it.hi for it in items], dtype=np.int64), most)[t.owner]
    k = np.arange(t.xs.size)
    first, last = k == t.first[t.owner], k == t.top[t.owner]
    a = np.where(first, lo, np.maximum(lo, t.xs))
    b = np.where(last, top, np.minimum(top, t.xs + t.dx - 1))
    keep = (k <= t.top[t.owner]) & (a <= b)
    cols = (t.owner, t.xs, t.ys, t.dx, t.dy, a, b)
    return Pieces(*(v[keep] for v in cols), len(items))


def least(p: Pieces, lam: float, total: int):
    """Per item the least reduced cost over its chunks up to ``total`` (inf without any), and
    the chunks within ``FLAT`` of it with their exact values (sorted by chunk)."""
    b = np.minimum(p.b, total)
    live = p.a <= b
    item, x0, y0, dx, dy, a, b = (v[live] for v in (p.item, p.x0, p.y0, p.dx, p.dy, p.a, b))
    lead = y0 - lam * x0  # the line's reduced cost at x0
    rel = dy / dx - lam  # its slope in reduced cost
    # ub: the least exact reduced cost at the pieces' ends, per item (pieces run item by item).
    ends = np.minimum(_exact(y0, x0, dx, dy, a) - lam * a, _exact(y0, x0, dx, dy, b) - lam * b)
    ub = _per_item(ends, item, p.n)
    # Chunks whose line bound reaches ub + FLAT: a sub-range of each piece.
    room = ub[item] + FLAT + _SLACK - (lead - (dx - 1) / dx)
    with np.errstate(divide="ignore", invalid="ignore"):
        reach = room / rel
    lo = np.where(rel < 0, np.maximum(a, np.ceil(x0 + reach - 1)), a)
    hi = np.where(rel > 0, np.minimum(b, np.floor(x0 + reach + 1)), b)
    hi = np.where((rel == 0) & (room < 0), a - 1, hi)
    lo, hi = lo.astype(np.int64), hi.astype(np.int64)
    cnt = np.maximum(hi - lo + 1, 0)
    k = np.repeat(np.arange(cnt.size), cnt)
    c = lo[k] + (np.arange(k.size) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    g = _exact(y0[k], x0[k], dx[k], dy[k], c)
    h = g - lam * c
    owner = item[k]
    m = _per_item(h, owner, p.n)
    near = h - m[owner] <= FLAT
    c, g, owner = c[near], g[near], owner[near]
    cuts = np.searchsorted(owner, np.arange(p.n + 1))
    flat = [(c[cuts[i] : cuts[i + 1]], g[cuts[i] : cuts[i + 1]]) for i in range(p.n)]
    return m, flat


def _per_item(v: np.ndarray, item: np.ndarray, n: int) -> np.ndarray:
    """The least of ``v`` per item (``item`` non-decreasing; inf for an item with none)."""
    out = np.full(n, np.inf)
    if v.size:
        first = np.flatnonzero(np.r_[True, item[1:] != item[:-1]])
        out[item[first]] = np.minimum.reduceat(v, first)
    return out


def _exact(y0, x0, dx, dy, c):
    return y0 + (dy * (c - x0)) // dx
