"""Sarathi-Serve's stall-free batching (``sarathi``).

After ``SarathiScheduler._schedule`` (microsoft/sarathi-serve, sarathi/core/scheduler/
sarathi_scheduler.py): running decodes first (one token each), then the running partial
prefills, then new prefills from the waiting queue, each prefill chunk
``min(remaining, budget left)``, up to a fixed token budget chosen offline (``chunk_size``;
default ``config.max_num_scheduled_tokens``). It never looks at the latency model.

Adapted so that its decisions satisfy every hard rule of a step problem (docs/heuristics.md):
chunks are capped at ``long_prefill_token_threshold`` and skipped below ``min_prefill_chunk``;
requests are served in ``(priority, arrival_time, id)`` order; nothing is preempted (when KV
blocks run out the step stops growing instead); new prefills join only when every running
request got its full chunk.
"""

from __future__ import annotations

from operator import attrgetter

from stepopt.errors import InputError
from stepopt.heuristics.base import register_heuristic
from stepopt.model import Decision, EngineConfig, Request, StepProblem, new_blocks

_ORDER = attrgetter("priority", "arrival_time", "id")


@register_heuristic("sarathi")
def sarathi(problem: StepProblem, chunk_size: int | None = None) -> Decision:
    """Sarathi-Serve's batch for this step with a fixed token budget ``chunk_size``."""
    cfg = problem.config
    if chunk_size is not None and (isinstance(chunk_size, bool) or chunk_size < 1):
        raise InputError("chunk_size", "must be a positive integer", chunk_size)
    budget = cfg.max_num_scheduled_tokens
    if chunk_size is not None and chunk_size < budget:
        budget = chunk_size
    kv_on = cfg.num_free_blocks is not None
    free = cfg.num_free_blocks or 0
    out: dict[str, int] = {}
    running = sorted(problem.running, key=_ORDER)
    budget, free, all_decodes = _decodes(running, out, budget, free, kv_on, cfg.block_size)
    if not all_decodes:
        return Decision(tokens=out)  # no prefill while a decode waits (Decode > Prefill)
    budget, free, all_full = _running_prefills(running, out, budget, free, kv_on, cfg)
    if all_full:
        _new_prefills(problem, out, budget, free, kv_on)
    return Decision(tokens=out)


def _decodes(
    running: list[Request], out: dict[str, int], budget: int, free: int, kv_on: bool, bs: int
) -> tuple[int, int, bool]:
    """Running decodes: one token each (Sarathi would preempt on a missing KV block; we
    skip). Returns the budget and blocks left, and whether every decode got its token."""
    all_decodes = True
    for r in running:
        if r.computed_tokens < r.prompt_tokens:
            continue
        if budget == 0:
            all_decodes = False
            break
        # new_blocks(c, 1, bs), inlined (one test per running decode): a decode needs a new
        # block when its context fills its last one (tests/test_heuristics_kv.py)
        if kv_on and r.computed_tokens % bs == 0:
            if free == 0:
                all_decodes = False
                continue
            free -= 1
        out[r.id] = 1
        budget -= 1
    return budget, free, all_decodes


def _running_prefills(
    running: list[Request],
    out: dict[str, int],
    budget: int,
    free: int,
    kv_on: bool,
    cfg: EngineConfig,
) -> tuple[int, int, bool]:
    """Running partial prefills: min(remaining, threshold, budget left, KV left). Returns the
    budget and blocks left, and whether every one got its full chunk."""
    thr, m, bs = cfg.long_prefill_token_threshold, cfg.min_prefill_chunk, cfg.block_size
    all_full = True
    for r in running:
        c = r.computed_tokens
        rem = r.prompt_tokens - c
        if rem <= 0:
            continue
        hi = rem if thr <= 0 or rem < thr else thr
        n = min(hi, budget)
        if kv_on:
            n = min(n, ((c + bs - 1) // bs + free) * bs - c)  # the most tokens free blocks hold
        if n < min(m, hi) or n <= 0:
            all_full = False
            continue
        if n < hi:
            all_full = False
        out[r.id] = n
        budget -= n
        if kv_on:
            free -= new_blocks(c, n, bs)
    return budget, free, all_full


def _new_prefills(
    problem: StepProblem, out: dict[str, int], budget: int, free: int, kv_on: bool
) -> None:
    """New prefills, in waiting order, while slots, budget and KV blocks last."""
    cfg = problem.config
    thr, m, bs = cfg.long_prefill_token_threshold, cfg.min_prefill_chunk, cfg.block_size
    slots = cfg.max_num_running_reqs - len(problem.running)
    for r in problem.waiting_order:
        if slots <= 0 or budget <= 0:
            break
        c = r.computed_tokens
        rem = r.prompt_tokens - c
        hi = rem if thr <= 0 or rem < thr else thr
        n = min(hi, budget)
        if n < min(m, hi):
            break
        if kv_on:
            # Sarathi allocates the whole prompt's blocks when it admits a request.
            full = new_blocks(c, rem, bs)
            if full > free:
                break
            free -= full
        out[r.id] = n
        budget -= n
        slots -= 1
