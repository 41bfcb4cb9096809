"""Continuous piecewise-linear fits with few segments, breakpoints chosen by the fit.

Breakpoints are picked among the measured x values by dynamic programming: for ``K`` segments,
the chain of chords through (lightly smoothed) measured points with the least squared relative
error. The breakpoint values are then refitted by weighted least squares on all the points (a
continuous piecewise-linear function with fixed breakpoints is linear in its values). Curves
need not be convex: GEMM timings have a flat floor, a knee and wave steps.
"""

from __future__ import annotations

import numpy as np


def hat_basis(knots: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Interpolation weights: ``f(x) = hat_basis(knots, x) @ values`` for the piecewise-linear
    ``f`` through ``(knots, values)``, end segments extended."""
    knots = np.asarray(knots, dtype=float)
    x = np.asarray(x, dtype=float)
    out = np.zeros((x.size, knots.size))
    if knots.size == 1:
        out[:, 0] = 1.0
        return out
    k = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, knots.size - 2)
    t = (x - knots[k]) / (knots[k + 1] - knots[k])
    rows = np.arange(x.size)
    out[rows, k] = 1.0 - t
    out[rows, k + 1] = t
    return out


def weighted_lstsq(a: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``argmin sum (w * (a @ theta - y))**2``."""
    sol, *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
    return sol


def _unique_mean(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ux, inv = np.unique(x, return_inverse=True)
    sums = np.bincount(inv, weights=y)
    return ux, sums / np.bincount(inv)


def _median3(y: np.ndarray) -> np.ndarray:
    if y.size < 3:
        return y.copy()
    out = y.copy()
    out[1:-1] = np.median(np.stack([y[:-2], y[1:-1], y[2:]]), axis=0)
    return out


def chord_costs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``cost[i, j]``: squared relative error of the chord from point i to point j over the
    points strictly between them (``inf`` unless ``i < j``)."""
    n = x.size
    cost = np.full((n, n), np.inf)
    for i in range(n - 1):
        u = (x[i + 1 :] - x[i]) / y[i + 1 :]
        v = (y[i] - y[i + 1 :]) / y[i + 1 :]
        # prefix sums over the interior points k in (i, j)
        uu = np.concatenate([[0.0], np.cumsum(u * u)])
        uv = np.concatenate([[0.0], np.cumsum(u * v)])
        vv = np.concatenate([[0.0], np.cumsum(v * v)])
        js = np.arange(i + 1, n)
        m = js - i - 1  # number of interior points
        s = (y[js] - y[i]) / (x[js] - x[i])
        cost[i, js] = vv[m] + 2 * s * uv[m] + s * s * uu[m]
    return cost


def best_breakpoints(x: np.ndarray, y: np.ndarray, max_segments: int) -> list[list[int]]:
    """For K = 1..max_segments, the indices of the K+1 breakpoints (first and last point
    included) of the best chord chain; fewer when there are fewer points."""
    n = x.size
    cost = chord_costs(x, y)
    kmax = min(max_segments, n - 1)
    best = np.full((kmax + 1, n), np.inf)
    back = np.zeros((kmax + 1, n), dtype=int)
    best[0, 0] = 0.0
    for k in range(1, kmax + 1):
        total = best[k - 1][:, None] + cost
        back[k] = np.argmin(total, axis=0)
        best[k] = total[back[k], np.arange(n)]
    out = []
    for k in range(1, kmax + 1):
        if not np.isfinite(best[k, n - 1]):
            continue
        idx = [n - 1]
        for level in range(k, 0, -1):
            idx.append(int(back[level, idx[-1]]))
        out.append(idx[::-1])
    return out


def mape_pct(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - truth) / truth) * 100.0)


class PiecewiseLinearFit:
    """Few-segment continuous piecewise-linear fit minimizing relative error.

    The smallest segment count whose in-sample MAPE is within ``tol_pct`` (or within 10 % of the
    best MAPE reachable with ``max_segments``, whichever is larger) wins.
    """

    def __init__(self, max_segments: int = 8, tol_pct: float = 0.5):
        self.max_segments = max_segments
        self.tol_pct = tol_pct

    def fit(self, x, y) -> PiecewiseLinearFit:
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        if x.size == 0 or x.size != y.size:
            raise ValueError("x and y must be non-empty and of equal length")
        if np.any(y <= 0):
            raise ValueError("relative-error fit needs positive y values")
        ux, uy = _unique_mean(x, y)
        if ux.size == 1:
            self.knots_ = ux
            self.values_ = uy
        else:
            candidates = []
            for idx in best_breakpoints(ux, _median3(uy), self.max_segments):
                knots = ux[idx]
                values = weighted_lstsq(hat_basis(knots, x), y, 1.0 / y)
                candidates.append((mape_pct(hat_basis(knots, x) @ values, y), knots, values))
            best = min(c[0] for c in candidates)
            limit = max(self.tol_pct, 1.1 * best)
            _, self.knots_, self.values_ = next(c for c in candidates if c[0] <= limit)
        self.n_segments_ = max(1, self.knots_.size - 1)
        self.train_mape_pct_ = mape_pct(self.predict(x), y)
        return self

    def predict(self, x) -> np.ndarray:
        return hat_basis(self.knots_, np.atleast_1d(np.asarray(x, dtype=float))) @ self.values_

    def line_at(self, x: float, which: str) -> float:
        """Value at ``x`` of the first or last segment's line (to move an end breakpoint)."""
        k, v = self.knots_, self.values_
        if k.size == 1:
            return float(v[0])
        i = 0 if which == "first" else k.size - 2
        slope = (v[i + 1] - v[i]) / (k[i + 1] - k[i])
        return float(v[i] + slope * (x - k[i]))
