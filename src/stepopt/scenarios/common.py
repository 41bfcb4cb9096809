"""What every generator shares: options, the regime mix, the queue model, targets, dimensions.

A generator turns ``(options, index)`` into one :class:`Scenario` using only
``numpy.random.default_rng([seed, index])``, so problem ``i`` depends on the seed and ``i``
alone (``--count 10`` is a prefix of ``--count 100``) and the same seed writes byte-identical
files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from stepopt.errors import InputError
from stepopt.latency.capacity import blocks_held, default_num_free_blocks
from stepopt.latency.model import LatencyModel
from stepopt.model import EngineConfig, Request, StepProblem

# Config-knob families in which a greedy fill is known to lose (FORMULATION.md, last section).
# Non-convex F_tok, per-request attention and |L - T| are present in every problem (measured
# presets, the target objective); these regimes add the constraints on top.
REGIMES: tuple[str, ...] = ("base", "threshold", "min_chunk", "ncap", "kv", "mixed")
MIX = "mix"


@dataclass(frozen=True)
class GenerateOptions:
    """Knobs shared by every source. ``None`` means "mix" (drawn per problem)."""

    count: int = 100
    seed: int = 0
    presets: tuple[str, ...] = ("demo",)
    target_ms: float | None = None  # None: derived per state (see derive_target_ms)
    target_factor: tuple[float, float] = (0.8, 1.6)
    objective: str | None = None  # target | goodput | None = mix
    priority_mode: str | None = None  # strict | weighted | None = mix
    regimes: tuple[str, ...] = REGIMES
    load: float | None = None  # None: uniform in load_range
    load_range: tuple[float, float] = (0.3, 1.3)
    concurrency: int = 48  # running requests of the engine at load 1
    max_waiting: int = 64
    budgets: tuple[int, ...] = (2048, 4096, 8192)
    reference_chunk: int = 512
    # Share of GPU memory for weights + KV (vLLM's gpu_memory_utilization). With a preset that
    # states its KV size, running requests that could not fit are dropped and num_free_blocks
    # is what is left; None: no KV limit (presets without a KV size never have one).
    memory_share: float | None = 0.9

    def __post_init__(self) -> None:
        if self.count < 0:
            raise InputError("count", "must be >= 0", self.count)
        if self.objective not in (None, "target", "goodput"):
            raise InputError("objective", "must be target, goodput or mix", self.objective)
        if self.priority_mode not in (None, "strict", "weighted"):
            raise InputError("priority_mode", "must be strict, weighted or mix", self.priority_mode)
        if self.target_ms is not None and not self.target_ms > 0:
            raise InputError("target_ms", "must be > 0", self.target_ms)
        if self.load is not None and not self.load > 0:
            raise InputError("load", "must be > 0", self.load)
        for r in self.regimes:
            if r not in REGIMES:
                raise InputError("regime", f"unknown regime; valid: {', '.join(REGIMES)}", r)
        if not self.regimes:
            raise InputError("regime", "at least one regime is needed", "")
        if not self.presets:
            raise InputError("preset", "at least one preset is needed", "")
        if self.memory_share is not None and not 0 < self.memory_share <= 1:
            raise InputError("memory_share", "must be in (0, 1]", self.memory_share)


@dataclass
class Scenario:
    """One generated problem and the knobs that made it (they go to manifest.json)."""

    problem: StepProblem
    meta: dict[str, Any] = field(default_factory=dict)


def rng_for(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


def pick(rng: np.random.Generator, values: tuple[Any, ...]) -> Any:
    return values[int(rng.integers(len(values)))]


def draw_load(rng: np.random.Generator, opts: GenerateOptions) -> float:
    if opts.load is not None:
        return float(opts.load)
    lo, hi = opts.load_range
    return round(float(rng.uniform(lo, hi)), 3)


def queue_lengths(rng: np.random.Generator, load: float, opts: GenerateOptions) -> tuple[int, int]:
    """Running and waiting queue lengths of an engine at utilization ``load``.

    Running: Poisson with mean ``load * concurrency`` (at least 1). Waiting: below saturation
    geometric with the M/M/1 mean ``load**2 / (1 - load)``; at or above saturation the queue has
    been growing, so uniform in ``[concurrency/4, concurrency]``. Both capped (solver size).
    """
    n_run = max(1, int(rng.poisson(load * opts.concurrency)))
    if load < 0.999:
        mean = load * load / (1.0 - load)
        n_wait = int(rng.geometric(1.0 / (1.0 + mean))) - 1
    else:
        n_wait = int(rng.integers(max(1, opts.concurrency // 4), opts.concurrency + 1))
    return min(n_run, 4 * opts.concurrency), min(n_wait, opts.max_waiting)


def short_prompt_burst(
    rng: np.random.Generator, start_time: float, prefix: str = "s"
) -> list[Request]:
    """Many short prompts arriving together: the N cap binds before the token budget does."""
    n = int(rng.integers(16, 41))
    lengths = rng.integers(8, 65, size=n)
    return [
        Request(f"{prefix}{k}", int(p), 0, 0, round(start_time + 0.001 * k, 6))
        for k, p in enumerate(lengths)
    ]


def assign_priorities(
    rng: np.random.Generator, requests: list[Request], levels: int = 4, share: float = 0.5
) -> list[Request]:
    """Give about ``share`` of the requests a non-default priority in ``0..levels-1``."""
    out = []
    for r in requests:
        p = int(rng.integers(0, levels)) if rng.random() < share else 0
        out.append(replace(r, priority=p))
    return out


def blocks_needed(problem: StepProblem) -> int:
    """New KV blocks if every request got its full ``hi`` (an upper bound on any decision)."""
    return sum(problem.new_blocks(r, problem.hi(r)) for r in problem.requests)


def fit_kv(
    latency: LatencyModel, running: list[Request], block_size: int, share: float | None
) -> tuple[list[Request], tuple[int, int] | None]:
    """Running requests that fit the preset's KV cache (the latest admitted dropped first, as
    vLLM preempts), and ``(dropped, total blocks)``; ``None`` without a KV size."""
    total = None if share is None else default_num_free_blocks(latency, share, block_size)
    if total is None:
        return running, None
    kept = list(running)
    while kept and blocks_held((r.computed_tokens for r in kept), block_size) > total:
        kept.pop()
    return kept, (len(running) - len(kept), total)


def apply_regime(
    rng: np.random.Generator,
    regime: str,
    running: list[Request],
    waiting: list[Request],
    budget: int,
) -> tuple[EngineConfig, list[Request], dict[str, Any]]:
    """Engine config (and, for ``ncap``, extra waiting requests) of one regime."""
    threshold, min_chunk, max_reqs = 0, 64, 256
    knobs: dict[str, Any] = {}
    if regime in ("threshold", "mixed"):
        threshold = int(pick(rng, (128, 256, 512)))
    if regime in ("min_chunk", "mixed"):
        min_chunk = int(pick(rng, (128, 256, 512)))
    if regime == "ncap":
        t0 = max((r.arrival_time for r in waiting), default=0.0)
        waiting = waiting + short_prompt_burst(rng, t0 + 0.001)
        max_reqs = len(running) + int(rng.integers(1, 9))
    max_reqs = max(max_reqs, len(running))
    cfg = EngineConfig(
        max_num_scheduled_tokens=budget,
        max_num_running_reqs=max_reqs,
        long_prefill_token_threshold=threshold,
        min_prefill_chunk=min_chunk,
    )
    if regime in ("kv", "mixed"):
        knobs["kv_fraction"] = round(float(rng.uniform(0.1, 0.6)), 3)
    return cfg, waiting, knobs


def limit_kv(problem: StepProblem, fraction: float) -> StepProblem:
    """Free KV blocks = ``fraction`` of what scheduling everything at ``hi`` would need."""
    need = blocks_needed(problem)
    free = max(1, math.floor(need * fraction))
    cfg = problem.config
    new = EngineConfig(
        cfg.max_num_scheduled_tokens,
        cfg.max_num_running_reqs,
        cfg.long_prefill_token_threshold,
        cfg.min_prefill_chunk,
        cfg.block_size,
        free,
    )
    return problem.with_changes(config=new)


def reference_latency_ms(problem: StepProblem, chunk: int = 512) -> float:
    """Latency of a typical full batch of this state: every running decode plus one fresh
    prefill chunk of ``chunk`` tokens (no cached tokens)."""
    lat = problem.latency
    decs = problem.running_decodes
    ctx = sum(r.computed_tokens for r in decs)
    n_tok = len(decs) + chunk
    ns = lat.step_ns(n_tok, len(decs) + 1, ctx, lat.prefill(chunk, 0, chunk))
    return ns / 1e6


def derive_target_ms(problem: StepProblem, factor: float, chunk: int = 512) -> float:
    """Default target: ``factor`` x the reference batch latency, rounded to the microsecond."""
    return round(max(reference_latency_ms(problem, chunk) * factor, 0.001), 3)


def finish_problem(
    rng: np.random.Generator,
    opts: GenerateOptions,
    latency: LatencyModel,
    running: list[Request],
    waiting: list[Request],
    meta: dict[str, Any],
) -> Scenario:
    """Pick regime, objective, priority mode and target; build the problem and its record."""
    regime = pick(rng, opts.regimes)
    budget = int(pick(rng, opts.budgets))
    objective = opts.objective or pick(rng, ("target", "goodput"))
    mode = opts.priority_mode or pick(rng, ("strict", "weighted"))
    levels = 4 if mode == "weighted" else 3
    running = assign_priorities(rng, running, levels, 0.5 if mode == "weighted" else 0.0)
    waiting = assign_priorities(rng, waiting, levels, 0.5)
    cfg, waiting, knobs = apply_regime(rng, regime, running, waiting, budget)
    running, free = fit_kv(latency, running, cfg.block_size, opts.memory_share)
    if free is not None:
        knobs["kv_capacity_blocks"] = free[1]
        if free[0]:
            knobs["kv_dropped_running"] = free[0]
        cfg = replace(
            cfg,
            num_free_blocks=free[1]
            - blocks_held((r.computed_tokens for r in running), cfg.block_size),
        )
    if regime == "ncap" and mode == "weighted":
        # The burst of short prompts is urgent: it competes with longer, lower-weight work.
        waiting = [
            replace(r, computed_tokens=0, priority=0) if r.id.startswith("s") else r
            for r in waiting
        ]
    problem = StepProblem(
        running=tuple(running),
        waiting=tuple(waiting),
        config=cfg,
        latency=latency,
        target_latency_ms=1.0,
        objective=objective,
        priority_mode=mode,
    )
    if "kv_fraction" in knobs:
        limited = limit_kv(problem, knobs["kv_fraction"])
        if cfg.num_free_blocks is None or limited.config.num_free_blocks < cfg.num_free_blocks:
            problem = limited
    if opts.target_ms is not None:
        factor = None
        target = float(opts.target_ms)
    else:
        factor = round(float(rng.uniform(*opts.target_factor)), 3)
        target = derive_target_ms(problem, factor, opts.reference_chunk)
    problem = problem.with_changes(target_latency_ms=target)
    meta = {
        **meta,
        "regime": regime,
        "objective": objective,
        "priority_mode": mode,
        "target_ms": target,
        "target_factor": factor,
        "budget": budget,
        **knobs,
    }
    return Scenario(problem, meta)


def problem_dims(problem: StepProblem) -> dict[str, Any]:
    """Structural dimensions of any problem (also for files without a manifest)."""
    cfg = problem.config
    demand = sum(problem.hi(r) for r in problem.requests)
    return {
        "preset": problem.latency.name,
        "objective": problem.objective,
        "priority_mode": problem.priority_mode,
        "target_ms": problem.target_latency_ms,
        "queue_size": len(problem.requests),
        "n_running": len(problem.running),
        "n_decodes": len(problem.running_decodes),
        "n_prefills": len(problem.running_prefills),
        "n_waiting": len(problem.waiting),
        "budget": cfg.max_num_scheduled_tokens,
        "demand_ratio": round(demand / cfg.max_num_scheduled_tokens, 4),
        "threshold": cfg.long_prefill_token_threshold,
        "min_chunk": cfg.min_prefill_chunk,
        "max_running": cfg.max_num_running_reqs,
        "kv_limited": cfg.num_free_blocks is not None,
    }
