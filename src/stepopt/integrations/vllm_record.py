"""The optimized scheduler's counters, step log and summaries (the recording half of
``stepopt.integrations.vllm_scheduler._Controller``)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stepopt.model import NS_PER_MS

if TYPE_CHECKING:
    from stepopt.integrations.vllm_settings import SchedulerSettings
    from stepopt.latency.model import LatencyModel

# Under vLLM's logger tree, so its handlers and VLLM_LOGGING_LEVEL apply.
logger = logging.getLogger("vllm.stepopt")


class _Fallback(Exception):
    """A step the optimizer declines; vLLM schedules it."""


@dataclass(frozen=True)
class _Declined:
    exc: Exception


@dataclass(frozen=True)
class _Leave:
    """vLLM's own step is the decision (``fast``: the decode-only path), within ``bound_ns``."""

    fast: bool
    bound_ns: int


class StepRecorder:
    """What each step did, counted and logged; failures here never reach vLLM's step."""

    def __init__(self, settings: SchedulerSettings, latency: LatencyModel) -> None:
        self.settings = settings
        self.latency = latency
        self.steps = 0
        self.steered = 0
        self.exact = 0
        self.fallbacks: dict[str, int] = {}
        self.errors: dict[str, int] = {}  # failures after vLLM's step (restore, record, log)
        self.within = 0
        self.predicted_sum_ms = 0.0
        self._last: dict[str, Any] | None = None
        self._pending: tuple[Any, tuple[Any, ...]] | None = None
        self.fast = 0  # decode-only steps left to vLLM within a bound (no reading at all)
        self.whole = 0  # steps left to vLLM because its own step provably fits the target
        self._log_file = None
        if settings.step_log:
            self._log_file = open(settings.step_log, "a", encoding="utf-8")  # noqa: SIM115

    @property
    def last(self) -> dict[str, Any] | None:
        """The last step's record (the step log's line, without the decision)."""
        self.flush()
        return self._last

    @last.setter
    def last(self, rec: dict[str, Any] | None) -> None:
        self._last = rec

    def defer(self, record: Any, *args: Any) -> None:
        """Record a step once vLLM's ``schedule()`` has returned: at the next
        ``update_from_output()`` or ``schedule()`` (or read of the counters through ``last``,
        ``summary()``, ``close()``), so that ``schedule()`` itself does not pay for it."""
        self.flush()
        self._pending = (record, args)

    def flush(self) -> None:
        """Record the deferred step now (a failure is counted in ``errors``, never raised)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._guard("record", pending[0], *pending[1])

    def _arm_fast_after(self, decodes: int, latency_ns: int) -> None:
        """Overridden by the controller: a decode-only step within the target was taken."""

    @property
    def exact_share(self) -> float:
        """Share of the steered steps vLLM carried out exactly as decided."""
        return self.exact / self.steered if self.steered else 1.0

    def _guard(self, stage: str, fn: Any, *args: Any) -> None:
        """Run ``fn`` after vLLM's step: a failure is counted and logged once, never raised
        (vLLM has advanced its state; its output must reach the engine)."""
        try:
            fn(*args)
        except Exception as exc:
            reason = f"{stage}: {type(exc).__name__}: {exc}"[:120]
            if reason not in self.errors and len(self.errors) >= 32:
                reason = "other"
            count = self.errors.get(reason, 0) + 1
            self.errors[reason] = count
            if count == 1:
                with contextlib.suppress(Exception):
                    logger.warning("stepopt: step %d: %s (the step stands)", self.steps, reason)

    def _record_left(self, plan: _Leave, out: Any) -> None:
        if plan.fast:
            self.fast += 1
        else:
            self.whole += 1
        self.within += 1
        self.predicted_sum_ms += plan.bound_ns / NS_PER_MS
        self.last = {
            "step": self.steps,
            "target_ms": self.settings.target_ms,
            "fast": True,
            "path": "decode" if plan.fast else "whole",
            "predicted_max_ms": plan.bound_ns / NS_PER_MS,
            "vllm_tokens": out.total_num_scheduled_tokens,
        }
        if self._log_file is not None:
            self._write(self.last)
        self._maybe_summary()

    @staticmethod
    def _reason(exc: Exception) -> str:
        reason = str(exc) if isinstance(exc, _Fallback) else f"{type(exc).__name__}: {exc}"
        return reason[:120]

    def _count_fallback(self, exc: Exception) -> None:
        reason = self._reason(exc)
        if reason not in self.fallbacks and len(self.fallbacks) >= 32:
            reason = "other"  # keep the counters bounded whatever the messages
        count = self.fallbacks.get(reason, 0) + 1
        self.fallbacks[reason] = count
        if count == 1 and not isinstance(exc, _Fallback):
            logger.warning("stepopt: step %d left to vLLM (%s)", self.steps, reason)
        self.last = {"step": self.steps, "fallback": reason}

    def _record(self, problem: Any, steering: Any, out: Any) -> None:
        self.steered += 1
        predicted = steering.predicted_ns
        scheduled = out.num_scheduled_tokens
        exact = scheduled == steering.tokens
        actual = predicted if exact else self.latency.predict_ns(problem, scheduled)
        self.exact += exact
        if (
            exact
            and not problem.waiting
            and actual <= problem.target_ns
            and len(scheduled) == len(problem.running) == len(problem.running_decodes)
        ):
            self._arm_fast_after(len(scheduled), actual)
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
            "exact_share": round(self.exact_share, 6),
            "reason": steering.reason,
        }
        if not exact:
            rec["vllm_preempted"] = sorted(out.preempted_req_ids)
        self.last = rec
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("stepopt step %s", rec)
        if self._log_file is not None:
            self._write(
                rec | {"decision": dict(steering.tokens), "vllm": dict(scheduled), "t": time.time()}
            )
        self._maybe_summary()

    def _maybe_summary(self) -> None:
        every = self.settings.log_interval
        if every and self.steps % every == 0:
            self._summary()

    def summary(self) -> dict[str, Any]:
        """The counters so far (also the step log's last line at shutdown)."""
        self.flush()
        return {
            "steps": self.steps,
            "steered": self.steered,
            "exact": self.exact,
            "exact_share": round(self.exact_share, 6),
            "left_to_vllm_decode_only": self.fast,
            "left_to_vllm_whole_step": self.whole,
            "fallbacks": sum(self.fallbacks.values()),
            "errors": sum(self.errors.values()),
        }

    def _summary(self) -> None:
        n = max(self.steered + self.fast + self.whole, 1)
        logger.info(
            "stepopt: %d steps, %d steered (%.1f%% carried out exactly), %d left to vLLM "
            "(errors), %d left to vLLM within a predicted bound; "
            "mean predicted %.3f ms, %.1f%% within the %.3f ms target",
            self.steps,
            self.steered,
            100.0 * self.exact_share,
            sum(self.fallbacks.values()),
            self.fast + self.whole,
            self.predicted_sum_ms / n,
            100.0 * self.within / n,
            self.settings.target_ms,
        )

    def _write(self, rec: dict[str, Any]) -> None:
        assert self._log_file is not None
        self._log_file.write(json.dumps(rec) + "\n")
        self._log_file.flush()

    def close(self) -> None:
        self.flush()
        if self._log_file is not None:
            with contextlib.suppress(Exception):
                self._write({"summary": self.summary()})
            with contextlib.suppress(Exception):
                self._log_file.close()
            self._log_file = None
