"""The window problem: a start state, the arrivals of the window, SLOs and K steps.

Times are integer nanoseconds (exact, like every latency). A request is described by the
tokens it must prefill (``prompt_tokens``, for a preempted request the prompt plus what it
had emitted, as the simulator recomputes it), the tokens already in its KV cache
(``computed_tokens``), its output length and the output tokens it has already emitted.
docs/horizon.md defines the window semantics and the SLO of a request within a window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from stepopt.latency.model import LatencyModel
from stepopt.model import EngineConfig, PriorityMode, Request

SloWeights = Literal["unweighted", "priority"]
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class WindowRequest:
    """One request of a window; ``arrival_ns`` > the window start for an arrival."""

    id: str
    prompt_tokens: int
    output_tokens: int
    arrival_ns: int
    computed_tokens: int = 0
    emitted_tokens: int = 0
    priority: int = 0
    ttft_ms: float | None = None  # per-request TTFT deadline (overrides the class / default)
    first_token_ns: int | None = None  # when emitted_tokens > 0
    last_token_ns: int | None = None  # when emitted_tokens > 0
    running: bool = False  # admitted at the window start (holds a slot and KV blocks)

    @property
    def decoding(self) -> bool:
        return self.computed_tokens >= self.prompt_tokens

    @property
    def final_computed(self) -> int:
        """Computed tokens when the request finishes: every emission after the prompt is one
        more computed token, and completing the prompt emits one too."""
        left = self.output_tokens - self.emitted_tokens
        if self.decoding:
            return self.computed_tokens + left
        return self.prompt_tokens + left - 1

    def as_request(self) -> Request:
        return Request(
            self.id,
            self.prompt_tokens,
            self.computed_tokens,
            self.priority,
            self.arrival_ns / NS_PER_S,
            self.output_tokens,
        )


@dataclass(frozen=True, slots=True)
class Slo:
    """TTFT deadline (default, per priority class) and the bound on every inter-token gap."""

    ttft_ms: float
    tbt_ms: float
    ttft_ms_by_priority: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class WindowProblem:
    """K steps from ``start_ns``; ``requests``: running, then waiting, then arrivals."""

    start_ns: int
    requests: tuple[WindowRequest, ...]
    config: EngineConfig
    latency: LatencyModel
    slo: Slo
    steps: int
    priority_mode: PriorityMode = "strict"
    slo_weights: SloWeights = "unweighted"
    name: str = "window"
    meta: dict = field(default_factory=dict, compare=False)

    @cached_property
    def by_id(self) -> dict[str, WindowRequest]:
        return {r.id: r for r in self.requests}

    def ttft_ns(self, r: WindowRequest) -> int:
        """The TTFT deadline of ``r`` in ns (per request, else its class, else the default)."""
        ms = r.ttft_ms
        if ms is None:
            ms = dict(self.slo.ttft_ms_by_priority).get(r.priority, self.slo.ttft_ms)
        return round(ms * NS_PER_MS)

    @cached_property
    def tbt_ns(self) -> int:
        return round(self.slo.tbt_ms * NS_PER_MS)

    @cached_property
    def slo_weight(self) -> dict[str, int]:
        """Weight of meeting a request's SLO: 1, or ``1 + max_priority - priority``."""
        if self.slo_weights == "unweighted" or not self.requests:
            return {r.id: 1 for r in self.requests}
        top = max(r.priority for r in self.requests)
        return {r.id: 1 + top - r.priority for r in self.requests}

    @cached_property
    def kv_total(self) -> int | None:
        """KV blocks of the engine: free at the start plus those the running requests hold."""
        free = self.config.num_free_blocks
        if free is None:
            return None
        bs = self.config.block_size
        return free + sum(-(-r.computed_tokens // bs) for r in self.requests if r.running)
