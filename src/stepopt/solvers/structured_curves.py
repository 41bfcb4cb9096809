"""Vectorised pieces of the structured solver: curve tables, envelopes and the greedy fill.

Every exact value here is the latency model's own integer: piecewise-linear curves are read
through their public breakpoints (``xs``, ``ys``) and evaluated with the same floor
interpolation as :class:`stepopt.latency.pwl.PiecewiseLinear`, in int64. Bounds are derived
from convex/concave envelopes of those breakpoints, so they hold for any curve shape (a
non-convex table only makes them weaker, never wrong).
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from stepopt.latency.pwl import PiecewiseLinear


def pwl_at(curve: PiecewiseLinear, x: np.ndarray) -> np.ndarray:
    """``curve(x)`` for an int64 array ``x`` (floor interpolation, end pieces extended)."""
    xs = np.asarray(curve.xs, dtype=np.int64)
    ys = np.asarray(curve.ys, dtype=np.int64)
    if xs.size == 1:
        return np.full(x.shape, ys[0], dtype=np.int64)
    k = np.minimum(np.maximum(np.searchsorted(xs, x, side="right") - 1, 0), xs.size - 2)
    x0, x1, y0, y1 = xs[k], xs[k + 1], ys[k], ys[k + 1]
    return y0 + ((y1 - y0) * (x - x0)) // (x1 - x0)


@lru_cache(maxsize=256)
def curve_table(curve: PiecewiseLinear, top: int) -> np.ndarray:
    """``curve`` at every integer ``0..top`` (read-only; cached, a preset recurs every step)."""
    out = pwl_at(curve, np.arange(top + 1, dtype=np.int64))
    out.setflags(write=False)
    return out


def _hull(xs: list[int], ys: list[int], lower: bool) -> list[int]:
    """Indices of the lower (or upper) convex hull of points sorted by x (monotone chain)."""
    sign = 1 if lower else -1
    out: list[int] = []
    for i in range(len(xs)):
        while len(out) >= 2:
            a, b = out[-2], out[-1]
            cross = (xs[b] - xs[a]) * (ys[i] - ys[a]) - (ys[b] - ys[a]) * (xs[i] - xs[a])
            if sign * cross <= 0:
                out.pop()
            else:
                break
        out.append(i)
    return out


@dataclass(frozen=True, slots=True)
class ItemCurve:
    """One free prefill: its domain, exact breakpoints and envelope edges.

    ``optional``: the chunk may also be 0 (a running prefill in the no-admission layer).
    Edges start at the smallest allowed chunk (0 when optional, else ``lo``).
    """

    lo: int
    hi: int
    optional: bool
    xs: tuple[int, ...]  # the curve's breakpoints (exact values at them)
    ys: tuple[int, ...]
    low_edges: tuple[tuple[int, int, int, int], ...]  # (x0, y0, x1, y1), convex, slope up
    high_edges: tuple[tuple[int, int, int, int], ...]  # concave, slope down
    start_value: int = 0  # the exact value at ``start`` (read once: every fill sums them)
    # The same as int64 arrays (edges as rows x0, y0, x1, y1), built once per item: the fills
    # and the exact values read them every solve.
    arrays: tuple[np.ndarray, ...] = field(default=(), compare=False, repr=False)

    @property
    def start(self) -> int:
        return 0 if self.optional else self.lo

    def value(self, c: int) -> int:
        return PiecewiseLinear(self.xs, self.ys)(c) if c else 0


@lru_cache(maxsize=16384)  # about 1 kB each; waiting requests recur from step to step
def item_curve(curve: PiecewiseLinear, lo: int, hi: int, optional: bool) -> ItemCurve:
    """Envelopes of ``curve`` over the chunks ``{0 if optional} ∪ [lo, hi]``: the curve's
    breakpoints inside ``[lo, hi]`` (their values read, not evaluated) and its values at the
    ends."""
    cxs, cys = curve.xs, curve.ys
    if hi <= lo:
        xs, ys = (lo,), (curve(lo),)
    else:
        a, b = bisect_right(cxs, lo), bisect_left(cxs, hi)  # breakpoints inside
        xs, ys = (lo, *cxs[a:b], hi), (curve(lo), *cys[a:b], curve(hi))
    start = 0 if optional or lo == 0 else ys[0]  # the value at lo
    if optional:
        xs, ys = (0, *xs), (0, *ys)
    low, high = (
        [(xs[a], ys[a], xs[b], ys[b]) for a, b in itertools.pairwise(_hull(xs, ys, lower))]
        for lower in (True, False)
    )
    chain = itertools.chain.from_iterable
    v = np.array([*cxs, *cys, *chain(low), *chain(high)], dtype=np.int64)
    v.setflags(write=False)
    n, m = len(cxs), 2 * len(cxs) + 4 * len(low)
    arrays = (v[:n], v[n : 2 * n], v[2 * n : m].reshape(-1, 4), v[m:].reshape(-1, 4))
    return ItemCurve(lo, hi, optional, cxs, cys, tuple(low), tuple(high), start, arrays)


@dataclass(frozen=True)
class Fill:
    """The greedy fill of a set of items along their envelope edges, as a function of the free
    tokens ``s = 0..span`` above the items' starting chunks.

    ``relax[s]``: the envelope minimum (lower) or maximum (upper) of the summed attention.
    ``edge[s]``: the edge being filled at ``s`` (-1 at s = 0), ``into[s]`` how far into it.
    These per-``s`` arrays are built on first use: a search reads a few positions through
    :meth:`at`.
    """

    order: np.ndarray  # edge indices in fill order
    item: np.ndarray  # item of each sorted edge
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    cum_len: np.ndarray  # tokens before each sorted edge
    cum_val: np.ndarray  # envelope value gained before each sorted edge
    slope: np.ndarray
    span: int
    base: float  # the items' starting values

    def at(self, s):
        """``edge`` and ``into`` at the positions ``s`` only."""
        edge = np.searchsorted(self.cum_len, s, side="left") - 1  # s in (cum_len[e], cum_len[e+1]]
        return edge, s - self.cum_len[np.maximum(edge, 0)]

    @cached_property
    def _per_s(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        edge, into = self.at(np.arange(self.span + 1, dtype=np.int64))
        safe = np.maximum(edge, 0)
        if self.slope.size:
            relax = self.base + np.where(
                edge >= 0, self.cum_val[safe] + self.slope[safe] * into, 0.0
            )
            seen: set[int] = set()  # an item starts at its first edge in fill order
            first = [not (i in seen or seen.add(i)) for i in self.item.tolist()]
            started = np.where(edge >= 0, np.cumsum(first)[safe], 0)
        else:
            relax = np.full(edge.size, self.base)
            started = np.zeros(edge.size, dtype=np.int64)
        return relax, edge, into, started

    # float64 per s, including the items' starting values; the edge and how far into it;
    # items with a chunk above 0 (optional items)
    relax = property(lambda self: self._per_s[0])
    edge = property(lambda self: self._per_s[1])
    into = property(lambda self: self._per_s[2])
    started = property(lambda self: self._per_s[3])


def greedy_fill(items: list[ItemCurve], lower: bool, top: int | None = None) -> Fill:
    """The fill at ``s = 0..span`` (``..top`` when given: more tokens than that are never a
    decision, e.g. beyond the budget)."""
    edges = [it.arrays[2] if lower else it.arrays[3] for it in items]
    arr = np.concatenate(edges) if edges else np.zeros((0, 4), dtype=np.int64)
    item = np.repeat(np.arange(len(edges), dtype=np.int64), [e.shape[0] for e in edges])
    x0, y0, x1, y1 = (arr[:, i] for i in range(4))
    length = x1 - x0
    slope = (y1 - y0) / np.maximum(length, 1)
    # Per item the edges already have monotone slopes; a stable sort keeps their order.
    order = np.argsort(slope if lower else -slope, kind="stable")
    item, x0, y0, x1, length, slope = (
        item[order],
        x0[order],
        y0[order],
        x1[order],
        length[order],
        slope[order],
    )
    dy = y1[order] - y0
    cum_len = np.concatenate([[0], np.cumsum(length)])
    cum_val = np.concatenate([[0], np.cumsum(dy)])
    span = int(cum_len[-1]) if top is None else max(min(int(cum_len[-1]), top), 0)
    base = float(sum(it.start_value for it in items))
    return Fill(order, item, x0, y0, x1, cum_len, cum_val, slope, span, base)


def exact_attention(
    items: list[ItemCurve], fill: Fill, at: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact summed attention of the greedy allocation at every ``s`` (at the positions
    ``at`` only, when given), and whether the allocation is a valid decision there (an
    optional item strictly between 0 and ``lo`` is not)."""
    base = sum(it.start_value for it in items)
    edge, into = (fill.edge, fill.into) if at is None else fill.at(at)
    n = edge.size
    if fill.item.size == 0:
        return np.full(n, base, dtype=np.int64), np.ones(n, dtype=bool)
    e = np.maximum(edge, 0)
    it = fill.item[e]
    c = fill.x0[e] + into
    # Every sorted edge before ``e`` is complete: its exact endpoint values are summed.
    vertex = base + fill.cum_val[e]
    partial = _values_at(items, it, c) - fill.y0[e]
    exact = np.where(edge >= 0, vertex + partial, base)
    t = table(items)
    valid = (edge < 0) | ~(t.opt[it] & (c > 0) & (c < t.lo[it]))
    return exact.astype(np.int64), valid


