"""The vLLM scheduler classes that steer each step by a stepopt heuristic.

Imported only through ``stepopt.integrations.vllm`` (which turns a missing vLLM into a
``MissingExtraError``). Each step: read the scheduler's state as a step problem, ask the
heuristic for a decision, set vLLM's token budget and admission limit (and the running order)
so that vLLM's own ``schedule()`` carries the decision out, restore them, and log the target,
the predicted latency, the decision and what vLLM scheduled. Any error before vLLM's
``schedule()`` runs makes the step vLLM's own.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from itertools import pairwise
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

from stepopt.integrations.vllm import (
    apply_steering,
    plan_steering,
    problem_from_scheduler,
    restore_steering,
)
from stepopt.integrations.vllm_settings import SchedulerSettings, load_settings, resolve
from stepopt.model import NS_PER_MS, Decision

# Under vLLM's logger tree, so its handlers and VLLM_LOGGING_LEVEL apply.
logger = logging.getLogger("vllm.stepopt")


class _Controller:
    """Per-scheduler state: resolved settings, counters, the step log."""

    def __init__(self, settings: SchedulerSettings) -> None:
        resolved = resolve(settings)
        self.settings = settings
        self.latency = resolved.latency
        self.heuristic = resolved.heuristic
        self.steps = 0
        self.steered = 0
        self.exact = 0
        self.fallbacks: dict[str, int] = {}
        self.within = 0
        self.predicted_sum_ms = 0.0
        self.last: dict[str, Any] | None = None
        self.fast = 0
        self._fast: tuple[int, int, int] | None = None  # (decodes, latency ns, steps since)
        self._fast_bound = 0
        self.target_ns = round(settings.target_ms * NS_PER_MS)
        lat = self.latency
        self._monotone = _nondecreasing(lat.tokens.ys) and _nondecreasing(lat.batch.ys)
        self._log_file = None
        if settings.step_log:
            self._log_file = open(settings.step_log, "a", encoding="utf-8")  # noqa: SIM115
        logger.info(
            "stepopt scheduler: heuristic=%s objective=%s target=%.3f ms latency=%s",
            settings.heuristic,
            settings.objective,
            settings.target_ms,
            self.latency.name,
        )

    def schedule(self, sched: Scheduler, base: Any, throttle_prefills: bool) -> Any:
        self.steps += 1
        s = self.settings
        if self._fast is not None and self._fast_step(sched):
            return self._run_fast(sched, base, throttle_prefills)
        try:
            if throttle_prefills:
                raise _Fallback("data-parallel prefill throttling")
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
                self.last = None
                return base(throttle_prefills)
            decision = self.heuristic(problem)
            steering = plan_steering(view, decision)
            if steering.token_budget == 0:
                # Nothing fits the target, but an empty step would leave the engine spinning
                # without progress: take the smallest step that makes some.
                steering = plan_steering(view, _minimal_decision(problem))
                steering = replace(steering, reason="empty decision: smallest step instead")
        except Exception as exc:
            return self._fallback(exc, base, throttle_prefills)
        saved = apply_steering(sched, steering)
        try:
            out = base(throttle_prefills)
        finally:
            restore_steering(sched, saved)
        self._record(problem, steering, out)
        return out

    # ---- the decode-only fast path -------------------------------------------------------
    # With nothing waiting and only decodes running, and a monotone latency model, the step
    # the heuristic last chose (every decode, predicted within the target) stays the best one
    # while the decodes' contexts grow: each step adds one token of context per decode, so
    # the latency can grow by at most ``decode_context_ps`` per decode and step. Until that
    # bound reaches the target (or ``fast_decode_steps`` steps have passed), vLLM's own step
    # (every decode) is the decision, and reading the whole state again would only cost time.

    def _fast_step(self, sched: Scheduler) -> bool:
        n_last, latency_ns, k = self._fast  # type: ignore[misc]
        if k >= self.settings.fast_decode_steps or sched.waiting or sched.kv_holding_waiting:
            return False
        running = sched.running
        if len(running) > n_last or any(r.is_prefill_chunk for r in running):
            return False
        bound = latency_ns + ((k + 1) * n_last * self.latency.decode_context_ps) // 1000 + 1
        if bound > self.target_ns:
            return False
        self._fast = (n_last, latency_ns, k + 1)
        self._fast_bound = bound
        return True

    def _run_fast(self, sched: Scheduler, base: Any, throttle_prefills: bool) -> Any:
        out = base(throttle_prefills)
        self.fast += 1
        self.within += 1
        self.predicted_sum_ms += self._fast_bound / NS_PER_MS
        self.last = {
            "step": self.steps,
            "target_ms": self.settings.target_ms,
            "fast": True,
            "predicted_max_ms": self._fast_bound / NS_PER_MS,
            "vllm_tokens": out.total_num_scheduled_tokens,
        }
        if self._log_file is not None:
            self._write(self.last)
        return out

    def _fallback(self, exc: Exception, base: Any, throttle_prefills: bool) -> Any:
        reason = str(exc) if isinstance(exc, _Fallback) else f"{type(exc).__name__}: {exc}"
        reason = reason[:120]
        if reason not in self.fallbacks and len(self.fallbacks) >= 32:
            reason = "other"  # keep the counters bounded whatever the messages
        count = self.fallbacks.get(reason, 0) + 1
        self.fallbacks[reason] = count
        if count == 1 and not isinstance(exc, _Fallback):
            logger.warning("stepopt: step %d left to vLLM (%s)", self.steps, reason)
        self.last = {"step": self.steps, "fallback": reason}
        out = base(throttle_prefills)
        if self._log_file is not None:
            self._write(self.last | {"vllm_tokens": out.total_num_scheduled_tokens})
        return out

    def _record(self, problem: Any, steering: Any, out: Any) -> None:
        self.steered += 1
        predicted = steering.predicted_ns
        scheduled = out.num_scheduled_tokens
        exact = scheduled == steering.tokens
        actual = predicted if exact else self.latency.predict_ns(problem, scheduled)
        self.exact += exact
        self._fast = None
        if (
            exact
            and self._monotone
            and self.settings.fast_decode_steps
            and not problem.waiting
            and actual <= problem.target_ns
            and len(scheduled) == len(problem.running) == len(problem.running_decodes)
        ):
            self._fast = (len(scheduled), actual, 0)
        self.within += actual <= problem.target_ns
        self.predicted_sum_ms += actual / NS_PER_MS
        rec = {
            "step": self.steps,
            "target_ms": problem.target_latency_ms,
            "predicted_ms": predicted / NS_PER_MS,
            "vllm_predicted_ms": actual / NS_PER_MS,
            "tokens": steering.token_budget,
            "batch": len(steering.tokens),
            "admitted": steering.admit,
            "vllm_tokens": out.total_num_scheduled_tokens,
            "exact": exact,
            "reason": steering.reason,
        }
        self.last = rec
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("stepopt step %s", rec)
        if self._log_file is not None:
            self._write(
                rec | {"decision": dict(steering.tokens), "vllm": dict(scheduled), "t": time.time()}
            )
        every = self.settings.log_interval
        if every and self.steps % every == 0:
            self._summary()

    def _summary(self) -> None:
        n = max(self.steered + self.fast, 1)
        logger.info(
            "stepopt: %d steps, %d steered (%.1f%% exact), %d left to vLLM; "
            "%d decode-only steps left to vLLM within a predicted bound; "
            "mean predicted %.3f ms, %.1f%% within the %.3f ms target",
            self.steps,
            self.steered,
            100.0 * self.exact / max(self.steered, 1),
            sum(self.fallbacks.values()),
            self.fast,
            self.predicted_sum_ms / n,
            100.0 * self.within / n,
            self.settings.target_ms,
        )

    def _write(self, rec: dict[str, Any]) -> None:
        assert self._log_file is not None
        self._log_file.write(json.dumps(rec) + "\n")
        self._log_file.flush()

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _minimal_decision(problem: Any) -> Decision:
    """The first request vLLM would serve, with its smallest allowed chunk."""
    first = problem.running[0] if problem.running else problem.waiting[0]
    return Decision.of({first.id: problem.lo(first)})


def _nondecreasing(ys: tuple[int, ...]) -> bool:
    return all(a <= b for a, b in pairwise(ys))


class _Fallback(Exception):
    """A step the optimizer declines; vLLM schedules it."""


class _OptimizedMixin:
    """``schedule()`` steered by a stepopt heuristic; everything else is vLLM's."""

    def __init__(
        self, *args: Any, stepopt_settings: SchedulerSettings | None = None, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.stepopt = _Controller(stepopt_settings or load_settings())

    def schedule(self, throttle_prefills: bool = False):  # type: ignore[override]
        return self.stepopt.schedule(self, super().schedule, throttle_prefills)

    def shutdown(self) -> None:
        self.stepopt.close()
        super().shutdown()  # type: ignore[misc]


class OptimizedScheduler(_OptimizedMixin, AsyncScheduler):
    """vLLM's default asynchronous scheduler, each step steered by a stepopt heuristic.

    ``vllm serve MODEL --scheduler-cls stepopt.integrations.vllm.OptimizedScheduler`` with
    ``STEPOPT_TARGET_MS`` (and optionally ``STEPOPT_PRESET``, ``STEPOPT_OBJECTIVE``,
    ``STEPOPT_HEURISTIC``, ``STEPOPT_CONFIG``) in the environment.
    """


class OptimizedSyncScheduler(_OptimizedMixin, Scheduler):
    """The same for ``--no-async-scheduling``."""
