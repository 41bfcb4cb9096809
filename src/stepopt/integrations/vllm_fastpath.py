"""When vLLM's own next step is provably the optimizer's: a cheap upper bound on its latency.

If nothing binds vLLM's next step (every request it can serve fits in the token budget, the
slots and the free KV blocks), vLLM serves every running request its whole need and admits the
whole waiting queue: the step with the most tokens any decision can have. When an upper bound
on that step's predicted latency is within the target, it is the optimum of ``goodput`` (most
tokens under the cap; it is the only step with that many) and, with a latency model that never
decreases when a request gets more tokens, of ``target`` too (no step is closer to T from
below, none reaches above it). The check reads two or three attributes per request and builds
no step problem, so leaving such a step to vLLM costs a small fraction of vLLM's own step.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepopt.latency.model import LatencyModel

# Waiting statuses vLLM's waiting loop skips (as in stepopt.integrations.vllm).
_BLOCKED = frozenset(
    {"WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR", "WAITING_FOR_REMOTE_KVS", "WAITING_FOR_STREAMING_REQ"}
)


def monotone(latency: LatencyModel) -> bool:
    """Every term of the model is nondecreasing in what a request adds to the step (the
    attention coefficients are nonnegative by construction)."""
    tok, batch = latency.tokens.ys, latency.batch.ys
    return (
        all(a <= b for a, b in itertools.pairwise(tok))
        and all(a <= b for a, b in itertools.pairwise(batch))
        and latency.decode_context_ps >= 0
    )


def _attention_upper(latency: LatencyModel, chunk: int, tokens: int) -> int:
    """An upper bound on the prefill attention of a chunk of at most ``chunk`` tokens of a
    request of ``tokens`` tokens, whatever part of it the prefix cache holds: the tabulated
    curve lies below its value at the next table point (the exact cost is nondecreasing in
    the chunk and in the cached tokens), and the cached part is at most ``tokens - 1``."""
    p = latency.prefill
    if p.is_zero:
        return 0
    g = next((x for x in p.grid if x >= chunk), tokens)
    return p.exact_ns(min(g, tokens), tokens - 1)


def whole_step_bound_ns(
    sched: Any, latency: LatencyModel, threshold: int
) -> tuple[int, bool] | None:
    """An upper bound on the predicted latency of vLLM's next step, and whether the step is
    decode-only (nothing waiting, no prefill chunk); None when that step may not serve every
    request in full (budget, slots or KV blocks may bind, a request is blocked or has encoder
    inputs, KV connectors are in use). ``threshold``: this step's effective
    ``long_prefill_token_threshold``."""
    if sched.kv_holding_waiting:
        return None
    running, waiting = sched.running, sched.waiting
    streaming = getattr(sched, "num_waiting_for_streaming_input", 0)
    if len(running) + len(waiting) + streaming > sched.max_num_active_reqs:
        return None
    budget = min(sched.max_num_scheduled_tokens, sched.scheduler_config.max_num_batched_tokens)
    bs = sched.block_size
    prefill = latency.prefill
    total = context = attn = 0
    blocks = len(running)  # a decode needs at most one new block
    prefills = 0
    for r in running:
        if not r.is_prefill_chunk:
            context += r.num_computed_tokens
            total += 1
            continue
        prefills += 1
        c = r.num_computed_tokens
        rem = r.num_tokens + r.num_output_placeholders - c
        n = threshold if 0 < threshold < rem else rem
        total += n
        attn += prefill(n, c, rem)
        blocks += n // bs + 1
    if total > budget:
        return None
    for r in waiting:
        if r.mm_features or r.status.name in _BLOCKED or r.num_stale_output_tokens:
            return None
        size = r.num_tokens
        n = threshold if 0 < threshold < size else size
        total += n
        attn += _attention_upper(latency, n, size)
        blocks += -(-size // bs)  # the whole prompt, as vLLM's admission check wants it
    if total > budget:
        return None
    free = sched.kv_cache_manager.block_pool.get_num_free_blocks()
    if blocks + _watermark_blocks(sched) > free:
        return None
    bound = latency.step_ns(total, len(running) + len(waiting), context, attn)
    return bound, not prefills and not waiting


def _watermark_blocks(sched: Any) -> int:
    """The headroom vLLM keeps free when admitting (``KVCacheManager.watermark_blocks``)."""
    return getattr(sched.kv_cache_manager, "watermark_blocks", 0) or 0
