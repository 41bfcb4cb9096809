"""The vLLM scheduler classes that steer each step by a stepopt heuristic.

Imported only through ``stepopt.integrations.vllm`` (which turns a missing vLLM into a
``MissingExtraError``). Each step: read the scheduler's state as a step problem, ask the
heuristic for a decision, set vLLM's token budget and admission limit (and the running order)
so that vLLM's own ``schedule()`` carries the decision out, restore them, and log the target,
the predicted latency, the decision and what vLLM scheduled. Any error before vLLM's
``schedule()`` runs makes the step vLLM's own.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

from stepopt.integrations.vllm_ahead import Ahead, queued, state_key
from stepopt.integrations.vllm_fastpath import monotone, whole_step_bound_ns
from stepopt.integrations.vllm_read import (
    _check_supported,
    _effective_threshold,
    problem_from_scheduler,
)
from stepopt.integrations.vllm_record import StepRecorder, _Declined, _Fallback, _Leave, logger
from stepopt.integrations.vllm_settings import SchedulerSettings, load_settings, resolve
from stepopt.integrations.vllm_steering import apply_steering, plan_steering, restore_steering
from stepopt.model import NS_PER_MS, Decision


class _Controller(StepRecorder):
    """Per-scheduler state: resolved settings, the plan made ahead, the fast paths' state
    (the counters and the step log: :class:`StepRecorder`).

    Nothing here may make ``schedule()`` raise or lose a step: every stage of stepopt's own
    (reading, deciding, planning, applying the steering, restoring it, recording, logging) is
    guarded; a failure before vLLM's ``schedule()`` leaves the step to vLLM, one after it is
    counted in ``errors`` and the step's output is returned all the same.
    """

    def __init__(self, settings: SchedulerSettings, reserve_full_prompt: bool = True) -> None:
        resolved = resolve(settings, reserve_full_prompt=reserve_full_prompt)
        self.settings = settings
        self.latency = resolved.latency
        self.heuristic = resolved.heuristic
        self.params = dict(resolved.params)
        self.policy = resolved.policy  # the exact rule's (solver and fallback counts)
        self._fast: tuple[int, int, int] | None = None  # (decodes, latency ns, steps since)
        self._fast_bound = 0
        self.target_ns = round(settings.target_ms * NS_PER_MS)
        self._monotone = monotone(self.latency)
        self._ahead: Ahead | None = None
        self.ahead_used = 0  # steps whose plan was made after the previous update_from_output
        self.kept = 0  # arrivals that left the plan made ahead as it was
        self._view: Any = None  # the last steered plan's SchedulerView
        self._plan_ahead = settings.plan_ahead and self.policy is None
        StepRecorder.__init__(self, settings, self.latency)
        logger.info(
            "stepopt scheduler: rule=%s params=%s objective=%s target=%.3f ms latency=%s",
            settings.heuristic,
            self.params,
            settings.objective,
            settings.target_ms,
            self.latency.name,
        )

    def schedule(self, sched: Scheduler, base: Any, throttle_prefills: bool) -> Any:
        self.flush()  # the previous step's record, if no update_from_output() came between
        self.steps += 1
        ahead, self._ahead = self._ahead, None
        try:
            if ahead is not None and not throttle_prefills and ahead.key == state_key(sched):
                plan = ahead.plan
                self._fast, self._fast_bound = ahead.fast, ahead.fast_bound
                self.ahead_used += 1
            else:
                plan = self._plan(sched, throttle_prefills)
        except Exception as exc:
            plan = _Declined(exc)
        if isinstance(plan, _Declined):
            return self._fallback(plan.exc, base, throttle_prefills)
        if plan is None:  # nothing to decide
            self.last = None
            return base(throttle_prefills)
        if isinstance(plan, _Leave):
            out = base(throttle_prefills)
            self.defer(self._record_left, plan, out)
            return out
        problem, steering = plan
        before = None
        try:
            before = _snapshot(sched, steering)
            saved = apply_steering(sched, steering)
        except Exception as exc:
            if before is not None:
                _put_back(sched, before)  # whatever was changed before the failure
            return self._fallback(exc, base, throttle_prefills)
        try:
            out = base(throttle_prefills)  # vLLM's own errors propagate, after the restore
        finally:
            self._guard("restore", _restore, sched, saved)
        self.defer(self._record, problem, steering, out)
        return out

    def forget(self) -> None:
        """Drop the plan made ahead (the state is about to change)."""
        self._ahead = None

    def prepare(self, sched: Scheduler) -> None:
        """Plan the next step now (after ``update_from_output()``), keeping the fast path's
        counters as they were: they move on only when the plan is used. Never raises; a
        failure leaves the planning to ``schedule()`` (where it is handled as ever)."""
        self._ahead = None
        self.flush()
        if not self._plan_ahead:
            return
        fast, bound = self._fast, self._fast_bound
        try:
            self._view = None
            plan = self._plan(sched, False)
            view = self._view if isinstance(plan, tuple) else None
            short = view is not None and view.waiting_seen < queued(sched)
            self._ahead = Ahead(state_key(sched), plan, self._fast, self._fast_bound, short)
        except Exception:
            self._ahead = None
        finally:
            self._fast, self._fast_bound = fast, bound

    def take(self) -> Ahead | None:
        ahead, self._ahead = self._ahead, None
        return ahead

    def arrived(self, sched: Scheduler, request: Any, ahead: Ahead | None) -> None:
        """After ``add_request()``: keep the plan made ahead if ``request`` cannot change it
        (:meth:`_keeps`). Never raises: a failure drops the plan."""
        try:
            if ahead is not None and self._keeps(sched, request, ahead):
                self._ahead = replace(ahead, key=state_key(sched))
                self.kept += 1
        except Exception:
            self._ahead = None

    def _keeps(self, sched: Scheduler, request: Any, ahead: Ahead) -> bool:
        """The new request went to the tail of an FCFS queue that the plan's reading stopped
        short of (the budget or the slots ran out before it: the same problem with or without
        it), and this step's prefill threshold is the same."""
        if not ahead.short or not self._monotone:
            return False  # (a monotone model: the whole-step bound only grows with a request)
        waiting = sched.waiting
        if (
            getattr(sched.policy, "value", None) != "fcfs"
            or getattr(sched, "connector", None) is not None
            or not waiting
            or waiting[-1] is not request
            or sched.requests.get(request.request_id) is not request
        ):
            return False
        nr, nw = sched.get_request_counts()
        threshold = ahead.plan[0].config.long_prefill_token_threshold
        return _effective_threshold(sched, nr + nw) == threshold

    def _plan(self, sched: Scheduler, throttle_prefills: bool) -> Any:
        """What to do this step: None (nothing to schedule), ``_Leave`` (vLLM's own step is
        the decision), or (problem, steering)."""
        s = self.settings
        if throttle_prefills:
            raise _Fallback("data-parallel prefill throttling")
        if self._fast is not None and self._fast_step(sched):
            return _Leave(True, self._fast_bound)
        self._fast = None
        _check_supported(sched)
        if not sched.running and not sched.waiting and not sched.kv_holding_waiting:
            return None
        if s.fast_whole_steps and (self._monotone or s.objective == "goodput"):
            nr, nw = sched.get_request_counts()
            found = whole_step_bound_ns(sched, self.latency, _effective_threshold(sched, nr + nw))
            if found is not None and found[0] <= self.target_ns:
                bound, decode_only = found
                if decode_only and self._monotone and s.fast_decode_steps:
                    self._fast = (len(sched.running), bound, 0)
                return _Leave(False, bound)
        view = problem_from_scheduler(
            sched,
            latency=self.latency,
            target_latency_ms=s.target_ms,
            objective=s.objective,
            priority_mode=s.priority_mode,
            min_prefill_chunk=s.min_prefill_chunk,
            prefix_cache_lookup=s.prefix_cache_lookup,
        )
        problem = view.problem
        if not problem.running and not problem.waiting:
            return None
        decision = self.heuristic(problem)
        steering = plan_steering(view, decision)
        if steering.token_budget == 0:
            # Nothing fits the target, but an empty step would leave the engine spinning
            # without progress: take the smallest step that makes some.
            steering = plan_steering(view, _minimal_decision(problem))
            steering = replace(steering, reason="empty decision: smallest step instead")
        self._view = view
        return problem, steering

    # ---- leaving the step to vLLM --------------------------------------------------------
    # After a step in which only decodes ran, nothing waited and the chosen step (every
    # decode) was within the target, the following decode-only steps stay optimal while the
    # decodes' contexts grow by one token per step: the latency grows by at most
    # ``decode_context_ps`` per decode and step (a monotone model). Until that bound reaches
    # the target (or ``fast_decode_steps`` have passed), vLLM's own step is the decision, at
    # O(1) cost: a request can only start a prefill by being admitted from the waiting queue,
    # which is empty at the start of every such step, and with a free block per decode vLLM
    # cannot preempt.

    def _fast_step(self, sched: Scheduler) -> bool:
        n_last, latency_ns, k = self._fast  # type: ignore[misc]
        if k >= self.settings.fast_decode_steps or sched.waiting or sched.kv_holding_waiting:
            return False
        if len(sched.running) > n_last:
            return False
        if sched.kv_cache_manager.block_pool.get_num_free_blocks() < n_last:
            return False  # a decode may need a new block: vLLM could preempt
        bound = latency_ns + ((k + 1) * n_last * self.latency.decode_context_ps) // 1000 + 1
        if bound > self.target_ns:
            return False
        self._fast = (n_last, latency_ns, k + 1)
        self._fast_bound = bound
        return True

    def _fallback(self, exc: Exception, base: Any, throttle_prefills: bool) -> Any:
        self._fast = None
        self._guard("fallback", self._count_fallback, exc)
        out = base(throttle_prefills)
        if self._log_file is not None:
            self._guard(
                "log",
                self._write,
                {
                    "step": self.steps,
                    "fallback": self._reason(exc),
                    "vllm_tokens": out.total_num_scheduled_tokens,
                },
            )
        return out

    def _arm_fast_after(self, decodes: int, latency_ns: int) -> None:
        if self._monotone and self.settings.fast_decode_steps:
            self._fast = (decodes, latency_ns, 0)


