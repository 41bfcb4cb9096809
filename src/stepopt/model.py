"""The step problem: requests, engine configuration, the problem itself and the decision.

Plain frozen dataclasses: cheap to build on the hot path (a heuristic called every engine step).
Validation of user input happens once, at the edge (``stepopt.io``); the constructors here only
check what would make the arithmetic meaningless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from stepopt.latency.model import LatencyModel

Objective = Literal["target", "goodput"]
PriorityMode = Literal["strict", "weighted"]
OBJECTIVES: tuple[Objective, ...] = ("target", "goodput")
PRIORITY_MODES: tuple[PriorityMode, ...] = ("strict", "weighted")

NS_PER_MS = 1_000_000


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the scheduler sees it at this step.

    ``computed_tokens`` counts the tokens already in the KV cache. A running request with
    ``computed_tokens >= prompt_tokens`` is decoding (it needs exactly one token); otherwise it
    is in chunked prefill with ``prompt_tokens - computed_tokens`` prompt tokens left.
    ``priority``: lower value = more urgent, as in vLLM.
    """

    id: str
    prompt_tokens: int
    computed_tokens: int = 0
    priority: int = 0
    arrival_time: float = 0.0
    output_tokens: int | None = None

    @property
    def is_decode(self) -> bool:
        return self.computed_tokens >= self.prompt_tokens

    @property
    def remaining_prompt(self) -> int:
        """Prompt tokens still to prefill (0 for a decode)."""
        return max(self.prompt_tokens - self.computed_tokens, 0)


def _request_factory() -> Callable[..., Request]:
    """The fast constructor behind :func:`make_request`: it sets the slots directly (a frozen
    dataclass's ``__init__`` pays an ``object.__setattr__`` per field), about three times
    faster; every field after the sixth gets its default, so adding a field keeps it valid."""
    fs = fields(Request)
    head = ("id", "prompt_tokens", "computed_tokens", "priority", "arrival_time", "output_tokens")
    if tuple(f.name for f in fs[:6]) != head or any(f.default is MISSING for f in fs[6:]):
        raise TypeError("make_request: Request's leading fields changed; update the factory")
    sets = [Request.__dict__[f.name].__set__ for f in fs]
    s_id, s_prompt, s_computed, s_prio, s_arrival, s_output = sets[:6]
    rest = [(setter, f.default) for setter, f in zip(sets[6:], fs[6:], strict=True)]
    new = object.__new__

    def make(
        id: str,
        prompt_tokens: int,
        computed_tokens: int = 0,
        priority: int = 0,
        arrival_time: float = 0.0,
        output_tokens: int | None = None,
    ) -> Request:
        r = new(Request)
        s_id(r, id)
        s_prompt(r, prompt_tokens)
        s_computed(r, computed_tokens)
        s_prio(r, priority)
        s_arrival(r, arrival_time)
        s_output(r, output_tokens)
        for setter, default in rest:
            setter(r, default)
        return r

    # For a loop that must inline the factory (the simulator's): the six slot setters, and
    # the (setter, default) pairs of any later field, which such a loop must not skip.
    make.setters = (s_id, s_prompt, s_computed, s_prio, s_arrival, s_output)  # type: ignore[attr-defined]
    make.rest = tuple(rest)  # type: ignore[attr-defined]
    return make


make_request = _request_factory()
"""``Request(...)`` without the frozen-dataclass overhead, for the hot paths that build hundreds
per step (the simulator, the vLLM adapter). Same object, same fields."""


