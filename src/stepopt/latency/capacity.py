"""KV-cache capacity of a preset: how many KV blocks fit next to the weights on one GPU.

Like vLLM's ``gpu_memory_utilization``: the engine may use ``memory_share`` of the GPU's memory;
the weights (FP16, sharded over TP) take their part and the rest holds KV blocks of
``block_size`` tokens, each token ``kv_bytes_per_token`` bytes per GPU (K and V, every layer,
the KV heads of one shard, FP16). Activations, CUDA graphs and fragmentation are not
subtracted, so this is an upper bound (vLLM profiles a peak activation and takes it off; it is
a few GiB for these models).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from stepopt.errors import InputError

GIB = 1024**3
DEFAULT_MEMORY_SHARE = 0.9  # vLLM's default gpu_memory_utilization

# Parameter counts (Hugging Face model cards / config: embeddings included, FP16 = 2 bytes).
PARAMS: dict[str, int] = {
    "llama-2-7b": 6_738_415_616,
    "llama-3-8b": 8_030_261_248,
    "codellama-34b": 33_743_970_304,
    "llama-2-70b": 68_976_648_192,
}
GPU_MEMORY_BYTES: dict[str, int] = {"a100": 80 * GIB, "h100": 80 * GIB}  # the 80 GB parts


def kv_bytes_per_token(num_layers: int, n_kv_head: int, head_dim: int, tp: int) -> int:
    """K and V, every layer, one tensor-parallel shard's KV heads, FP16."""
    return 2 * num_layers * max(n_kv_head // tp, 1) * head_dim * 2


def capacity_meta(model: Any, gpu: str, tp: int) -> dict[str, int]:
    """What a preset carries (``meta``) to size its KV cache; ``model`` is a ``ModelSpec``."""
    return {
        "kv_bytes_per_token": kv_bytes_per_token(
            model.num_layers, model.n_kv_head, model.head_dim, tp
        ),
        "weight_bytes_per_gpu": -(-PARAMS[model.name] * 2 // tp),
        "gpu_memory_bytes": GPU_MEMORY_BYTES[gpu],
    }


@dataclass(frozen=True)
class KvCapacity:
    kv_bytes_per_token: int
    weight_bytes_per_gpu: int
    gpu_memory_bytes: int

    def blocks(self, memory_share: float = DEFAULT_MEMORY_SHARE, block_size: int = 16) -> int:
        """KV blocks that fit (0 when the weights alone exceed the share)."""
        if not 0 < memory_share <= 1:
            raise InputError("memory_share", "must be in (0, 1]", memory_share)
        if block_size < 1:
            raise InputError("block_size", "must be >= 1", block_size)
        free = int(self.gpu_memory_bytes * memory_share) - self.weight_bytes_per_gpu
        return max(free, 0) // (self.kv_bytes_per_token * block_size)


def kv_capacity(latency: Any) -> KvCapacity | None:
    """The capacity a latency model's ``meta`` describes, or None (hand-made models)."""
    meta = getattr(latency, "meta", {}) or {}
    keys = ("kv_bytes_per_token", "weight_bytes_per_gpu", "gpu_memory_bytes")
    if not all(isinstance(meta.get(k), int) and meta[k] > 0 for k in keys):
        return None
    return KvCapacity(*(meta[k] for k in keys))


def default_num_free_blocks(
    latency: Any, memory_share: float = DEFAULT_MEMORY_SHARE, block_size: int = 16
) -> int | None:
    """Total KV blocks of a preset at ``memory_share`` (None if the preset does not say)."""
    cap = kv_capacity(latency)
    return None if cap is None else cap.blocks(memory_share, block_size)


def blocks_held(computed: Iterable[int], block_size: int) -> int:
    """Blocks the running requests already hold (``ceil(C / block_size)`` each)."""
    return sum(-(-c // block_size) for c in computed)


def running_fit_message(problem: Any, memory_share: float = DEFAULT_MEMORY_SHARE) -> str | None:
    """A one-line warning when the running requests' KV alone exceeds the preset's capacity."""
    bs = problem.config.block_size
    total = default_num_free_blocks(problem.latency, memory_share, bs)
    if total is None:
        return None
    held = blocks_held((r.computed_tokens for r in problem.running), bs)
    if held <= total:
        return None
    return (
        f"running: the running requests hold {held} KV blocks of {bs} tokens but "
        f"{problem.latency.name} fits {total} at memory share {memory_share:g}; "
        "no engine could be in this state"
    )
