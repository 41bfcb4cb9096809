"""The simulator's records: engine limits and switches, per-request state, a run's result.

:mod:`stepopt.simulate.engine` runs the step loop over these; docs/simulate.md describes the
request lifecycle.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from stepopt.errors import InputError, StepoptError
from stepopt.limits import MAX_BLOCKS, MAX_REQUESTS, MAX_TOKENS, check_int
from stepopt.model import (
    OBJECTIVES,
    PRIORITY_MODES,
    EngineConfig,
    Objective,
    PriorityMode,
    Request,
    make_request,
)
from stepopt.simulate.trace import NS_PER_S

PENDING, WAITING, RUNNING, FINISHED, REJECTED = range(5)
STATUS_NAMES = ("pending", "waiting", "running", "finished", "rejected")


class SimulationError(StepoptError):
    """A policy's decision broke a rule (or made no progress): names the step and the rule."""

    def __init__(self, step: int, t_ns: int, policy: str, rule: str, message: str):
        self.step, self.rule = step, rule
        super().__init__(
            f"step {step} (t={t_ns / NS_PER_S:.6f} s), policy {policy!r}: rule {rule}: {message}"
        )


@dataclass(frozen=True)
class SimConfig:
    """Engine limits and simulator switches.

    ``kv_blocks`` is the engine's total KV cache in blocks of ``engine.block_size`` tokens
    (None: unlimited, no preemption); ``engine.num_free_blocks`` is ignored, each step's
    problem gets the blocks left. ``validate`` judges every decision with the evaluator's
    hard rules (the physical checks — unknown ids, token counts, budget, concurrency, KV — run
    always). ``record_decisions`` keeps every step's decision for the plan file.
    """

    engine: EngineConfig = field(default_factory=EngineConfig)
    kv_blocks: int | None = None
    objective: Objective = "target"
    priority_mode: PriorityMode = "strict"
    validate: bool = True
    record_decisions: bool = False
    max_steps: int | None = None

    def __post_init__(self) -> None:
        e = self.engine
        for name, lo, hi in (
            ("max_num_scheduled_tokens", 1, MAX_TOKENS),
            ("max_num_running_reqs", 1, MAX_REQUESTS),
            ("long_prefill_token_threshold", 0, MAX_TOKENS),
            ("min_prefill_chunk", 1, MAX_TOKENS),
            ("block_size", 1, MAX_TOKENS),
        ):
            check_int(getattr(e, name), name, lo, hi)
        if self.kv_blocks is not None:
            check_int(self.kv_blocks, "kv_blocks", 1, MAX_BLOCKS)
        if self.objective not in OBJECTIVES:
            raise InputError("objective", f"must be one of {', '.join(OBJECTIVES)}", self.objective)
        if self.priority_mode not in PRIORITY_MODES:
            raise InputError(
                "priority_mode", f"must be one of {', '.join(PRIORITY_MODES)}", self.priority_mode
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError("max_steps", "must be >= 1", self.max_steps)


class _Req:
    """Mutable per-request state (the simulator's own; policies see :class:`Request`)."""

    __slots__ = (
        "arrival_ns",
        "arrival_s",
        "blocks",
        "computed",
        "emitted",
        "finish_ns",
        "first_ns",
        "id",
        "idx",
        "key",
        "output",
        "preemptions",
        "priority",
        "prompt",
        "req",
        "seq",
        "target",
        "times",
        "where",
    )

    def __init__(self, idx: int, rid: str, arrival_ns: int, prompt: int, output: int, prio: int):
        self.idx = idx
        self.id = rid
        self.arrival_ns = arrival_ns
        self.arrival_s = arrival_ns / NS_PER_S
        self.prompt = prompt
        self.output = output
        self.priority = prio
        self.target = prompt  # prompt tokens to (re)compute: prompt + emitted after preemption
        self.computed = 0
        self.emitted = 0
        self.blocks = 0
        self.where = PENDING
        self.req: Request | None = None
        self.seq = -1  # admission sequence number (preemption victims: the latest admitted)
        self.key = (prio, arrival_ns, idx)  # == (priority, arrival_time, id) order
        self.times: array | None = None  # emission time of every output token, ns
        self.first_ns = -1
        self.finish_ns = -1
        self.preemptions = 0


def _request(s: _Req) -> Request:
    return make_request(s.id, s.target, s.computed, s.priority, s.arrival_s, s.output)


def _key(s: _Req) -> tuple[int, int, int]:
    """The waiting queue's sort key (admission order)."""
    return s.key


@dataclass
class SimResult:
    """What a run produced: per-step columns, per-request state, counters."""

    policy: str
    target_rule: str
    source: str
    preset: str
    config: SimConfig
    steps: dict[str, list[Any]]
    requests: list[_Req]
    stats: dict[str, Any]
    decisions: list[dict[str, int]] | None = None
    preempted: list[tuple[str, ...]] | None = None

    @property
    def num_steps(self) -> int:
        return len(self.steps["step"])


_STEP_COLUMNS = (
    "step",
    "time_ns",
    "latency_ns",
    "target_ms",
    "n_running",
    "n_waiting",
    "batch_size",
    "scheduled_tokens",
    "prefill_tokens",
    "decode_tokens",
    "n_admitted",
    "n_preempted",
    "n_finished",
    "free_blocks",
    "source",
    "decide_us",
)
