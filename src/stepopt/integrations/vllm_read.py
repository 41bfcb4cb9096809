"""Reading a live vLLM V1 scheduler: its state right before ``schedule()`` as a
:class:`StepProblem` (:func:`problem_from_scheduler`), and what it scheduled as a
:class:`Decision`. No vLLM import: the scheduler's attributes are read as they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stepopt.errors import StepoptError
from stepopt.model import Decision, EngineConfig, Request, StepProblem, make_request

if TYPE_CHECKING:
    from stepopt.latency.model import LatencyModel

__all__ = [
    "SchedulerView",
    "UnsupportedStateError",
    "problem_from_scheduler",
    "scheduled_decision",
]

# Waiting statuses vLLM's waiting loop skips (Scheduler._is_blocked_waiting_status).
_BLOCKED_WAITING = frozenset(
    {"WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR", "WAITING_FOR_REMOTE_KVS", "WAITING_FOR_STREAMING_REQ"}
)


class UnsupportedStateError(StepoptError):
    """The scheduler uses a feature the step problem cannot describe (speculative decoding,
    encoder inputs, Mamba alignment, a prefill cadence...). The scheduler class falls back to
    vLLM's own step when it sees this."""


@dataclass(frozen=True)
class SchedulerView:
    """A :class:`StepProblem` read from a vLLM scheduler, plus what the problem leaves out.

    ``skipped_running``: running requests vLLM would skip this step (nothing to compute, e.g.
    async scheduling already in flight up to ``max_tokens``); they keep their slot, so
    ``config.max_num_running_reqs`` is lowered by their number. ``waiting_seen``: how many
    waiting requests vLLM could admit at all (the problem lists only the first ones that can
    fit in the free slots and the budget).
    """

    problem: StepProblem
    policy: str
    skipped_running: tuple[str, ...] = ()
    blocked_waiting: tuple[str, ...] = ()
    waiting_seen: int = 0


def _status_name(request: Any) -> str:
    status = request.status
    return getattr(status, "name", str(status))


def _check_supported(scheduler: Any) -> None:
    reasons = []
    if getattr(scheduler, "num_spec_tokens", 0) or getattr(scheduler, "num_lookahead_tokens", 0):
        reasons.append("speculative decoding")
    if getattr(scheduler, "need_mamba_block_aligned_split", False):
        reasons.append("Mamba block-aligned prefill")
    if getattr(scheduler, "local_prefill_interval", 1) > 1:
        reasons.append("prefill_schedule_interval > 1")
    if getattr(scheduler, "num_prefill_lookahead", 0):
        reasons.append("prefill lookahead")
    if getattr(scheduler, "use_pp", False):
        reasons.append("pipeline parallelism")
    if reasons:
        raise UnsupportedStateError("vLLM scheduler uses " + ", ".join(reasons))


_make_request = make_request  # the model's fast constructor


