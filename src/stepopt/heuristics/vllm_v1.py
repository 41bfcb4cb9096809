"""vLLM V1's token allocation for one step (``vllm-v1``, ``vllm-v1-priority``).

A replay of ``Scheduler.schedule()`` of vLLM 0.33.0 (vllm/v1/core/sched/scheduler.py) on a
:class:`StepProblem`, limited to what decides ``num_scheduled_tokens``: the RUNNING loop in
admission order with KV allocation and preemption, then the WAITING loop (only when nothing
was preempted) with the full-prompt KV admission gate (``scheduler_reserve_full_isl=True``).
Speculative decoding, encoders, LoRA, connectors, pipeline parallelism, async-output
placeholders and ``max_model_len`` are out of scope (a step problem has none of them).

vLLM knows neither ``min_prefill_chunk`` nor stepopt's strict priority rules, and it lifts the
prefill threshold for a lone request; the evaluator reports what that breaks, and this module
does not hide it. docs/heuristics.md lists the rules it may break and why.
"""

from __future__ import annotations

import heapq
from functools import partial
from typing import Literal

from stepopt.errors import InputError
from stepopt.evaluate import Rule
from stepopt.heuristics.base import register_heuristic
from stepopt.model import Decision, EngineConfig, Request, StepProblem, new_blocks

Policy = Literal["fcfs", "priority"]
POLICIES: tuple[Policy, ...] = ("fcfs", "priority")


def vllm_v1(
    problem: StepProblem, policy: Policy = "fcfs", lone_request_rule: bool = True
) -> Decision:
    """The tokens vLLM 0.33.0 schedules for this step under ``policy`` (``fcfs``/``priority``).

    ``fcfs`` serves the waiting queue in the order given; ``priority`` pops a min-heap on
    ``(priority, arrival_time, id)``. Preempted running requests (recompute preemption) get 0
    tokens and are listed in ``Decision.preempted``. ``lone_request_rule=False`` takes the
    problem's threshold as this step's effective one (as the vLLM adapter reads it, counting
    requests the problem leaves out) instead of lifting it for a lone request.
    """
    if policy not in POLICIES:
        raise InputError("policy", f"must be one of {', '.join(POLICIES)}", policy)
    cfg = problem.config
    running: list[Request] = list(problem.running)  # admission order, never re-sorted
    # The threshold only applies when more than one request is present (running + waiting).
    lone = lone_request_rule and len(running) + len(problem.waiting) <= 1
    st = _Step(cfg, 0 if lone else cfg.long_prefill_token_threshold)
    _schedule_running(st, running, policy == "priority")
    if not st.preempted and problem.waiting:  # WAITING only if nothing was preempted
        _schedule_waiting(st, running, problem.waiting, policy == "priority")
    return Decision(tokens=st.scheduled, preempted=tuple(st.preempted))


class _Step:
    """The scheduler's running totals for one step."""

    __slots__ = (
        "allocated", "bs", "budget", "free", "kv_on", "max_run", "preempted", "scheduled", "thr"
    )  # fmt: skip

    def __init__(self, cfg: EngineConfig, thr: int) -> None:
        self.thr, self.bs, self.budget = thr, cfg.block_size, cfg.max_num_scheduled_tokens
        self.max_run = cfg.max_num_running_reqs
        self.kv_on = cfg.num_free_blocks is not None
        self.free = cfg.num_free_blocks or 0
        self.scheduled: dict[str, int] = {}
        self.allocated: dict[str, int] = {}  # KV blocks allocated this step, per request
        self.preempted: list[str] = []


def _schedule_running(st: _Step, running: list[Request], by_priority: bool) -> None:
    """The RUNNING loop: each request in admission order gets its tokens if its KV blocks
    can be allocated, preempting (recompute) the last or lowest-priority request until they
    can; ``running`` loses the preempted."""
    thr, bs, kv_on = st.thr, st.bs, st.kv_on
    budget, free, scheduled, allocated, preempted = (
        st.budget, st.free, st.scheduled, st.allocated, st.preempted
    )  # fmt: skip
    i = 0
    while i < len(running) and budget > 0:
        r = running[i]
        c = r.computed_tokens
        n = 1 if c >= r.prompt_tokens else r.prompt_tokens - c
        if 0 < thr < n:
            n = thr
        if n > budget:
            n = budget
        # new_blocks(c, n, bs), inlined: this runs once per running request, and the call costs
        # 6 % of the whole step at 1,024 running (instruction counts); tests/test_heuristics_kv.py
        # checks the copy against the definition
        need = (c + n + bs - 1) // bs - (c + bs - 1) // bs
        ok = True
        while kv_on and need > free:
            # Allocation failed: preempt the lowest-priority request and retry.
            if by_priority:
                victim = max(running, key=_victim_key)
                k = running.index(victim)
                del running[k]
                if k < i:
                    i -= 1
                if victim.id in scheduled:  # scheduled earlier this step: hand its share back
                    budget += scheduled.pop(victim.id)
                    free += allocated.pop(victim.id)
            else:
                victim = running.pop()
            free += (victim.computed_tokens + bs - 1) // bs  # recompute: all its blocks go
            preempted.append(victim.id)
            if victim is r:
                ok = False
                break
        if not ok:
            if by_priority:
                continue  # r left the queue; running[i] is already the next request
            break
        if kv_on:
            free -= need
            allocated[r.id] = need
        scheduled[r.id] = n
        budget -= n
        i += 1
    st.budget, st.free = budget, free


def _schedule_waiting(
    st: _Step, running: list[Request], waiting: tuple[Request, ...], by_priority: bool
) -> None:
    """The WAITING loop: admit in queue order (``priority``: a min-heap on (priority,
    arrival_time, id)) while budget, slots and the full-prompt KV gate allow."""
    thr, bs, kv_on, scheduled = st.thr, st.bs, st.kv_on, st.scheduled
    max_run = st.max_run
    if by_priority:
        heap = [(w.priority, w.arrival_time, w.id, k) for k, w in enumerate(waiting)]
        heapq.heapify(heap)
    head = 0
    while st.budget > 0:
        if by_priority:
            if not heap:
                break
            r = waiting[heap[0][3]]
        else:
            if head >= len(waiting):
                break
            r = waiting[head]
        if len(running) >= max_run:
            break
        c = r.computed_tokens  # prefix-cache hit
        n = max(r.prompt_tokens - c, 1)
        if 0 < thr < n:
            n = thr
        if n > st.budget:
            n = st.budget
        if kv_on:
            # scheduler_reserve_full_isl: the whole prompt must fit before admission.
            if new_blocks(c, r.prompt_tokens - c, bs) > st.free:
                break
            st.free -= new_blocks(c, n, bs)
        if by_priority:
            heapq.heappop(heap)
        else:
            head += 1
        running.append(r)
        scheduled[r.id] = n
        st.budget -= n


def _victim_key(r: Request) -> tuple[int, float]:
    return (r.priority, r.arrival_time)


# Rules vLLM's own schedule may break (docs/heuristics.md, "The rules vLLM may break"): no
# minimum chunk and the threshold lifted for a lone request (phase), admission order instead
# of Decode > Prefill, FCFS order. It preempts on KV pressure as vLLM does.
VLLM_EXEMPT = frozenset({Rule.PHASE, Rule.DECODE_FIRST, Rule.WAITING_ORDER})
register_heuristic("vllm-v1", exempt=VLLM_EXEMPT, preempts=True)(vllm_v1)
register_heuristic("vllm-v1-priority", exempt=VLLM_EXEMPT, preempts=True)(
    partial(vllm_v1, policy="priority")
)
