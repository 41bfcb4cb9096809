"""Piecewise-linear functions on integers with floor interpolation.

Every value is an integer (nanoseconds). Between breakpoints ``(x_k, y_k)`` and
``(x_{k+1}, y_{k+1})`` the value at integer ``x`` is
``y_k + floor((y_{k+1} - y_k) * (x - x_k) / (x_{k+1} - x_k))``; outside the breakpoints the end
segments are extended. Exact solvers encode the same floor with integer constraints, so they
reproduce these values to the nanosecond. Curves need not be convex or monotone.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Segment:
    """One linear piece ``[x0, x1]``; ``value(x)`` is its floor interpolation."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def dx(self) -> int:
        return self.x1 - self.x0

    @property
    def dy(self) -> int:
        return self.y1 - self.y0

    def value(self, x: int) -> int:
        return self.y0 + (self.dy * (x - self.x0)) // self.dx


@dataclass(frozen=True, slots=True)
class PiecewiseLinear:
    """Breakpoints ``xs`` (strictly increasing ints) and ``ys`` (ints, any shape)."""

    xs: tuple[int, ...]
    ys: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.xs) != len(self.ys):
            raise ValueError(f"breakpoints: {len(self.xs)} x values but {len(self.ys)} y values")
        if len(self.xs) < 1:
            raise ValueError("breakpoints: at least one point is needed")
        for a, b in zip(self.xs, self.xs[1:], strict=False):
            if b <= a:
                raise ValueError(f"breakpoints: x values must increase strictly, got {a} then {b}")

    @classmethod
    def constant(cls, y: int) -> PiecewiseLinear:
        return cls((0,), (int(y),))

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The linear pieces; a single-point curve is one flat piece ``[x0, x0 + 1]``."""
        if len(self.xs) == 1:
            return (Segment(self.xs[0], self.ys[0], self.xs[0] + 1, self.ys[0]),)
        return tuple(
            Segment(self.xs[k], self.ys[k], self.xs[k + 1], self.ys[k + 1])
            for k in range(len(self.xs) - 1)
        )

    def segment_index(self, x: int) -> int:
        """Index of the piece that evaluates ``x`` (end pieces extend outwards).

        A breakpoint belongs to the piece on its right, except the last one; both pieces
        give the same value there, so the choice never changes a result.
        """
        n = len(self.xs)
        if n <= 2:
            return 0
        k = bisect_right(self.xs, x) - 1
        return min(max(k, 0), n - 2)

    def __call__(self, x: int) -> int:
        xs, ys = self.xs, self.ys
        if len(xs) == 1:
            return ys[0]
        k = self.segment_index(x)
        x0, x1, y0, y1 = xs[k], xs[k + 1], ys[k], ys[k + 1]
        return y0 + ((y1 - y0) * (x - x0)) // (x1 - x0)

    def pieces(self, lo: int, hi: int) -> list[tuple[Segment, int, int]]:
        """The pieces that evaluate some integer x in ``[lo, hi]``, each with its closed
        sub-domain. Neighbouring sub-domains share their breakpoint (both pieces give the same
        value there); the end pieces extend outwards. For solver encodings."""
        segs = self.segments
        out: list[tuple[Segment, int, int]] = []
        for k, seg in enumerate(segs):
            a = lo if k == 0 else max(lo, seg.x0)
            b = hi if k == len(segs) - 1 else min(hi, seg.x1)
            if a <= b:
                out.append((seg, a, b))
        return out


def first_negative(curve: PiecewiseLinear) -> tuple[int, int, str] | None:
    """The smallest ``x >= 0`` where ``curve`` is negative, its value and why; None if none.

    Each piece that evaluates some ``x >= 0`` is checked at the start of its sub-domain and,
    if it slopes down, where its floor interpolation first drops below 0 (the last piece is
    extended without end, so a downward last piece always crosses 0).
    """
    segs = curve.segments
    for k, seg in enumerate(segs):
        a = 0 if k == 0 else max(seg.x0, 0)
        b = None if k == len(segs) - 1 else seg.x1
        if b is not None and b < 0:
            continue
        x: int | None = a if seg.value(a) < 0 else None
        if x is None and seg.dy < 0:
            # y0 + floor(dy * (x - x0) / dx) < 0  <=>  x - x0 > y0 * dx / -dy
            x = max(seg.x0 + (seg.y0 * seg.dx) // -seg.dy + 1, a)
            if b is not None and x > b:
                x = None
        if x is None:
            continue
        if x == 0 and curve.xs[0] > 0:
            why = f"the first piece is extended below its first breakpoint x={curve.xs[0]}"
        elif b is None and seg.dy < 0:
            why = f"the last piece slopes down from x={seg.x0}"
        else:
            why = "a latency cannot be negative"
        return x, curve(x), why
    return None
