"""Planning the next step ahead: right after ``update_from_output()`` the state that vLLM's
next ``schedule()`` will see is already there, so the plan for it (the whole-step check, or
read, decide, plan) can be made then and kept until ``schedule()``.

A kept plan is used only if nothing changed in between: the scheduler's hooks drop it on
every change they see (an abort, a prefix-cache reset, draft tokens, a new request unless it
provably cannot change the plan: see ``_Controller.arrived``), and
``schedule()`` compares a fingerprint of the state (queue lengths, the ends of the running
queue, free KV blocks, vLLM's limits) as a second guard against changes made some other way.
Planning is a function of that state and of the decode-only fast path's counters, which are
saved with the plan, so a step planned ahead gets the same decision as one planned inline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Ahead:
    """A plan made after ``update_from_output()``, for the state ``key`` describes."""

    key: tuple[int, ...]
    plan: Any
    fast: tuple[int, int, int] | None  # the fast path's counters once planned
    fast_bound: int
    short: bool = False  # a steered plan whose reading stopped before the queue's end


def queued(sched: Any) -> int:
    """Waiting requests in both of vLLM's queues."""
    return len(sched.kv_holding_waiting) + len(sched.waiting)


def state_key(sched: Any) -> tuple[int, ...]:
    """What must not have changed for a kept plan to hold (O(1))."""
    running = sched.running
    return (
        len(running),
        id(running[0]) if running else 0,
        id(running[-1]) if running else 0,
        len(sched.waiting),
        len(sched.kv_holding_waiting),
        sched.kv_cache_manager.block_pool.get_num_free_blocks(),
        sched.max_num_scheduled_tokens,
        sched.max_num_active_reqs,
        getattr(sched, "num_waiting_for_streaming_input", 0),
    )