def _snapshot(sched: Scheduler, steering: Any) -> tuple[int, int, list[Any] | None]:
    running = list(sched.running) if steering.order is not None else None
    return sched.max_num_scheduled_tokens, sched.max_num_active_reqs, running


def _put_back(sched: Scheduler, snap: tuple[int, int, list[Any] | None]) -> None:
    sched.max_num_scheduled_tokens, sched.max_num_active_reqs, running = snap
    if running is not None:
        sched.running[:] = running


def _restore(sched: Scheduler, saved: Any) -> None:
    """``restore_steering``; should it fail, the same done again in the plainest way (a
    steered budget or running order left in place would change every later step)."""
    try:
        restore_steering(sched, saved)
    except Exception:
        sched.max_num_scheduled_tokens = saved.budget
        sched.max_num_active_reqs = saved.max_active
        if saved.running is not None:  # admission order: the saved one, admitted ones last
            kept = {id(r) for r in sched.running}
            old = [r for r in saved.running if id(r) in kept]
            known = {id(r) for r in old}
            sched.running[:] = old + [r for r in sched.running if id(r) not in known]
        raise


def _minimal_decision(problem: Any) -> Decision:
    """The first request vLLM would serve, with its smallest allowed chunk."""
    first = problem.running[0] if problem.running else problem.waiting[0]
    return Decision.of({first.id: problem.lo(first)})


