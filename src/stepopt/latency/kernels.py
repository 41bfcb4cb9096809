"""A fitted model with another prefill attention kernel, without the profiling data.

A preset fitted with the ``measured`` kernel carries Vidur's 2024 attention kernel; an engine
running a FlashAttention-class kernel (TensorRT-LLM's context FMHA, vLLM's FlashAttention
backend) is modelled by scaling the prefill coefficients by the preset's kernel efficiency / the
other kernel's, as :class:`~stepopt.latency.fit.LatencyFitter` does with ``kernel=``. The
preset's efficiency is read back from its own prefill term (its FLOPs are the reference shape's
times ``meta.attention_scaling.flops_ratio``), so no data folder is needed. Problem files select
one with ``{"preset": NAME, "kernel": "fa2"}``, ``stepopt tune`` with ``--kernel``.
"""

from __future__ import annotations

from dataclasses import replace

from stepopt.errors import InputError
from stepopt.latency.fit import EFFICIENCY_CHUNK, KERNEL_EFFICIENCY, _decimal
from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.latency.profiles import GPUS, REFERENCE_ATTENTION


def prefill_efficiency(model: LatencyModel) -> float:
    """Fraction of the GPU's FP16 peak the model's prefill term reaches on a fresh
    ``EFFICIENCY_CHUNK``-token prefill (causal: ``2 * c**2 * head_dim * heads`` FLOPs a layer)."""
    meta = model.meta
    ref = REFERENCE_ATTENTION
    heads = ref["n_q_head"] / ref["tp"]
    head_dim = ref["n_embd"] / ref["n_q_head"]
    ratio = meta.get("attention_scaling", {}).get("flops_ratio", 1.0)
    c = EFFICIENCY_CHUNK
    flops = 2.0 * c * c * head_dim * heads * ratio * meta["num_layers"]
    seconds = model.prefill.exact_ns(c, 0) * 1e-9
    return flops / seconds / (GPUS[meta["gpu"]].fp16_tflops * 1e12)


KERNEL_NAMES = ("measured", *KERNEL_EFFICIENCY)


def kernel_efficiency(kernel: str, gpu: str, measured: float, field: str = "kernel") -> float:
    """The efficiency ``kernel`` reaches on ``gpu``: the papers' figure, or ``measured`` (Vidur's
    kernel as profiled, which keeps its efficiency when scaled to another GPU)."""
    if kernel == "measured":
        return measured
    if kernel not in KERNEL_EFFICIENCY:
        raise InputError(field, f"unknown kernel {kernel!r}; valid: {', '.join(KERNEL_NAMES)}")
    eff = KERNEL_EFFICIENCY[kernel].get(gpu)
    if eff is None:
        raise InputError(field, f"{kernel} has no published efficiency on {gpu}", kernel)
    return eff


def with_prefill_kernel(
    model: LatencyModel, kernel: str, measured: float, field: str = "kernel"
) -> LatencyModel:
    """A fitted preset with ``kernel``'s prefill speed (``meta.attention_kernel`` says which);
    the model itself when it already assumes that kernel. ``measured`` is the measured kernel's
    efficiency (:func:`stepopt.latency.presets.with_kernel` reads it from the reference
    preset)."""
    meta = model.meta
    if "attention_kernel" not in meta or "gpu" not in meta:
        raise InputError(field, "needs a fitted preset (it states its kernel)", model.name)
    target = kernel_efficiency(kernel, meta["gpu"], measured, field)
    if kernel == meta["attention_kernel"]:
        return model
    f = prefill_efficiency(model) / target
    pre = model.prefill
    prefill = PrefillAttention(
        alpha_ns=_decimal(float(pre.alpha_ns) * f),
        beta_ns=_decimal(float(pre.beta_ns) * f),
        grid=pre.grid,
        linear_ns=_decimal(float(pre.linear_ns) * f),
    )
    return replace(model, prefill=prefill, meta={**meta, "attention_kernel": kernel})
