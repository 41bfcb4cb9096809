"""The step latency, fast: one evaluator for every hot loop (heuristics, the CP-SAT hint, the
simulator, the vLLM steering).

:class:`StepLatency` wraps a :class:`~stepopt.latency.model.LatencyModel`'s public tables (its
curves, its prefill attention grid, its decode cost) into plain closures that reproduce the
model's integer arithmetic exactly, and sums the terms in one place
(:meth:`StepLatency.total`, equal to ``LatencyModel.step_ns``; the tests compare both on
generated inputs). The evaluator keeps calling the model itself, so a term added to the model
shows up as a mismatch in those tests rather than as a silent difference.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from functools import lru_cache

from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.latency.pwl import PiecewiseLinear

AttentionFn = Callable[[int, int, int], int]
"""``(chunk, cached, remaining) -> ns``, equal to ``PrefillAttention.__call__``."""


class TokenInverse:
    """``largest_at_most(y)``: the largest integer ``x`` in ``[0, max_x]`` with
    ``curve(x) <= y`` (``-1`` if there is none).

    The curve may be non-convex and non-monotone. What is inverted is its lower envelope from
    the right, ``m(x) = min(curve(s) for s in [x, max_x])``, which is non-decreasing; the largest
    ``x`` with ``m(x) <= y`` is exactly the largest ``x`` with ``curve(x) <= y``, so a dip after a
    peak is found, not hidden behind it. One bisection over the pieces (suffix minima of the
    pieces' minima, precomputed once per curve) and a closed form inside the piece.
    """

    __slots__ = ("_pieces", "_sufmin", "max_x")

    def __init__(self, curve: PiecewiseLinear, max_x: int) -> None:
        self.max_x = max_x
        pieces, mins = [], []
        for seg, a, b in curve.pieces(0, max_x):
            va, vb = seg.value(a), seg.value(b)
            pieces.append((seg.x0, seg.y0, seg.dx, seg.dy, a, b, vb))
            mins.append(min(va, vb))  # a linear piece takes its extremes at its ends
        for k in range(len(mins) - 2, -1, -1):
            mins[k] = min(mins[k], mins[k + 1])
        self._pieces = tuple(pieces)
        self._sufmin = tuple(mins)  # non-decreasing: suffix minima

    def largest_at_most(self, y: int) -> int:
        k = bisect_right(self._sufmin, y) - 1
        if k < 0:
            return -1
        x0, y0, dx, dy, a, b, vb = self._pieces[k]
        if vb <= y:
            return b
        # On this piece the value rises from <= y at a to > y at b, so dy > 0; the largest x
        # with y0 + floor(dy*(x-x0)/dx) <= y is x0 + ceil((y-y0+1)*dx/dy) - 1.
        x = x0 + ((y - y0 + 1) * dx - 1) // dy
        return min(max(x, a), b - 1)


@lru_cache(maxsize=256)
def token_inverse(curve: PiecewiseLinear, max_x: int) -> TokenInverse:
    """The (cached) inverse of ``curve`` on ``[0, max_x]``."""
    return TokenInverse(curve, max_x)


@lru_cache(maxsize=256)
def attention_fn(model: PrefillAttention) -> AttentionFn:
    """A fast ``(chunk, cached, remaining) -> ns`` equal to ``model(chunk, cached, remaining)``.

    The model's own call builds (and caches) a piecewise-linear curve per ``(cached,
    remaining)``; in an engine both change every step, so every call would miss the cache.
    This evaluates the same floor interpolation between the same two grid points directly.
    """
    if type(model) is not PrefillAttention or list(model.grid) != sorted(set(model.grid)):
        return model.__call__
    if model.is_zero:
        return _zero
    a, b, g, d = model.exact
    grid = tuple(model.grid)

    def attention(chunk: int, cached: int, remaining: int) -> int:
        if chunk == 0:
            return 0
        top = remaining if remaining > 1 else 1
        if chunk >= top:  # last piece (extended beyond ``top``)
            j = bisect_right(grid, top - 1)
            x0 = grid[j - 1] if j > 0 and grid[j - 1] > 0 else 0
            x1 = top
        else:
            i = bisect_right(grid, chunk)
            x0 = grid[i - 1] if i > 0 and grid[i - 1] > 0 else 0
            x1 = grid[i] if i < len(grid) and grid[i] < top else top
        y0 = (x0 * (a * cached + b * x0 + g)) // d
        if chunk == x0:
            return y0
        y1 = (x1 * (a * cached + b * x1 + g)) // d
        if chunk == x1:
            return y1
        return y0 + ((y1 - y0) * (chunk - x0)) // (x1 - x0)

    return attention


def _zero(chunk: int, cached: int, remaining: int) -> int:
    return 0


@lru_cache(maxsize=512)
def fast_curve(curve: PiecewiseLinear) -> Callable[[int], int]:
    """``curve(x)`` without the method-call overhead (same floor interpolation)."""
    xs, ys = curve.xs, curve.ys
    if len(xs) == 1:
        y = ys[0]
        return lambda x: y
    last = len(xs) - 2
    segs = tuple((xs[k], ys[k], ys[k + 1] - ys[k], xs[k + 1] - xs[k]) for k in range(last + 1))

    def value(x: int) -> int:
        k = bisect_right(xs, x) - 1
        if k < 0:
            k = 0
        elif k > last:
            k = last
        x0, y0, dy, dx = segs[k]
        return y0 + (dy * (x - x0)) // dx

    return value


class StepLatency:
    """``total(S, b, context, attention)``: the step latency from the batch's aggregates, with
    the fast term functions as attributes for loops that add requests one at a time."""

    __slots__ = ("_inverses", "attention", "batch", "dps", "model", "tokens")

    def __init__(self, model: LatencyModel) -> None:
        self.model = model
        self.tokens = fast_curve(model.tokens)
        self.batch = fast_curve(model.batch)
        self.attention = attention_fn(model.prefill)
        self.dps = model.decode_context_ps
        self._inverses: dict[int, TokenInverse] = {}

    def inverse(self, max_x: int) -> TokenInverse:
        """:func:`token_inverse` of the token curve, memoised per ``max_x`` here (hashing the
        curve for the shared cache costs more than a planner's whole setup of it)."""
        inv = self._inverses.get(max_x)
        if inv is None:
            inv = self._inverses[max_x] = token_inverse(self.model.tokens, max_x)
        return inv

    def decode(self, context: int) -> int:
        """Decode attention over a total of ``context`` cached tokens (``model.decode_ns``)."""
        return (self.dps * context) // 1000

    def total(self, total_tokens: int, batch_size: int, context: int, attention: int) -> int:
        """``model.step_ns(total_tokens, batch_size, context, attention)``, fast."""
        return (
            self.tokens(total_tokens)
            + self.batch(batch_size)
            + (self.dps * context) // 1000
            + attention
        )


_CACHE: dict[int, StepLatency] = {}


def step_latency(model: LatencyModel) -> StepLatency:
    """The fast evaluator of ``model``, cached per model object (a model's ``meta`` mapping
    makes it unhashable; the entry holds the model, so its id cannot be reused meanwhile)."""
    fast = _CACHE.get(id(model))
    if fast is None or fast.model is not model:
        if len(_CACHE) >= 64:
            _CACHE.clear()
        fast = _CACHE[id(model)] = StepLatency(model)
    return fast
