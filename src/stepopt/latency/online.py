"""Online refit: a latency model that corrects its coefficients from measured steps.

Every term of :class:`~stepopt.latency.model.LatencyModel` is linear in its coefficients once
the breakpoint positions are fixed: ``tokens(S)`` and ``batch(b)`` are hat-basis combinations
of their breakpoint values, the decode term is ``delta * sum C``, and a tabulated prefill
curve is ``alpha * interp(c * C) + beta * interp(c**2)``. So a refit is a weighted least-squares
problem over the observed (aggregates, latency) pairs, with the breakpoints kept, a light ridge
pull towards the current coefficients (so that breakpoints no observation touches stay put) and
relative-error weights. It runs when the rolling error passes a threshold.

The prefill term's ``linear_ns`` is kept as it is: per chunk token it is indistinguishable from
the ``tokens`` curve's slope in the observations.

Every real step has ``b >= 1``, so observations fix ``tokens(S) + batch(1)`` but not how a
constant splits between the two curves; the ridge keeps the split of the current model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from stepopt.latency.engine import NONE, EngineOverhead
from stepopt.latency.model import LatencyModel, PrefillAttention, StepAggregates
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.latency.segment import hat_basis


def _prefill_features(prefill: PrefillAttention, prefills) -> tuple[float, float]:
    """Sums over the prefills of the tabulated ``c * C`` and ``c**2`` at each chunk."""
    fa = fb = 0.0
    for c, cached, remaining in prefills:
        if c <= 0:
            continue
        top = max(remaining, 1)
        xs = np.array([0, *(g for g in prefill.grid if 0 < g < top), top], dtype=float)
        fa += float(np.interp(c, xs, xs * cached))
        fb += float(np.interp(c, xs, xs * xs))
    return fa, fb


def features(model: LatencyModel, agg: StepAggregates) -> np.ndarray:
    """Row ``phi`` with ``phi @ coefficients(model) ≈ agg.predict_ns(model)`` (up to floors)."""
    tok = hat_basis(np.array(model.tokens.xs), np.array([agg.total_tokens]))[0]
    bat = hat_basis(np.array(model.batch.xs), np.array([agg.batch_size]))[0]
    fa, fb = _prefill_features(model.prefill, agg.prefills)
    return np.concatenate([tok, bat, [agg.decode_context / 1000.0, fa, fb]])


def coefficients(model: LatencyModel) -> np.ndarray:
    """Breakpoint values of both curves, then ``decode_context_ps``, ``alpha_ns``,
    ``beta_ns``."""
    return np.array(
        [
            *model.tokens.ys,
            *model.batch.ys,
            model.decode_context_ps,
            model.prefill.alpha_ns,
            model.prefill.beta_ns,
        ],
        dtype=float,
    )


def with_coefficients(model: LatencyModel, theta: Sequence[float]) -> LatencyModel:
    """``model`` with new coefficients: integer ns breakpoints, non-negative attention terms."""
    nt, nb = len(model.tokens.xs), len(model.batch.xs)
    v = [float(t) for t in theta]
    return replace(
        model,
        tokens=PiecewiseLinear(model.tokens.xs, tuple(max(0, round(t)) for t in v[:nt])),
        batch=PiecewiseLinear(model.batch.xs, tuple(max(0, round(t)) for t in v[nt : nt + nb])),
        decode_context_ps=max(0, round(v[nt + nb])),
        prefill=replace(
            model.prefill, alpha_ns=max(0.0, v[nt + nb + 1]), beta_ns=max(0.0, v[nt + nb + 2])
        ),
    )


def refit(
    model: LatencyModel,
    observations: Sequence[tuple[StepAggregates, float]],
    ridge: float = 1e-3,
    *,
    identify_engine: bool = False,
    engine_ridge: float = 1e-6,
) -> LatencyModel:
    """Least squares on relative error over ``observations``, breakpoints kept.

    With ``identify_engine`` the engine overhead's step constant and per-request slope are
    estimated too, with a much lighter pull (``engine_ridge``, relative to the median measured
    step) than the kernel coefficients: the kernels come from GPU profiles and are trusted, what
    they miss is attributed to the engine. The per-request slope is only identified when the
    observations mix batch sizes and token counts (decode-only steps have ``S == b``).
    """
    if not observations:
        return model
    base = model.with_engine(NONE) if identify_engine else model
    a = np.array([features(base, agg) for agg, _ in observations])
    y = np.array([float(ns) for _, ns in observations])
    w = 1.0 / np.maximum(y, 1.0)
    theta0 = coefficients(base)
    # Ridge rows pull each coefficient towards its current value, relative to its size.
    scale = np.maximum(np.abs(theta0), 1e-9 + np.abs(theta0).max() * 1e-6)
    pull = np.full(theta0.size, np.sqrt(ridge))
    if identify_engine:
        b = np.array([agg.batch_size for agg, _ in observations], dtype=float)
        a = np.column_stack([a, (b >= 1).astype(float), b * (b >= 1)])
        e0 = np.array([model.engine.step_ns, model.engine.per_request_ns], dtype=float)
        theta0 = np.concatenate([theta0, e0])
        scale = np.concatenate([scale, [float(np.median(y))] * 2])
        pull = np.concatenate([pull, [np.sqrt(engine_ridge)] * 2])
    reg = np.diag(pull / scale)
    lhs = np.vstack([a * w[:, None], reg])
    rhs = np.concatenate([y * w, reg @ theta0])
    theta, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
    if not identify_engine:
        return with_coefficients(model, theta)
    step, per_request = (max(0, int(v + 0.5)) for v in theta[-2:])
    engine = EngineOverhead("refit", step_ns=step, per_request_ns=per_request)
    return with_coefficients(base, theta[:-2]).with_engine(engine)


class OnlineLatencyModel:
    """Wraps a model; refits it when the rolling error of its predictions passes a threshold.

    ``observe`` records one measured step and returns True when it triggered a refit. The
    rolling error is the mean absolute percentage error of the current model over the last
    ``window`` observations made since the last refit (at least ``min_observations``).
    """

    def __init__(
        self,
        model: LatencyModel,
        *,
        threshold_pct: float = 5.0,
        window: int = 64,
        min_observations: int = 16,
        history: int = 2048,
        ridge: float = 1e-3,
        identify_engine: bool = False,
    ):
        self.model = model
        self.threshold_pct = threshold_pct
        self.min_observations = min_observations
        self.ridge = ridge
        self.identify_engine = identify_engine
        self.refits = 0
        self._errors: deque[float] = deque(maxlen=window)
        self._history: deque[tuple[StepAggregates, float]] = deque(maxlen=history)

    @property
    def rolling_mape_pct(self) -> float:
        return float(np.mean(self._errors)) * 100.0 if self._errors else 0.0

    def predict_ns(self, agg: StepAggregates) -> int:
        return agg.predict_ns(self.model)

    def observe(self, agg: StepAggregates, measured_ns: float) -> bool:
        if measured_ns <= 0:
            raise ValueError(f"measured latency must be positive, got {measured_ns}")
        self._history.append((agg, float(measured_ns)))
        self._errors.append(abs(self.predict_ns(agg) - measured_ns) / measured_ns)
        if len(self._errors) < self.min_observations:
            return False
        if self.rolling_mape_pct <= self.threshold_pct:
            return False
        self.model = refit(
            self.model, list(self._history), self.ridge, identify_engine=self.identify_engine
        )
        self.refits += 1
        self._errors.clear()
        return True
