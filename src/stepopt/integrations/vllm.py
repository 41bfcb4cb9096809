"""vLLM V1 integration: read a live scheduler's state as a :class:`StepProblem`, and steer
vLLM's own ``schedule()`` to carry out a :class:`Decision`.

Reading the state needs no vLLM import (the scheduler's attributes are read as they are), so
this module imports without vLLM; only :class:`OptimizedScheduler`, which subclasses vLLM's
``AsyncScheduler``, needs the optional extra and is built on first access::

    vllm serve MODEL --scheduler-cls stepopt.integrations.vllm.OptimizedScheduler

The parts: ``vllm_read`` (state -> problem), ``vllm_steering`` (decision -> vLLM's limits),
``vllm_scheduler`` (the scheduler classes). How vLLM 0.33 allocates the tokens of one step, and
what this adapter maps to what, is written down in docs/vllm.md.
"""

from __future__ import annotations

from typing import Any

from stepopt.errors import MissingExtraError
from stepopt.integrations.vllm_read import (
    SchedulerView,
    UnsupportedStateError,
    problem_from_scheduler,
    scheduled_decision,
)
from stepopt.integrations.vllm_steering import (
    Steering,
    apply_steering,
    plan_steering,
    restore_steering,
)

# Also OptimizedScheduler and OptimizedSyncScheduler, built on first access (module __getattr__).
__all__ = [
    "SchedulerView",
    "Steering",
    "UnsupportedStateError",
    "apply_steering",
    "plan_steering",
    "problem_from_scheduler",
    "restore_steering",
    "scheduled_decision",
]

_CLASSES = {"OptimizedScheduler": "async", "OptimizedSyncScheduler": "sync"}


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        try:
            from stepopt.integrations import vllm_scheduler
        except ImportError as exc:
            if exc.name is not None and exc.name.split(".")[0] == "vllm":
                raise MissingExtraError(
                    "vllm", "vllm", f"stepopt.integrations.vllm.{name}"
                ) from exc
            raise
        cls = getattr(vllm_scheduler, name)
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