def _values_at(items: list[ItemCurve], item: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``A_item(c)`` for parallel arrays, reading every item's breakpoints at once."""
    return table(items).values(item, c)


class _Table:
    """Every item's breakpoints in one sorted key array, with each piece's slope at its first
    breakpoint (a one-point curve: flat)."""

    BIG = np.int64(1 << 40)

    def __init__(self, items: list[ItemCurve]) -> None:
        sizes = np.asarray([len(i.xs) for i in items], dtype=np.int64)
        first = np.cumsum(sizes) - sizes
        last = first + sizes - 1
        self.xs = np.concatenate([i.arrays[0] for i in items])
        self.ys = np.concatenate([i.arrays[1] for i in items])
        owner = np.repeat(np.arange(len(items), dtype=np.int64), sizes)
        self.keys = owner * self.BIG + self.xs
        nxt = np.minimum(np.arange(self.xs.size) + 1, last[owner])
        self.dy = self.ys[nxt] - self.ys
        self.dx = np.maximum(self.xs[nxt] - self.xs, 1)
        self.first, self.top = first, np.maximum(last - 1, first)
        self.owner = owner
        self.lo = np.asarray([i.lo for i in items], dtype=np.int64)
        self.opt = np.asarray([i.optional for i in items], dtype=bool)

    def values(self, item: np.ndarray, c: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self.keys, item * self.BIG + c, side="right") - 1
        k = np.minimum(np.maximum(k, self.first[item]), self.top[item])  # np.clip, cheaper
        val = self.ys[k] + (self.dy[k] * (c - self.xs[k])) // self.dx[k]
        return np.where(c == 0, 0, val)


_TABLES: dict[tuple[int, ...], tuple[tuple[ItemCurve, ...], _Table]] = {}


def table(items: list[ItemCurve]) -> _Table:
    """The items' table, kept for the few item lists of the current solve (the entry holds
    the items, so their ids stay theirs while it lives)."""
    key = tuple(map(id, items))
    got = _TABLES.get(key)
    if got is None:
        if len(_TABLES) >= 64:
            _TABLES.clear()
        got = _TABLES[key] = (tuple(items), _Table(items))
    return got[1]


def allocation(items: list[ItemCurve], fill: Fill, s: int) -> list[int]:
    """The chunk of every item in the greedy allocation at ``s``."""
    out = [it.start for it in items]
    edge, into = fill.at(s)
    e = int(edge)
    for k in range(e):
        out[int(fill.item[k])] = int(fill.x1[k])
    if e >= 0:
        out[int(fill.item[e])] = int(fill.x0[e] + into)
    return out
