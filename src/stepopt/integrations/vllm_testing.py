"""Build a real vLLM V1 scheduler on the CPU and drive it with fake model outputs.

The same recipe as vLLM's own ``tests/v1/core/utils.py::create_scheduler``: a local model
``config.json`` (a tiny Llama, no hub access), ``skip_tokenizer_init=True``, a CPU device and a
KV cache config with one full-attention group. For tests and benchmarks; needs vLLM.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from functools import cache
from pathlib import Path
from typing import Any

from stepopt.errors import MissingExtraError

TINY_MODEL_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "torch_dtype": "float16",
    "bos_token_id": 1,
    "eos_token_id": 2,
}


@cache
def tiny_model_dir() -> Path:
    """A directory holding only the tiny model's ``config.json`` (written once per process)."""
    d = Path(tempfile.mkdtemp(prefix="stepopt-vllm-model-"))
    (d / "config.json").write_text(json.dumps(TINY_MODEL_CONFIG), encoding="utf-8")
    return d


def _vllm() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import vllm
    except ImportError as exc:
        raise MissingExtraError("vllm", "vllm", "a real vLLM scheduler") from exc
    return vllm


def make_scheduler(
    cls: type | None = None,
    *,
    max_num_seqs: int = 16,
    max_num_batched_tokens: int = 8192,
    max_num_scheduled_tokens: int | None = None,
    long_prefill_token_threshold: int = 0,
    policy: str = "fcfs",
    num_blocks: int = 10000,
    block_size: int = 16,
    max_model_len: int = 8192,
    enable_prefix_caching: bool = False,
    async_scheduling: bool = True,
    watermark: float = 0.0,
    log_stats: bool = False,
    **cls_kwargs: Any,
) -> Any:
    """A vLLM scheduler of class ``cls`` (default: ``AsyncScheduler``) on the CPU."""
    _vllm()
    import torch
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    scheduler_config = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_scheduled_tokens=max_num_scheduled_tokens,
        max_model_len=max_model_len,
        long_prefill_token_threshold=long_prefill_token_threshold,
        enable_chunked_prefill=True,
        is_encoder_decoder=False,
        async_scheduling=async_scheduling,
        policy=policy,
        watermark=watermark,
    )
    model_config = ModelConfig(
        model=str(tiny_model_dir()),
        dtype="float16",
        seed=42,
        skip_tokenizer_init=True,
        max_model_len=max_model_len,
    )
    cache_config = CacheConfig(block_size=block_size, enable_prefix_caching=enable_prefix_caching)
    vllm_config = VllmConfig(
        scheduler_config=scheduler_config,
        model_config=model_config,
        cache_config=cache_config,
        device_config=DeviceConfig(device="cpu"),
    )
    kv_cache_config = KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],
        kv_cache_groups=[
            KVCacheGroupSpec(
                ["layer"],
                FullAttentionSpec(
                    block_size=block_size, num_kv_heads=1, head_size=1, dtype=torch.float32
                ),
            )
        ],
    )
    cache_config.num_gpu_blocks = num_blocks
    cls = cls or AsyncScheduler
    return cls(
        vllm_config=vllm_config,
        kv_cache_config=kv_cache_config,
        structured_output_manager=StructuredOutputManager(vllm_config),
        block_size=block_size,
        log_stats=log_stats,
        **cls_kwargs,
    )


@cache
def _block_hasher(block_size: int) -> Any:
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash

    init_none_hash(sha256)
    return get_request_block_hasher(block_size, sha256)


def make_request(
    request_id: str,
    prompt_tokens: int,
    *,
    max_tokens: int = 16,
    priority: int = 0,
    arrival_time: float = 0.0,
    token: int | None = None,
    block_size: int = 16,
) -> Any:
    """A vLLM request with a prompt of ``prompt_tokens`` copies of ``token`` (default: a
    value derived from the id, so different requests share no prefix)."""
    _vllm()
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request

    tok = token if token is not None else zlib.crc32(request_id.encode()) % 900 + 50
    return Request(
        request_id=request_id,
        prompt_token_ids=[tok] * prompt_tokens,
        sampling_params=SamplingParams(max_tokens=max_tokens, ignore_eos=True),
        pooling_params=None,
        arrival_time=arrival_time,
        priority=priority,
        block_hasher=_block_hasher(block_size),
    )


