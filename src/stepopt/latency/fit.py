"""Fit a :class:`~stepopt.latency.model.LatencyModel` to a Vidur profile.

Composition follows Vidur (see the data folder's README): per layer, the token-wise operators
at ``T`` tokens plus, when ``TP > 1``, two all-reduces of ``T * hidden * 2`` bytes and 0.02 ms
of launch overhead each, plus decode and prefill attention; the step is ``num_layers`` times
the per-layer sum. Mapped onto the model's terms:

- ``tokens(S)``: token-wise operators and all-reduces, a few-segment piecewise-linear curve
  (:mod:`stepopt.latency.segment`);
- ``batch(b)`` and ``decode_context_ps``: decode attention ``g(B) + delta * B * context``;
  ``g`` is the per-call floor plus a per-sequence cost, linear over the batch size;
- ``prefill``: prefill attention ``alpha * c * C + beta * c**2`` (also charged ``g(1)``).

Attention is fitted jointly on the one measured shape. Other shapes get it scaled by a roofline
argument (:func:`attention_scale`); the model's ``meta.attention`` says which.

Estimators follow scikit-learn's contract: ``fit`` returns ``self`` and fitted attributes end
in ``_``.
"""

# long: the estimators of the three terms and their composition share the fit's data and
# fitted attributes (scikit-learn style); the segment fit is already its own module

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stepopt.errors import InputError
from stepopt.latency.capacity import capacity_meta
from stepopt.latency.model import DEFAULT_GRID, LatencyModel, PrefillAttention
from stepopt.latency.profiles import (
    ATTENTION_COMMIT,
    GPUS,
    REFERENCE_ATTENTION,
    SOURCE_COMMIT,
    SOURCE_REPO,
    Profile,
)
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.latency.readers import AllReduceSample, AttentionSamples, MlpSample
from stepopt.latency.segment import PiecewiseLinearFit, mape_pct, weighted_lstsq

ALL_REDUCES_PER_LAYER = 2
ALL_REDUCE_LAUNCH_MS = 0.02
NS_PER_MS = 1_000_000


def holdout_mask(n: int, every: int, offset: int = 2) -> np.ndarray:
    """Deterministic held-out rows: every ``every``-th one (none when ``every <= 1``)."""
    mask = np.zeros(n, dtype=bool)
    if every > 1:
        mask[offset % every :: every] = True
    return mask


# --- token-wise part -------------------------------------------------------------------------


class AllReduceCurve:
    """All-reduce time (ms) as a function of bytes: linear interpolation between measured
    sizes, a least-squares line over the largest quarter of sizes beyond the last one."""

    def __init__(self, samples: Sequence[AllReduceSample]):
        sizes = np.array([s.size_bytes for s in samples], dtype=float)
        times = np.array([s.time_ms for s in samples], dtype=float)
        self.sizes, inv = np.unique(sizes, return_inverse=True)
        self.times = np.bincount(inv, weights=times) / np.bincount(inv)
        top = self.sizes >= np.quantile(self.sizes, 0.75)
        self.slope, self.intercept = np.polyfit(self.sizes[top], self.times[top], 1)

    def __call__(self, size_bytes) -> np.ndarray:
        s = np.asarray(size_bytes, dtype=float)
        inside = np.interp(s, self.sizes, self.times)
        beyond = self.intercept + self.slope * s
        return np.where(s > self.sizes[-1], np.maximum(beyond, self.times[-1]), inside)


