"""Small factories for tests, with keyword defaults (in the style of vLLM's test utils)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.latency.presets import load_preset
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.model import EngineConfig, Request, StepProblem


def decode(
    id: str, context: int = 512, *, priority: int = 0, arrival_time: float = 0.0, prompt: int = 0
) -> Request:
    """A running request in decode with ``context`` tokens in its KV cache."""
    prompt = prompt or max(1, context // 2)
    return Request(id, prompt, context, priority, arrival_time)


def prefill(
    id: str,
    prompt: int = 800,
    computed: int = 128,
    *,
    priority: int = 0,
    arrival_time: float = 0.0,
) -> Request:
    """A running request in chunked prefill (``computed < prompt``)."""
    return Request(id, prompt, computed, priority, arrival_time)


def waiting(
    id: str, prompt: int = 800, *, priority: int = 0, arrival_time: float = 0.0, cached: int = 0
) -> Request:
    """A waiting request (``cached`` = prefix-cache hit)."""
    return Request(id, prompt, cached, priority, arrival_time)


def linear_latency(
    per_token_ns: int = 50_000,
    base_ns: int = 5_000_000,
    per_request_ns: int = 0,
    decode_context_ps: int = 0,
    alpha_ns: float = 0.0,
    beta_ns: float = 0.0,
    max_tokens: int = 65_536,
) -> LatencyModel:
    """A latency model linear in the tokens (handy for hand-checked tests)."""
    return LatencyModel(
        tokens=PiecewiseLinear((0, max_tokens), (base_ns, base_ns + per_token_ns * max_tokens)),
        batch=PiecewiseLinear((0, 1024), (0, per_request_ns * 1024)),
        decode_context_ps=decode_context_ps,
        prefill=PrefillAttention(alpha_ns, beta_ns),
        name="linear",
    )


def make_problem(
    running: Iterable[Request] = (),
    waiting: Iterable[Request] = (),
    *,
    preset: str = "demo",
    latency: LatencyModel | None = None,
    target_ms: float = 50.0,
    objective: str = "target",
    priority_mode: str = "strict",
    **config: Any,
) -> StepProblem:
    """A problem with keyword defaults; ``config`` keys are :class:`EngineConfig` fields."""
    return StepProblem(
        running=tuple(running),
        waiting=tuple(waiting),
        config=EngineConfig(**config),
        latency=latency if latency is not None else load_preset(preset),
        target_latency_ms=target_ms,
        objective=objective,  # type: ignore[arg-type]
        priority_mode=priority_mode,  # type: ignore[arg-type]
    )


def decodes(n: int, context: int = 512, prefix: str = "d") -> list[Request]:
    return [decode(f"{prefix}{k}", context + k) for k in range(n)]


def waitings(prompts: Sequence[int], prefix: str = "w") -> list[Request]:
    return [waiting(f"{prefix}{k}", p, arrival_time=float(k)) for k, p in enumerate(prompts)]