def _effective_threshold(scheduler: Any, num_eligible: int) -> int:
    """``long_prefill_token_threshold`` as ``Scheduler.schedule`` computes it for this step."""
    cfg = scheduler.scheduler_config
    thr = cfg.long_prefill_token_threshold if num_eligible > 1 else 0
    if thr > 0 and scheduler.adaptive_long_prefill_threshold:
        thr = max(thr, cfg.max_num_batched_tokens // num_eligible)
    return thr


def problem_from_scheduler(
    scheduler: Any,
    *,
    latency: LatencyModel,
    target_latency_ms: float,
    objective: str = "target",
    priority_mode: str = "strict",
    min_prefill_chunk: int = 1,
    prefix_cache_lookup: bool = True,
) -> SchedulerView:
    """The step problem of a live vLLM V1 ``Scheduler`` (or ``AsyncScheduler``) right before
    its next ``schedule()``.

    ``min_prefill_chunk=1`` mirrors vLLM, which cuts chunks at any size. With
    ``prefix_cache_lookup`` (and prefix caching on), a waiting request's ``computed_tokens``
    is its current prefix-cache hit, as vLLM will find it at admission (a lookup with no side
    effect); otherwise 0.
    """
    _check_supported(scheduler)
    policy = getattr(scheduler.policy, "value", str(scheduler.policy))
    num_running, num_waiting = scheduler.get_request_counts()
    threshold = _effective_threshold(scheduler, num_running + num_waiting)

    running, skipped, demand = _read_running(scheduler, threshold)
    streaming = getattr(scheduler, "num_waiting_for_streaming_input", 0)
    max_active = getattr(scheduler, "max_num_active_reqs", scheduler.max_num_running_reqs)
    slots = max_active - streaming - len(skipped)
    budget = min(
        scheduler.max_num_scheduled_tokens, scheduler.scheduler_config.max_num_batched_tokens
    )
    # Only the waiting requests a steerable decision can reach matter (vLLM admits a prefix of
    # its queue, and only once every running request has its full chunk): at most the free
    # slots, and only until their full chunks use up what the running ones leave of the
    # budget. A long queue, or one the budget cannot reach, costs nothing to read.
    lookup = (
        prefix_cache_lookup
        and scheduler.cache_config.enable_prefix_caching
        and getattr(scheduler, "connector", None) is None
        and not getattr(scheduler, "enable_kv_cache_events", False)  # lookups may emit events
    )
    waiting, blocked, seen = _read_waiting(
        scheduler,
        limit=max(slots - len(running), 0),
        left=budget - demand,
        threshold=threshold,
        lookup=lookup,
        priority_policy=policy == "priority",
    )
    blocks = scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
    config = EngineConfig(
        max_num_scheduled_tokens=budget,
        max_num_running_reqs=slots,
        long_prefill_token_threshold=threshold,
        min_prefill_chunk=min_prefill_chunk,
        block_size=scheduler.block_size,
        num_free_blocks=blocks,
    )
    problem = StepProblem(
        running=tuple(running),
        waiting=tuple(waiting),
        config=config,
        latency=latency,
        target_latency_ms=target_latency_ms,
        objective=objective,  # type: ignore[arg-type]
        priority_mode=priority_mode,  # type: ignore[arg-type]
    )
    return SchedulerView(problem, policy, tuple(skipped), tuple(blocked), seen)


def _read_running(scheduler: Any, threshold: int) -> tuple[list[Request], list[str], int]:
    """The running loop of Scheduler.schedule(), minus budget and threshold: what each request
    needs this step, or a skip; and the tokens they take when each gets its full chunk.
    Inlined arithmetic: this loop runs over every running request every step."""
    make = _make_request
    running: list[Request] = []
    skipped: list[str] = []
    next_step = getattr(scheduler, "current_step", 0) + 1  # schedule() increments it first
    room = scheduler.max_model_len - scheduler.num_sampled_tokens_per_step
    demand = 0
    for r in scheduler.running:
        computed = r.num_computed_tokens
        ph = r.num_output_placeholders
        if (ph > 0 and computed + 2 - ph >= r.num_prompt_tokens + r.max_tokens) or (
            next_step < r.next_decode_eligible_step
        ):
            skipped.append(r.request_id)  # async: last token in flight; or PP decode stagger
            continue
        if r.mm_features:
            raise UnsupportedStateError(f"request {r.request_id} has encoder inputs")
        n = r.num_tokens_with_spec + ph - computed
        if n > room - computed:
            n = room - computed
        if n <= 0:
            skipped.append(r.request_id)
            continue
        if n == 1 and not r.is_prefill_chunk:
            prompt = r.num_prompt_tokens  # a decode: computed >= prompt
            if prompt > computed:
                prompt = computed
            demand += 1
        else:
            prompt = computed + n
            demand += threshold if 0 < threshold < n else n
        running.append(make(r.request_id, prompt, computed, r.priority, r.arrival_time))
    return running, skipped, demand


def _read_waiting(
    scheduler: Any, *, limit: int, left: int, threshold: int, lookup: bool, priority_policy: bool
) -> tuple[list[Request], list[str], int]:
    """The waiting requests a decision can reach (at most ``limit``, until their full chunks
    spend ``left`` tokens), the ones vLLM would skip, and how many were looked at."""
    make = _make_request
    waiting: list[Request] = []
    blocked: list[str] = []
    seen = 0
    last_key: tuple[float, str] | None = None
    for queue in (scheduler.kv_holding_waiting, scheduler.waiting):
        for r in queue:
            if len(waiting) >= limit or left <= 0:
                break
            seen += 1
            if _status_name(r) in _BLOCKED_WAITING or (
                r.num_stale_output_tokens and not r.drop_stale_output
            ):
                blocked.append(r.request_id)
                continue
            if r.mm_features:
                raise UnsupportedStateError(f"request {r.request_id} has encoder inputs")
            computed = r.num_computed_tokens
            if computed == 0 and lookup:
                computed = scheduler.kv_cache_manager.get_computed_blocks(r)[1]
            rest = r.num_tokens - computed
            left -= threshold if 0 < threshold < rest else max(rest, 1)
            if priority_policy:
                # The heap order is (priority, arrival_time, request_id): stepopt's order too.
                waiting.append(
                    make(r.request_id, r.num_tokens, computed, r.priority, r.arrival_time)
                )
                continue
            # FCFS ignores priority and serves the deque in order (preempted requests go back
            # to its front): give stepopt's (priority, arrival, id) order the same sequence,
            # keeping the real arrival times whenever they already agree.
            arrival = float(r.arrival_time)
            key = (arrival, r.request_id)
            if last_key is not None and key <= last_key:
                arrival = last_key[0]
                key = (arrival, r.request_id)
                while key <= last_key:
                    arrival = _next_up(arrival)
                    key = (arrival, r.request_id)
            last_key = key
            waiting.append(make(r.request_id, r.num_tokens, computed, 0, arrival))
    return waiting, blocked, seen


def _next_up(x: float) -> float:
    import math

    return math.nextafter(x, math.inf)


def scheduled_decision(scheduler_output: Any) -> Decision:
    """What vLLM scheduled (``num_scheduled_tokens``, ``preempted_req_ids``) as a Decision."""
    return Decision(
        tokens=dict(scheduler_output.num_scheduled_tokens),
        preempted=tuple(sorted(scheduler_output.preempted_req_ids)),
    )
