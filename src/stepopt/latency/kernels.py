"""A fitted model with another prefill attention kernel, without the profiling data.

A preset fitted with the ``measured`` kernel carries Vidur's 2024 attention kernel; an engine
running a FlashAttention-class kernel (TensorRT-LLM's context FMHA, vLLM's FlashAttention
backend) is modelled by scaling the prefill coefficients by measured efficiency / the kernel's
published efficiency, as :class:`~stepopt.latency.fit.LatencyFitter` does with ``kernel=``. The
measured efficiency is read back from the model's own prefill term (its FLOPs are the reference
shape's times ``meta.attention_scaling.flops_ratio``), so no data folder is needed.
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


def with_prefill_kernel(model: LatencyModel, kernel: str) -> LatencyModel:
    """``model`` (a preset fitted with the ``measured`` kernel) with ``kernel``'s prefill speed;
    ``meta.attention_kernel`` says which."""
    meta = model.meta
    if meta.get("attention_kernel") != "measured" or "gpu" not in meta:
        raise InputError("kernel", "needs a fitted preset with the measured kernel", model.name)
    eff = KERNEL_EFFICIENCY.get(kernel, {}).get(meta["gpu"])
    if eff is None:
        raise InputError("kernel", f"no published efficiency on {meta['gpu']}", kernel)
    f = prefill_efficiency(model) / eff
    pre = model.prefill
    prefill = PrefillAttention(
        alpha_ns=_decimal(float(pre.alpha_ns) * f),
        beta_ns=_decimal(float(pre.beta_ns) * f),
        grid=pre.grid,
        linear_ns=_decimal(float(pre.linear_ns) * f),
    )
    return replace(model, prefill=prefill, meta={**meta, "attention_kernel": kernel})
