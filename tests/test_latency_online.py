"""Online refit: recovers known coefficients from noisy measured steps."""

from __future__ import annotations

import numpy as np
import pytest

from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.latency.online import (
    OnlineLatencyModel,
    StepAggregates,
    coefficients,
    features,
    refit,
)
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.testing.factories import decode, make_problem, prefill

TRUE = LatencyModel(
    tokens=PiecewiseLinear(
        (0, 128, 256, 1024, 4096, 16384),
        (9_000_000, 12_000_000, 18_000_000, 68_000_000, 265_000_000, 1_060_000_000),
    ),
    batch=PiecewiseLinear((0, 1, 1024), (0, 500_000, 2_500_000)),
    decode_context_ps=350_000,
    prefill=PrefillAttention(alpha_ns=2.6, beta_ns=1.3),
    name="truth",
)


def perturbed(model: LatencyModel) -> LatencyModel:
    """Same breakpoints, wrong values (what a stale preset looks like)."""
    return LatencyModel(
        tokens=PiecewiseLinear(model.tokens.xs, tuple(int(v * 0.7) for v in model.tokens.ys)),
        batch=PiecewiseLinear(model.batch.xs, tuple(v * 3 for v in model.batch.ys)),
        decode_context_ps=model.decode_context_ps // 2,
        prefill=PrefillAttention(alpha_ns=5.0, beta_ns=0.5),
        name="stale",
    )


def random_steps(n: int, seed: int) -> list[StepAggregates]:
    """Mixed steps spread log-uniformly over batch sizes and chunk sizes, so that the token
    count and the batch size vary independently (decode-only steps alone have S == b)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        decodes = int(np.exp(rng.uniform(0, np.log(512)))) - 1
        ctx = int(decodes * rng.integers(64, 4096))
        chunks = np.exp(rng.uniform(np.log(8), np.log(4096), size=int(rng.integers(0, 4))))
        prefills = tuple(
            (int(c), int(rng.integers(0, 8192)), int(c + rng.integers(0, 4096))) for c in chunks
        )
        total = decodes + sum(p[0] for p in prefills)
        if total > 0:
            out.append(StepAggregates(total, decodes + len(prefills), ctx, prefills))
    return out


def test_features_reproduce_the_model():
    theta = coefficients(TRUE)
    for agg in random_steps(200, seed=3):
        exact = agg.predict_ns(TRUE)
        # Equal up to the floors of the integer arithmetic (a few ns per term).
        assert features(TRUE, agg) @ theta == pytest.approx(exact, abs=10)


def test_aggregates_from_a_decision_match_the_model():
    problem = make_problem(running=[decode("a", 700), decode("b", 300), prefill("p", 900, 100)])
    tokens = {"a": 1, "b": 1, "p": 256}
    agg = StepAggregates.from_decision(problem, tokens)
    assert agg == StepAggregates(258, 3, 1000, ((256, 100, 800),))
    assert agg.predict_ns(problem.latency) == problem.latency.predict_ns(problem, tokens)


def test_refit_recovers_known_coefficients_from_noisy_observations():
    rng = np.random.default_rng(7)
    steps = random_steps(2000, seed=11)
    obs = [(a, a.predict_ns(TRUE) * (1 + 0.01 * rng.standard_normal())) for a in steps]
    fitted = refit(perturbed(TRUE), obs, ridge=1e-6)
    # Every step has b >= 1, so only tokens(S) + batch(1) is identifiable, not how a constant
    # splits between the two curves; the refit keeps the split closest to the current model.
    for x in (128, 256, 1024, 4096):
        got, want = fitted.tokens(x) + fitted.batch(1), TRUE.tokens(x) + TRUE.batch(1)
        assert got == pytest.approx(want, rel=0.02), x
    slope = (fitted.batch(1024) - fitted.batch(1)) / 1023
    assert slope == pytest.approx((TRUE.batch(1024) - TRUE.batch(1)) / 1023, rel=0.15)
    assert fitted.decode_context_ps == pytest.approx(TRUE.decode_context_ps, rel=0.05)
    assert fitted.prefill.alpha_ns == pytest.approx(TRUE.prefill.alpha_ns, rel=0.1)
    assert fitted.prefill.beta_ns == pytest.approx(TRUE.prefill.beta_ns, rel=0.1)
    # And it predicts fresh steps as well as the truth does, up to the noise.
    fresh = random_steps(200, seed=12)
    err = [abs(a.predict_ns(fitted) - a.predict_ns(TRUE)) / a.predict_ns(TRUE) for a in fresh]
    assert np.mean(err) < 0.01


def test_online_model_refits_only_when_the_error_passes_the_threshold():
    rng = np.random.default_rng(5)
    good = OnlineLatencyModel(TRUE, threshold_pct=5.0, min_observations=16)
    for agg in random_steps(100, seed=1):
        assert not good.observe(agg, agg.predict_ns(TRUE) * (1 + 0.01 * rng.standard_normal()))
    assert good.refits == 0 and good.model is TRUE

    online = OnlineLatencyModel(perturbed(TRUE), threshold_pct=5.0, min_observations=16)
    steps = random_steps(400, seed=2)
    triggered = [
        online.observe(a, a.predict_ns(TRUE) * (1 + 0.01 * rng.standard_normal())) for a in steps
    ]
    assert triggered.index(True) == 15  # as soon as the rolling window is full
    assert online.refits >= 1
    tail = steps[-50:]
    err = np.mean(
        [abs(online.predict_ns(a) - a.predict_ns(TRUE)) / a.predict_ns(TRUE) for a in tail]
    )
    assert err < 0.02 and online.rolling_mape_pct < 5.0
    with pytest.raises(ValueError):
        online.observe(steps[0], 0)


def test_refit_identifies_the_engine_overhead_of_a_preset():
    """Kernels from the preset, measured steps from the same kernels plus Sarathi-Serve's engine
    overhead: the refit attributes the difference to the engine (constant and per-request)."""
    from stepopt.latency.engine import ENGINES
    from stepopt.latency.presets import load_preset

    kernels = load_preset("a100/codellama-34b/tp2")
    truth = kernels.with_engine(ENGINES["sarathi-2024"])
    rng = np.random.default_rng(3)
    obs = []
    for _ in range(300):
        decodes = int(rng.integers(0, 128))
        chunks = tuple(
            (int(rng.integers(16, 1024)), int(rng.integers(0, 2048)), 2048)
            for _ in range(int(rng.integers(0 if decodes else 1, 3)))
        )
        agg = StepAggregates(
            decodes + sum(c for c, _, _ in chunks),
            decodes + len(chunks),
            decodes * int(rng.integers(64, 4096)),
            chunks,
        )
        obs.append((agg, agg.predict_ns(truth) * (1 + rng.normal(0, 0.01))))
    online = OnlineLatencyModel(kernels, identify_engine=True, min_observations=300, window=300)
    assert not any(online.observe(agg, ns) for agg, ns in obs[:-1])
    assert online.observe(*obs[-1])
    engine = online.model.engine
    want = ENGINES["sarathi-2024"]
    assert engine.step_ns == pytest.approx(want.step_ns, rel=0.1)
    assert engine.per_request_ns == pytest.approx(want.per_request_ns, rel=0.1)
    # The kernel part barely moved: the refit put the miss where it belongs.
    assert online.model.kernel_batch.ys == pytest.approx(kernels.batch.ys, rel=0.05, abs=1e5)
    errs = [abs(online.predict_ns(a) - ns) / ns for a, ns in obs]
    assert float(np.mean(errs)) < 0.02