def fake_output(scheduler: Any, scheduler_output: Any) -> Any:
    """The model output of a step, to be built right after ``schedule()``: one sampled token
    for every request that has finished its prompt in this step, none for a partial prefill."""
    from vllm.v1.outputs import ModelRunnerOutput

    ids = list(scheduler_output.num_scheduled_tokens)
    sampled = []
    for rid in ids:
        request = scheduler.requests.get(rid)
        sampled.append([] if request is None or request.is_prefill_chunk else [7])
    return ModelRunnerOutput(
        req_ids=ids,
        req_id_to_index={rid: k for k, rid in enumerate(ids)},
        sampled_token_ids=sampled,
    )


def step(scheduler: Any) -> Any:
    """One synchronous round: ``schedule()``, then the fake model output back in."""
    out = scheduler.schedule()
    scheduler.update_from_output(out, fake_output(scheduler, out))
    return out


def random_scenario(seed: int, *, kv_pressure: bool = True) -> dict[str, Any]:
    """A random serving scenario: scheduler settings (budget, slots, threshold, KV blocks,
    policy) and arrivals over time, each ``(step, id, prompt, max_tokens, priority)``, plus
    aborts ``(step, id)``. With ``kv_pressure`` the KV cache holds a few prompts only."""
    import random

    rng = random.Random(seed)
    blocks = rng.choice([40, 60, 100, 160]) if kv_pressure else 10000
    longest = min(700, blocks * 16 // 2 - 120)  # any one request fits the cache with its output
    n = rng.randrange(8, 40)
    arrivals = [
        (
            rng.randrange(60),
            f"s{k}",
            rng.randrange(5, longest),
            rng.randrange(1, 120),
            rng.randrange(3),
        )
        for k in range(n)
    ]
    aborts = [(rng.randrange(80), f"s{k}") for k in rng.sample(range(n), n // 8)]
    kwargs = {
        "policy": rng.choice(["fcfs", "priority"]),
        "max_num_seqs": rng.choice([4, 8, 16, 32]),
        "max_num_batched_tokens": rng.choice([256, 512, 1024, 2048]),
        "long_prefill_token_threshold": rng.choice([0, 64, 128, 400]),
        "num_blocks": blocks,
    }
    return {"kwargs": kwargs, "arrivals": arrivals, "aborts": aborts, "lag": rng.random() < 0.5}


def run_scenario(
    scheduler: Any, scenario: dict[str, Any], *, max_steps: int = 400, on_step: Any = None
) -> int:
    """Drive ``scheduler`` through ``scenario`` (synchronously, or with async scheduling's
    one-step output lag); ``on_step(out)`` after each ``schedule()``. Returns the steps run."""
    from vllm.v1.request import RequestStatus

    by_step: dict[int, list[Any]] = {}
    for k, rid, prompt, max_tokens, prio in scenario["arrivals"]:
        by_step.setdefault(k, []).append((rid, prompt, max_tokens, prio))
    aborts: dict[int, list[str]] = {}
    for k, rid in scenario["aborts"]:
        aborts.setdefault(k, []).append(rid)
    last = max([*by_step, *aborts], default=0)
    pending = None
    for k in range(max_steps):
        for rid, prompt, max_tokens, prio in by_step.get(k, ()):
            scheduler.add_request(
                make_request(
                    rid,
                    prompt,
                    max_tokens=max_tokens,
                    priority=prio,
                    arrival_time=k,
                    token=scenario.get("token"),  # one token for all: shared prefixes
                )
            )
        gone = [r for r in aborts.get(k, ()) if r in scheduler.requests]
        if gone:
            scheduler.finish_requests(gone, RequestStatus.FINISHED_ABORTED)
        if k > last and not scheduler.has_requests():
            return k
        out = scheduler.schedule()
        mro = fake_output(scheduler, out)
        if on_step is not None:
            on_step(out)
        if scenario["lag"]:
            if pending is not None:
                scheduler.update_from_output(*pending)
            pending = (out, mro)
        else:
            scheduler.update_from_output(out, mro)
    return max_steps
