"""From a :class:`Decision` back to vLLM: the step's token budget, admission limit and running
order that make vLLM's own ``schedule()`` carry it out, and their undo (docs/vllm.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stepopt.latency.step import step_latency
from stepopt.model import Decision, Request, StepProblem

if TYPE_CHECKING:
    from stepopt.integrations.vllm_read import SchedulerView

__all__ = ["Steering", "apply_steering", "plan_steering", "restore_steering"]


@dataclass(frozen=True)
class Steering:
    """How to make vLLM's own ``schedule()`` produce a decision.

    vLLM's greedy gives every running request, in ``self.running`` order, ``min(needed,
    threshold, budget left)`` and then admits waiting requests in queue order while slots and
    budget last. With the step's token budget set to the decision's total, the admission limit
    set to the running count plus the admitted count, and the one partially served running
    request (if any) moved behind the fully served ones, the greedy yields the decision
    exactly whenever it has that shape (``exact``); otherwise ``reason`` says why not and vLLM
    carries out the nearest such step.
    """

    token_budget: int
    admit: int
    order: tuple[str, ...] | None = None  # running ids in the order to serve them, or None
    exact: bool = True
    reason: str = ""
    tokens: Mapping[str, int] = field(default_factory=dict)
    predicted_ns: int = 0  # the problem's latency model on ``tokens`` (== predict_ns)


def _hi(r: Request, thr: int) -> int:  # StepProblem.hi, inlined for the hot path
    rem = r.prompt_tokens - r.computed_tokens
    if rem <= 0:
        return 1
    return thr if 0 < thr < rem else rem


def _split_running(
    problem: StepProblem, get: Callable[..., int], attention: Callable[..., int], reasons: list[str]
) -> tuple[list[str], list[str], list[str], int, int]:
    """Running ids by what they get: fully served ones keep their order, the partial one goes
    after them and the unserved ones last (vLLM's budget runs out before it reaches them); with
    the decode context and prefill attention gathered on the way (as breakdown_ns does)."""
    thr = problem.config.long_prefill_token_threshold
    context = attn_ns = 0
    full: list[str] = []
    partial: list[str] = []
    rest: list[str] = []
    for r in problem.running:
        c = get(r.id, 0)
        if c == 0:
            rest.append(r.id)
            continue
        if r.computed_tokens >= r.prompt_tokens:
            context += r.computed_tokens
        else:
            attn_ns += attention(c, r.computed_tokens, r.prompt_tokens - r.computed_tokens)
        h = _hi(r, thr)
        if c < h:
            partial.append(r.id)
            continue
        if c > h:
            reasons.append(f"{r.id} gets {c} > {h} tokens")
        full.append(r.id)
    if len(partial) > 1:
        reasons.append(f"{len(partial)} running requests get partial chunks")
    return full, partial, rest, context, attn_ns


def _admitted_prefix(
    problem: StepProblem, get: Callable[..., int], attention: Callable[..., int], reasons: list[str]
) -> tuple[int, int, int]:
    """How many waiting requests vLLM admits (a prefix of its queue, each with its full chunk
    but the last), with their decode context and prefill attention."""
    thr = problem.config.long_prefill_token_threshold
    context = attn_ns = 0
    admitted = 0
    waiting = problem.waiting
    for r in waiting:
        c = get(r.id, 0)
        if c == 0:
            break
        if r.computed_tokens >= r.prompt_tokens:
            context += r.computed_tokens
        else:
            attn_ns += attention(c, r.computed_tokens, r.prompt_tokens - r.computed_tokens)
        h = _hi(r, thr)
        if c > h:
            reasons.append(f"{r.id} gets {c} > {h} tokens")
        elif c < h and admitted + 1 < len(waiting) and get(waiting[admitted + 1].id, 0):
            reasons.append(f"waiting {r.id} gets a partial chunk but is not the last admitted")
        admitted += 1
    return admitted, context, attn_ns


def plan_steering(view: SchedulerView, decision: Decision) -> Steering:
    """The budget, admission count and running order that carry out ``decision``."""
    problem = view.problem
    tokens = decision.tokens
    if type(tokens) is not dict or any(v <= 0 for v in tokens.values()):
        tokens = {k: v for k, v in tokens.items() if v > 0}
    get = tokens.get
    reasons: list[str] = []
    if decision.preempted:
        reasons.append("preemption is left to vLLM")

    attention = step_latency(problem.latency).attention
    full, partial, rest, context, attn_ns = _split_running(problem, get, attention, reasons)
    admitted, wait_context, wait_attn = _admitted_prefix(problem, get, attention, reasons)
    context += wait_context
    attn_ns += wait_attn
    known = len(full) + len(partial) + admitted
    total = sum(tokens.values())
    latency = problem.latency
    if known == len(tokens):
        predicted = step_latency(latency).total(total, known, context, attn_ns)
    else:
        predicted = latency.predict_ns(problem, tokens)
        ids = problem.by_id
        unknown = [k for k in tokens if k not in ids]
        if unknown:
            reasons.append(f"unknown ids {unknown[:3]}")
        if known + len(unknown) < len(tokens):
            reasons.append("admitted waiting requests are not a prefix of vLLM's queue")
    if admitted and (partial or rest):
        reasons.append("waiting requests admitted while running ones get less than a full chunk")

    order = None
    if partial or rest:
        wanted = full + partial + rest
        if any(a != b.id for a, b in zip(wanted, problem.running, strict=True)):
            order = tuple(wanted)
            if _may_preempt(problem, tokens):
                # Under FCFS vLLM preempts the tail of the running queue: reordered, that
                # would be the partial prefill instead of the newest request. Keep vLLM's
                # order (and its victim); the step then differs from the decision.
                order = None
                reasons.append("KV pressure: vLLM's running order kept (its preemption victim)")
    return Steering(
        token_budget=total,
        admit=admitted,
        order=order,
        exact=not reasons,
        reason="; ".join(dict.fromkeys(reasons)),
        tokens=tokens,
        predicted_ns=predicted,
    )


def _may_preempt(problem: StepProblem, tokens: Mapping[str, int]) -> bool:
    """Whether vLLM's running loop may run out of KV blocks serving the running requests'
    tokens (and so preempt): their new blocks against the free ones (a running request
    holds the blocks of its computed tokens, ``ceil(C / block_size)``)."""
    free = problem.config.num_free_blocks
    if free is None:
        return False
    bs = problem.config.block_size
    need = 0
    for r in problem.running:
        c = tokens.get(r.id, 0)
        if c:
            done = r.computed_tokens
            need += (done + c + bs - 1) // bs - (done + bs - 1) // bs
    return need > free


@dataclass
class _Saved:
    budget: int
    max_active: int
    running: list[Any] | None


def apply_steering(scheduler: Any, steering: Steering) -> _Saved:
    """Set the step's budget and admission limit and reorder ``scheduler.running``; return
    what :func:`restore_steering` needs to put everything back after ``schedule()``."""
    saved = _Saved(scheduler.max_num_scheduled_tokens, scheduler.max_num_active_reqs, None)
    running = scheduler.running
    try:
        if steering.order is not None:
            saved.running = list(running)
            rank = {rid: k for k, rid in enumerate(steering.order)}
            last = len(rank)
            running.sort(key=lambda r: rank.get(r.request_id, last))  # stable: skipped last
        streaming = getattr(scheduler, "num_waiting_for_streaming_input", 0)
        active = min(len(running) + streaming + steering.admit, saved.max_active)
        scheduler.max_num_scheduled_tokens = steering.token_budget
        scheduler.max_num_active_reqs = active
    except BaseException:
        restore_steering(scheduler, saved)  # all or nothing
        raise
    return saved


def restore_steering(scheduler: Any, saved: _Saved) -> None:
    """Undo :func:`apply_steering`: vLLM's limits, and the running order (requests preempted
    during the step stay out, requests admitted during it stay at the end, as vLLM has it)."""
    scheduler.max_num_scheduled_tokens = saved.budget
    scheduler.max_num_active_reqs = saved.max_active
    if saved.running is not None:
        rank = {id(r): k for k, r in enumerate(saved.running)}
        now = scheduler.running
        old = sorted((r for r in now if id(r) in rank), key=lambda r: rank[id(r)])
        new = [r for r in now if id(r) not in rank]
        now[:] = old + new
