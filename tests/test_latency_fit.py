"""The fitter on synthetic profiles with known breakpoints and coefficients."""

from __future__ import annotations

import numpy as np
import pytest

from stepopt.errors import InputError
from stepopt.latency.fit import (
    ALL_REDUCE_LAUNCH_MS,
    AttentionFit,
    LatencyFitter,
    attention_scale,
)
from stepopt.latency.profiles import GPUS, MODELS, Profile
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.latency.readers import (
    TOKENWISE_OPS,
    AllReduceSample,
    AttentionSamples,
    DecodeSample,
    MlpSample,
    PrefillSample,
)
from stepopt.latency.segment import PiecewiseLinearFit, hat_basis

# Non-convex per-layer token curve (ms): floor, a wave step at 128 -> 136, then a steeper tail.
TRUE_KNOTS = [1, 128, 136, 1024, 4096]
TRUE_MS = [0.6, 0.62, 0.82, 2.0, 8.5]
VIDUR_GRID = [1, 2, 4, *range(8, 1024, 8), *range(1024, 2048, 16), *range(2048, 4097, 32)]

# Attention truth, per layer, in ns.
FLOOR, PER_SEQ, DELTA, ALPHA, BETA = 15_000.0, 40.0, 1.3, 0.09, 0.14


def true_ms(tokens):
    return np.interp(tokens, TRUE_KNOTS, TRUE_MS)


def synthetic_attention(rng, noise=0.01) -> AttentionSamples:
    def jitter(v):
        return v * (1 + noise * rng.standard_normal())

    decode = tuple(
        DecodeSample(
            8192, 64, 8, 2, b, ctx, jitter(FLOOR + PER_SEQ * (b - 1) + DELTA * b * ctx) / 1e6
        )
        for b in (1, 2, 4, 8, 16, 32, 64, 128)
        for ctx in range(32, 4096, 256)
    )
    prefill = tuple(
        PrefillSample(8192, 64, 8, 2, c, kv, jitter(FLOOR + ALPHA * c * kv + BETA * c * c) / 1e6)
        for c in (64, 128, 256, 512, 1024, 2048)
        for kv in range(0, 4096 - c + 1, c)
    )
    return AttentionSamples(decode, prefill)


def synthetic_profile(noise=0.003, seed=0, measured=True) -> Profile:
    rng = np.random.default_rng(seed)
    n = len(TOKENWISE_OPS)
    mlp = tuple(
        MlpSample(
            64,
            8,
            8192,
            22016,
            2,
            t,
            {op: true_ms(t) / n * (1 + noise * rng.standard_normal()) for op in TOKENWISE_OPS},
        )
        for t in VIDUR_GRID
    )
    ar = tuple(AllReduceSample(2, 2, s, 0.01 + s * 4e-9) for s in range(2048, 70_000_000, 65536))
    att = synthetic_attention(rng)
    return Profile(
        GPUS["a100"], MODELS["codellama-34b"], 2, mlp, ar, att if measured else None, att, ()
    )


def test_hat_basis_reproduces_piecewise_linear():
    knots = np.array([0, 10, 30, 100])
    values = np.array([5.0, 25.0, 15.0, 80.0])
    x = np.arange(-5, 140)
    curve = PiecewiseLinear(tuple(knots), tuple(int(v) for v in values))
    assert np.allclose(hat_basis(knots, x) @ values, [curve(int(v)) for v in x], atol=1)


def test_segmentation_recovers_known_nonconvex_breakpoints():
    knots, values = [0, 100, 110, 400, 1000], [10.0, 12.0, 30.0, 40.0, 200.0]
    x = np.arange(0, 1001, 5)
    fit = PiecewiseLinearFit(max_segments=8, tol_pct=0.01).fit(x, np.interp(x, knots, values))
    assert fit.n_segments_ == 4
    assert list(fit.knots_) == knots
    assert np.allclose(fit.values_, values, rtol=1e-9)


def test_segmentation_prefers_few_segments_within_tolerance():
    x = np.arange(1, 2000, 7)
    y = 3.0 + 0.01 * x
    fit = PiecewiseLinearFit(max_segments=10, tol_pct=0.5).fit(x, y)
    assert fit.n_segments_ == 1 and fit.train_mape_pct_ < 1e-9
    assert fit.fit(x, y) is fit  # fit returns self