def tokenwise_points(profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Measured ``(num_tokens, per-layer ms)`` of the token-wise part, all-reduces included."""
    return tokenwise_ms(profile.mlp, profile.all_reduce, profile.model.n_embd, profile.tp)


def tokenwise_ms(
    mlp: Sequence[MlpSample], all_reduce: Sequence[AllReduceSample], n_embd: int, tp: int
) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([s.num_tokens for s in mlp], dtype=float)
    y = np.array([s.total_ms for s in mlp], dtype=float)
    if tp > 1:
        ar = AllReduceCurve(all_reduce)
        y = y + ALL_REDUCES_PER_LAYER * (ar(x * n_embd * 2) + ALL_REDUCE_LAUNCH_MS)
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


# --- attention part ----------------------------------------------------------------------------


def _attention_arrays(samples: AttentionSamples):
    dec = samples.decode
    pre = samples.prefill
    b = np.array([s.batch_size for s in dec], dtype=float)
    ctx = np.array([s.context for s in dec], dtype=float)
    yd = np.array([s.time_ms for s in dec], dtype=float)
    c = np.array([s.chunk for s in pre], dtype=float)
    kv = np.array([s.cached for s in pre], dtype=float)
    yp = np.array([s.time_ms for s in pre], dtype=float)
    return b, ctx, yd, c, kv, yp


class AttentionFit:
    """Joint fit of decode and prefill attention (per layer, ns) on one measured shape.

    decode(B, ctx) = g(B) + delta * B * ctx
    prefill(c, kv) = g(1) + alpha * c * kv + beta * c**2 + linear * c

    ``g(B) = g1 + s * (B - 1)`` for ``B >= 1`` and ``g(0) = 0``: a per-call floor plus a
    per-sequence cost. (A free value per batch size shows no structure beyond that in the
    measured data, only noise.) The linear part follows the measured curve's c**1.6 growth
    between 128 and 1024 tokens, where a pure quadratic errs by a quarter. Least squares on
    relative error; every coefficient but ``g1`` is kept non-negative.
    """

    def __init__(self, holdout_every: int = 5):
        self.holdout_every = holdout_every

    def fit(self, samples: AttentionSamples) -> AttentionFit:
        b, ctx, yd, c, kv, yp = _attention_arrays(samples)
        if b.size == 0 or c.size == 0:
            raise InputError("attention", "needs both decode and prefill samples", show_value=False)
        self.decode_holdout_ = holdout_mask(b.size, self.holdout_every)
        self.prefill_holdout_ = holdout_mask(c.size, self.holdout_every)
        td, tp_ = ~self.decode_holdout_, ~self.prefill_holdout_
        coef = self._solve(b[td], ctx[td], yd[td] * NS_PER_MS, c[tp_], kv[tp_], yp[tp_] * NS_PER_MS)
        (
            self.floor_ns_,
            self.per_seq_ns_,
            self.delta_ns_,
            self.alpha_ns_,
            self.beta_ns_,
            self.linear_ns_,
        ) = (float(v) for v in coef)
        self.measured_max_batch_ = int(b.max())
        hd, hp = self.decode_holdout_, self.prefill_holdout_
        self.decode_holdout_mape_pct_ = mape_pct(self.predict_decode(b[hd], ctx[hd]), yd[hd] * 1e6)
        self.prefill_holdout_mape_pct_ = mape_pct(self.predict_prefill(c[hp], kv[hp]), yp[hp] * 1e6)
        fresh = hp & (kv == 0)
        self.prefill_nocache_holdout_mape_pct_ = (
            mape_pct(self.predict_prefill(c[fresh], kv[fresh]), yp[fresh] * 1e6)
            if fresh.any()
            else float("nan")
        )
        return self

    @staticmethod
    def _solve(b, ctx, yd, c, kv, yp) -> np.ndarray:
        """(g1, s, delta, alpha, beta, linear), all but g1 kept >= 0 by a tiny active set."""
        zd, zp = np.zeros_like(b), np.zeros_like(c)
        a = np.vstack(
            [
                np.column_stack([np.ones_like(b), b - 1, b * ctx, zd, zd, zd]),
                np.column_stack([np.ones_like(c), zp, zp, c * kv, c * c, c]),
            ]
        )
        y = np.concatenate([yd, yp])
        free = np.ones(a.shape[1], dtype=bool)
        while True:
            sol = np.zeros(a.shape[1])
            sol[free] = weighted_lstsq(a[:, free], y, 1.0 / y)
            neg = [j for j in range(1, a.shape[1]) if sol[j] < 0]
            if not neg:
                return sol
            free[neg] = False

    def g_ns(self, batch) -> np.ndarray:
        batch = np.asarray(batch, dtype=float)
        return np.where(batch >= 1, self.floor_ns_ + self.per_seq_ns_ * (batch - 1), 0.0)

    def predict_decode(self, batch, context) -> np.ndarray:
        batch = np.asarray(batch, dtype=float)
        return self.g_ns(batch) + self.delta_ns_ * batch * np.asarray(context, dtype=float)

    def predict_prefill(self, chunk, cached) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=float)
        cached = np.asarray(cached, dtype=float)
        g1 = self.g_ns(np.ones_like(chunk))
        return (
            g1
            + self.alpha_ns_ * chunk * cached
            + self.beta_ns_ * chunk * chunk
            + self.linear_ns_ * chunk
        )


def attention_scale(profile: Profile) -> dict[str, float]:
    """Roofline factors from the measured attention shape to ``profile``'s shape and GPU.

    Decode attention reads the KV cache: its per-context-token cost scales with KV bytes read
    per GPU (KV heads per GPU x head dim) and inversely with HBM bandwidth. Prefill attention
    is compute-bound: it scales with FLOPs per GPU (query heads per GPU x head dim) and
    inversely with tensor-core FP16 peak. The per-call/per-sequence floor ``g`` is overhead,
    not traffic: it scales with bandwidth only.
    """
    ref = REFERENCE_ATTENTION
    ref_gpu = GPUS[ref["gpu"]]
    head_dim = ref["n_embd"] // ref["n_q_head"]
    m, tp = profile.model, profile.tp
    kv_bytes = (m.n_kv_head / tp * m.head_dim) / (ref["n_kv_head"] / ref["tp"] * head_dim)
    flops = (m.n_head / tp * m.head_dim) / (ref["n_q_head"] / ref["tp"] * head_dim)
    bw = ref_gpu.mem_bw_gbps / profile.gpu.mem_bw_gbps
    peak = ref_gpu.fp16_tflops / profile.gpu.fp16_tflops
    return {
        "kv_bytes_ratio": kv_bytes,
        "flops_ratio": flops,
        "bandwidth_ratio": bw,
        "compute_ratio": peak,
        "decode": kv_bytes * bw,
        "prefill": flops * peak,
        "batch": bw,
    }


# Prefill attention kernel efficiency (fraction of the dense FP16 peak) from the kernels'
# papers; docs/latency.md cites them. FlashAttention-2 (Dao, ICLR 2024): 50-73 % of the A100
# peak in the forward pass (the low end: serving chunks are short and causal); ~35 % on H100
# (as the FlashAttention-3 paper measures it). FlashAttention-3 (Shah et al., NeurIPS 2024): up
# to 740 TFLOP/s FP16 on H100, 75 %; Hopper only.
KERNEL_EFFICIENCY: dict[str, dict[str, float]] = {
    "fa2": {"a100": 0.50, "h100": 0.35},
    "fa3": {"h100": 0.75},
}
# The default per GPU. On A100 the measured kernel: Sarathi-Serve's long prefills (8K-16K
# tokens) match it within 9 % and would be 21-28 % fast with FA2 (its two table-2 attention
# timings disagree 3.4x; docs/latency.md); engines with a FlashAttention-2 context kernel
# (TensorRT-LLM) match fa2 (stepopt.latency.kernels.with_prefill_kernel). On H100
# FlashAttention-3, which vLLM's FlashAttention backend runs on Hopper; the measured A100
# kernel scaled by the datasheet peak would be 4x slower.
DEFAULT_KERNEL: dict[str, str] = {"a100": "measured", "h100": "fa3"}
KERNELS = ("default", "measured", *KERNEL_EFFICIENCY)
EFFICIENCY_CHUNK = 4096  # chunk at which the measured kernel's efficiency is read


def measured_efficiency(fit: AttentionFit) -> float:
    """Fraction of the reference GPU's FP16 peak the measured prefill kernel reaches on a fresh
    ``EFFICIENCY_CHUNK``-token prefill (causal: ``2 * c**2 * head_dim * heads`` FLOPs)."""
    ref = REFERENCE_ATTENTION
    heads = ref["n_q_head"] / ref["tp"]
    head_dim = ref["n_embd"] / ref["n_q_head"]
    c = EFFICIENCY_CHUNK
    flops = 2.0 * c * c * head_dim * heads
    seconds = float(fit.predict_prefill([c], [0])[0] - fit.g_ns([1])[0]) * 1e-9
    return flops / seconds / (GPUS[ref["gpu"]].fp16_tflops * 1e12)


def kernel_factor(kernel: str, gpu: str, fit: AttentionFit) -> tuple[str, float]:
    """The kernel a fit assumes and the factor on the measured kernel's prefill time that it
    implies (1 for ``measured``): measured efficiency over the kernel's."""
    if kernel not in KERNELS:
        raise InputError("kernel", f"unknown kernel {kernel!r}; valid: {', '.join(KERNELS)}")
    name = DEFAULT_KERNEL.get(gpu, "measured") if kernel == "default" else kernel
    if name == "measured":
        return name, 1.0
    eff = KERNEL_EFFICIENCY[name].get(gpu)
    if eff is None:
        raise InputError("kernel", f"{name} has no published efficiency on {gpu}", name)
    return name, measured_efficiency(fit) / eff


# --- the whole model -----------------------------------------------------------------------


@dataclass(frozen=True)
class TokenFitReport:
    n_segments: int
    train_mape_pct: float
    holdout_mape_pct: float
    holdout_points: int
    measured_max_tokens: int


class LatencyFitter:
    """Fits a :class:`LatencyModel` to a :class:`~stepopt.latency.profiles.Profile`.

    The shipped model is the one fitted on the training rows; ``holdout_mape_pct_`` is its
    error on the held-out rows (every ``holdout_every``-th num_tokens value, every
    ``holdout_every``-th attention row).
    """

    def __init__(
        self,
        *,
        max_segments: int = 16,
        tol_pct: float = 1.0,
        holdout_every: int = 5,
        tokens_span: int = 16384,
        batch_span: int = 1024,
        grid: Sequence[int] = DEFAULT_GRID,
        kernel: str = "default",
    ):
        self.max_segments = max_segments
        self.tol_pct = tol_pct
        self.holdout_every = holdout_every
        self.tokens_span = tokens_span
        self.batch_span = batch_span
        self.grid = tuple(grid)
        self.kernel = kernel

    def fit(self, profile: Profile) -> LatencyFitter:
        x, y = tokenwise_points(profile)
        distinct = np.unique(x)
        held = np.isin(x, distinct[holdout_mask(distinct.size, self.holdout_every)])
        seg = PiecewiseLinearFit(self.max_segments, self.tol_pct).fit(x[~held], y[~held])
        self.tokens_fit_ = seg
        if profile.attention is not None:
            samples, self.attention_ = profile.attention, "measured"
            scale = {"decode": 1.0, "prefill": 1.0, "batch": 1.0}
        elif profile.reference_attention is not None:
            samples, self.attention_ = profile.reference_attention, "scaled"
            scale = attention_scale(profile)
        else:
            raise InputError(
                "attention",
                f"no attention profile for {profile.name} and no reference attention.csv to "
                "scale from",
                show_value=False,
            )
        self.attention_fit_ = AttentionFit(self.holdout_every).fit(samples)
        self.kernel_, factor = kernel_factor(self.kernel, profile.gpu.name, self.attention_fit_)
        self.attention_scale_ = {**scale, "prefill": scale["prefill"] * factor}
        self.attention_scale_["kernel"] = factor
        self.model_ = self._compose(profile, x, y)
        pred = np.array([self.model_.tokens(int(v)) for v in x[held]], dtype=float)
        truth = y[held] * profile.model.num_layers * NS_PER_MS
        self.holdout_mape_pct_ = mape_pct(pred, truth)
        self.report_ = TokenFitReport(
            n_segments=len(self.model_.tokens.xs) - 1,
            train_mape_pct=seg.train_mape_pct_,
            holdout_mape_pct=self.holdout_mape_pct_,
            holdout_points=int(held.sum()),
            measured_max_tokens=int(x.max()),
        )
        self.model_ = _with_meta(self.model_, fit_mape_pct=round(self.holdout_mape_pct_, 3))
        return self

    def _compose(self, profile: Profile, x: np.ndarray, y: np.ndarray) -> LatencyModel:
        # long: the model's terms from the fitted estimators, then its provenance (meta): that
        # one dict literal is most of the length
        layers = profile.model.num_layers
        seg, att, scale = self.tokens_fit_, self.attention_fit_, self.attention_scale_
        measured_max = int(x.max())
        top = max(self.tokens_span, measured_max)
        knots = [int(k) for k in seg.knots_]
        vals = [float(v) for v in seg.values_]
        # Move the end breakpoints along their segments: to 0, and to the span's end.
        vals[0], knots[0] = max(seg.line_at(0, "first"), 0.0), 0
        if top > knots[-1]:
            # Beyond the measurements: the throughput slope of the upper half of the measured
            # range (the last short segment may follow a wave step, even downwards).
            upper = x >= measured_max / 2
            slope = float(np.polyfit(x[upper], y[upper], 1)[0])
            vals.append(vals[-1] + max(slope, 0.0) * (top - knots[-1]))
            knots.append(top)
        tokens = PiecewiseLinear(tuple(knots), tuple(round(v * layers * NS_PER_MS) for v in vals))
        span = max(self.batch_span, att.measured_max_batch_)
        batch = PiecewiseLinear(
            (0, 1, span),
            tuple(round(float(v) * layers * scale["batch"]) for v in att.g_ns([0, 1, span])),
        )
        m = profile.model
        meta: dict[str, Any] = {
            "gpu": profile.gpu.name,
            "gpu_label": profile.gpu.label,
            "model": m.name,
            "tp": profile.tp,
            "num_layers": layers,
            "attention": self.attention_,
            "attention_kernel": self.kernel_,
            **capacity_meta(m, profile.gpu.name, profile.tp),
            "token_segments": len(knots) - 1,
            "tokens_extension": (
                f"linear beyond {measured_max} tokens (slope of the upper half of the "
                "measured range)"
                if top > measured_max
                else None
            ),
            "tokens_measured_max": measured_max,
            "tokens_extended_linearly_from": measured_max if top > measured_max else None,
            "batch_measured_max": att.measured_max_batch_,
            "batch_extended_linearly_from": att.measured_max_batch_,
            "decode_attention_holdout_mape_pct": round(att.decode_holdout_mape_pct_, 3),
            "prefill_attention_holdout_mape_pct": round(att.prefill_holdout_mape_pct_, 3),
            "prefill_attention_nocache_holdout_mape_pct": round(
                att.prefill_nocache_holdout_mape_pct_, 3
            ),
            "source": {
                "data": "vidur/data/profiling",
                "repository": SOURCE_REPO,
                "commit": SOURCE_COMMIT,
                "attention_commit": ATTENTION_COMMIT,
                "files": [_short_path(f) for f in profile.files],
            },
        }
        if self.attention_ == "scaled" or self.kernel_ != "measured":
            meta["attention_scaling"] = {k: round(v, 6) for k, v in scale.items()}
        return LatencyModel(
            tokens=tokens,
            batch=batch,
            decode_context_ps=round(att.delta_ns_ * layers * scale["decode"] * 1000),
            prefill=PrefillAttention(
                alpha_ns=_decimal(att.alpha_ns_ * layers * scale["prefill"]),
                beta_ns=_decimal(att.beta_ns_ * layers * scale["prefill"]),
                linear_ns=_decimal(att.linear_ns_ * layers * scale["prefill"]),
                grid=self.grid,
            ),
            name=profile.name,
            meta=meta,
        )


def _decimal(value: float) -> float:
    """A fitted coefficient with 6 significant digits: a short exact decimal in the preset."""
    return float(f"{value:.6g}")


def _with_meta(model: LatencyModel, **extra: Any) -> LatencyModel:
    from dataclasses import replace

    return replace(model, meta={**model.meta, **extra})


def _short_path(path: str) -> str:
    """Path from the ``vidur/`` folder on (no machine-specific prefix in shipped files)."""
    parts = path.replace("\\", "/").split("/")
    for anchor in ("vidur", "profiling"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) :])
    return parts[-1]