def new_blocks(computed: int, n: int, block_size: int) -> int:
    """KV blocks that ``n`` more tokens take after ``computed`` cached ones:
    ``ceil((C + n) / bs) - ceil(C / bs)`` (the last block of the cached tokens may have room
    left). The one definition; the heuristics' hottest loops inline it, and
    tests/test_heuristics_kv.py checks those copies against it."""
    return -(-(computed + n) // block_size) + (-computed // block_size)  # ceil is -(-x // bs)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The engine's per-step limits (vLLM names where vLLM has them)."""

    max_num_scheduled_tokens: int = 8192
    max_num_running_reqs: int = 256
    long_prefill_token_threshold: int = 0  # 0 = no cap, as in vLLM
    min_prefill_chunk: int = 64
    block_size: int = 16
    num_free_blocks: int | None = None  # None = unlimited KV capacity


@dataclass(frozen=True)
class StepProblem:
    """One scheduling step: queues, limits, latency model, target and objective."""

    running: tuple[Request, ...]
    waiting: tuple[Request, ...]
    config: EngineConfig
    latency: LatencyModel
    target_latency_ms: float
    objective: Objective = "target"
    priority_mode: PriorityMode = "strict"

    def __post_init__(self) -> None:
        # Accept any iterable of requests but store tuples, so the problem stays immutable.
        if not isinstance(self.running, tuple):
            object.__setattr__(self, "running", tuple(self.running))
        if not isinstance(self.waiting, tuple):
            object.__setattr__(self, "waiting", tuple(self.waiting))

    # ---- derived views, computed once per problem -------------------------------------
    @cached_property
    def target_ns(self) -> int:
        return round(self.target_latency_ms * NS_PER_MS)

    @cached_property
    def requests(self) -> tuple[Request, ...]:
        """Running requests first (in queue order), then waiting ones (in queue order)."""
        return self.running + self.waiting

    @cached_property
    def by_id(self) -> dict[str, Request]:
        return {r.id: r for r in self.requests}

    @cached_property
    def waiting_ids(self) -> frozenset[str]:
        return frozenset(r.id for r in self.waiting)

    @cached_property
    def running_ids(self) -> frozenset[str]:
        return frozenset(r.id for r in self.running)

    @cached_property
    def waiting_order(self) -> tuple[Request, ...]:
        """Waiting requests in admission order: (priority, arrival_time, id)."""
        return tuple(sorted(self.waiting, key=lambda r: (r.priority, r.arrival_time, r.id)))

    @cached_property
    def running_decodes(self) -> tuple[Request, ...]:
        return tuple(r for r in self.running if r.is_decode)

    @cached_property
    def running_prefills(self) -> tuple[Request, ...]:
        return tuple(r for r in self.running if not r.is_decode)

    @cached_property
    def free_slots(self) -> int:
        """How many waiting requests may be admitted (running ones keep their slots)."""
        return max(self.config.max_num_running_reqs - len(self.running), 0)

    def hi(self, r: Request) -> int:
        """Most tokens ``r`` may get this step (1 for a decode, the capped chunk otherwise)."""
        if r.is_decode:
            return 1
        thr = self.config.long_prefill_token_threshold
        rem = r.remaining_prompt
        return min(rem, thr) if thr > 0 else rem

    def lo(self, r: Request) -> int:
        """Fewest tokens ``r`` may get when scheduled (the smallest chunk worth starting)."""
        if r.is_decode:
            return 1
        return min(self.config.min_prefill_chunk, self.hi(r))

    def new_blocks(self, r: Request, n: int) -> int:
        """KV blocks that ``n`` more tokens of ``r`` take (:func:`new_blocks`)."""
        return new_blocks(r.computed_tokens, n, self.config.block_size)

    def held_blocks(self, r: Request) -> int:
        """KV blocks ``r`` holds now (what preempting it frees)."""
        return -(-r.computed_tokens // self.config.block_size)

    @cached_property
    def weights(self) -> dict[str, int]:
        """Objective weight per request: all 1 in strict mode; in weighted mode
        ``1 + max_priority - priority`` so that the most urgent request weighs most."""
        if self.priority_mode == "strict" or not self.requests:
            return {r.id: 1 for r in self.requests}
        top = max(r.priority for r in self.requests)
        return {r.id: 1 + top - r.priority for r in self.requests}

    def with_changes(self, **changes: object) -> StepProblem:
        """A copy with some fields replaced (derived views are recomputed)."""
        fields = {
            "running": self.running,
            "waiting": self.waiting,
            "config": self.config,
            "latency": self.latency,
            "target_latency_ms": self.target_latency_ms,
            "objective": self.objective,
            "priority_mode": self.priority_mode,
        }
        fields.update(changes)
        return StepProblem(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Decision:
    """Tokens per request id for this step; absent ids get 0 (like vLLM's
    ``num_scheduled_tokens``). ``preempted`` lists running requests an algorithm evicted."""

    tokens: Mapping[str, int] = field(default_factory=dict)
    preempted: tuple[str, ...] = ()

    @classmethod
    def of(cls, pairs: Mapping[str, int] | Iterable[tuple[str, int]]) -> Decision:
        """Build a decision, dropping zero entries so equal schedules compare equal."""
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        return cls(tokens={k: v for k, v in items if v != 0})

    def get(self, request_id: str) -> int:
        return self.tokens.get(request_id, 0)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens.values())

    def scheduled(self) -> dict[str, int]:
        """The non-zero entries."""
        return {k: v for k, v in self.tokens.items() if v != 0}