def test_attention_fit_recovers_coefficients():
    fit = AttentionFit().fit(synthetic_attention(np.random.default_rng(1), noise=0.002))
    assert fit.floor_ns_ == pytest.approx(FLOOR, rel=0.03)
    assert fit.delta_ns_ == pytest.approx(DELTA, rel=0.02)
    assert fit.alpha_ns_ == pytest.approx(ALPHA, rel=0.03)
    assert fit.beta_ns_ == pytest.approx(BETA, rel=0.02)
    assert fit.decode_holdout_mape_pct_ < 1 and fit.prefill_holdout_mape_pct_ < 1


def test_fitter_composes_layers_and_all_reduces():
    profile = synthetic_profile()
    fitter = LatencyFitter(max_segments=8, tol_pct=0.5)
    assert fitter.fit(profile) is fitter
    model, layers = fitter.model_, profile.model.num_layers
    # The wave step at 128 -> 136 is found.
    assert any(120 <= k <= 144 for k in model.tokens.xs)
    assert model.tokens.xs[0] == 0 and model.tokens.xs[-1] >= 16384
    assert model.batch.xs[0] == 0 and model.batch.xs[-1] >= 1024
    for t in (1, 64, 128, 200, 777, 2048, 4096):
        ar = 0.01 + t * 8192 * 2 * 4e-9 + ALL_REDUCE_LAUNCH_MS
        truth_ns = layers * (true_ms(t) + 2 * ar) * 1e6
        assert model.tokens(t) == pytest.approx(truth_ns, rel=0.02), t
    assert model.decode_context_ps == pytest.approx(DELTA * layers * 1000, rel=0.03)
    assert model.prefill.beta_ns == pytest.approx(BETA * layers, rel=0.03)
    assert model.batch(1) == pytest.approx(FLOOR * layers, rel=0.05)
    assert fitter.holdout_mape_pct_ < 1.0
    assert model.meta["attention"] == "measured"
    assert model.meta["fit_mape_pct"] == pytest.approx(fitter.holdout_mape_pct_, abs=1e-3)


def test_tp1_has_no_all_reduce_and_unmeasured_shape_is_scaled():
    base = synthetic_profile(measured=False)
    profile = Profile(
        GPUS["h100"], MODELS["llama-2-7b"], 1, base.mlp, (), None, base.reference_attention, ()
    )
    fitter = LatencyFitter(max_segments=8, tol_pct=0.5, kernel="measured").fit(profile)
    model = fitter.model_
    assert model.tokens(777) == pytest.approx(32 * true_ms(777) * 1e6, rel=0.02)
    scale = attention_scale(profile)
    # 32 KV heads per GPU vs 4; 32 query heads per GPU vs 32; datasheet A100/H100 ratios.
    assert scale["kv_bytes_ratio"] == 8 and scale["flops_ratio"] == 1
    assert scale["decode"] == pytest.approx(8 * 2039 / 3352)
    assert scale["prefill"] == pytest.approx(312 / 989)
    assert model.meta["attention"] == "scaled"
    assert model.decode_context_ps == pytest.approx(DELTA * 32 * 1000 * scale["decode"], rel=0.03)
    assert model.prefill.alpha_ns == pytest.approx(ALPHA * 32 * scale["prefill"], rel=0.04)


def test_kernel_choice_scales_prefill_attention_by_efficiency():
    """FA3 on H100 at 75 % of peak against the measured kernel's efficiency: the prefill
    coefficients shrink by their ratio; decode attention (memory-bound) does not move."""
    from stepopt.latency.fit import KERNEL_EFFICIENCY, measured_efficiency

    base = synthetic_profile(measured=False)
    profile = Profile(
        GPUS["h100"], MODELS["llama-2-7b"], 1, base.mlp, (), None, base.reference_attention, ()
    )
    fits = {
        k: LatencyFitter(max_segments=8, tol_pct=0.5, kernel=k).fit(profile)
        for k in ("measured", "fa2", "default")
    }
    eff = measured_efficiency(fits["measured"].attention_fit_)
    assert (
        fits["default"].kernel_ == "fa3"
        and fits["default"].model_.meta["attention_kernel"] == "fa3"
    )
    for k, want in (("fa2", KERNEL_EFFICIENCY["fa2"]["h100"]), ("default", 0.75)):
        m, ref = fits[k].model_, fits["measured"].model_
        assert float(m.prefill.beta_ns) == pytest.approx(
            float(ref.prefill.beta_ns) * eff / want, rel=1e-4
        )
        assert m.decode_context_ps == ref.decode_context_ps
    with pytest.raises(InputError, match="fa3 has no published efficiency on a100"):
        LatencyFitter(kernel="fa3").fit(synthetic_profile())
    with pytest.raises(InputError, match="unknown kernel"):
        LatencyFitter(kernel="fa9").fit(synthetic_profile())