class _OptimizedMixin:
    """``schedule()`` steered by a stepopt heuristic; everything else is vLLM's."""

    def __init__(
        self, *args: Any, stepopt_settings: SchedulerSettings | None = None, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        reserve = bool(getattr(self, "scheduler_reserve_full_isl", True))
        self.stepopt = _Controller(stepopt_settings or load_settings(), reserve)

    def schedule(self, throttle_prefills: bool = False):  # type: ignore[override]
        return self.stepopt.schedule(self, super().schedule, throttle_prefills)

    # Planning ahead: plan after each model output, drop the plan on any other change.
    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        self.stepopt.forget()
        self.stepopt.flush()  # the step's record, before vLLM moves on from its output
        out = super().update_from_output(scheduler_output, model_runner_output)  # type: ignore[misc]
        self.stepopt.prepare(self)
        return out

    def add_request(self, request: Any) -> None:
        ahead = self.stepopt.take()
        super().add_request(request)  # type: ignore[misc]
        self.stepopt.arrived(self, request, ahead)

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.stepopt.close()
        super().shutdown()  # type: ignore[misc]


# Every other scheduler method that changes what the next step sees drops the plan first.
_CHANGES = (
    "finish_requests",
    "reset_prefix_cache",
    "reset_encoder_cache",
    "reset_connector_cache",
    "set_pause_state",
    "update_draft_token_ids",
    "update_draft_token_ids_in_output",
)


def _forgetting(name: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.stepopt.forget()
        return getattr(super(_OptimizedMixin, self), name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


for _name in _CHANGES:
    setattr(_OptimizedMixin, _name, _forgetting(_name))


class OptimizedScheduler(_OptimizedMixin, AsyncScheduler):
    """vLLM's default asynchronous scheduler, each step steered by a stepopt heuristic.

    ``vllm serve MODEL --scheduler-cls stepopt.integrations.vllm.OptimizedScheduler`` with
    ``STEPOPT_TARGET_MS`` (and optionally ``STEPOPT_PRESET``, ``STEPOPT_OBJECTIVE``,
    ``STEPOPT_HEURISTIC``, ``STEPOPT_CONFIG``) in the environment.
    """


class OptimizedSyncScheduler(_OptimizedMixin, Scheduler):
    """The same for ``--no-async-scheduling``."""
