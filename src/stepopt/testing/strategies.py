"""Hypothesis strategies that build valid step problems.

``problems()`` draws small problems (a few requests, short prompts, small budgets) with random,
often non-convex latency curves scaled to the problem, so that exact solvers and the
brute-force oracle can solve them and so that greedy choices are not optimal by construction.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.latency.presets import load_preset
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.model import OBJECTIVES, PRIORITY_MODES, EngineConfig, Request, StepProblem


@st.composite
def curves(draw: Any, max_x: int, max_y_ns: int, max_points: int = 5) -> PiecewiseLinear:
    """A random piecewise-linear curve on ``[0, max_x]``: any shape, non-negative values.

    The last piece does not slope down: it is extended beyond ``max_x``, where a downward
    piece would cross 0, and a model that can give a negative latency is refused at load
    time (docs/formulation.md)."""
    n = draw(st.integers(1, max_points))
    inner = draw(
        st.lists(st.integers(1, max(max_x - 1, 1)), min_size=0, max_size=n - 1, unique=True)
    )
    xs = sorted({0, *inner, max_x})
    base = draw(st.integers(0, max_y_ns // 4))
    ys = [base]
    for _ in xs[1:]:
        step = draw(st.integers(-max_y_ns // 8, max_y_ns // 2))
        ys.append(max(0, ys[-1] + step))
    if len(ys) > 1:
        ys[-1] = max(ys[-1], ys[-2])
    return PiecewiseLinear(tuple(xs), tuple(ys))


@st.composite
def latency_models(draw: Any, max_tokens: int, max_batch: int) -> LatencyModel:
    return LatencyModel(
        tokens=draw(curves(max_tokens, 4_000_000)),
        batch=draw(curves(max_batch, 800_000, max_points=3)),
        decode_context_ps=draw(st.sampled_from([0, 1_000, 37_500, 350_000])),
        prefill=PrefillAttention(
            alpha_ns=draw(st.sampled_from([0.0, 1.3, 26.0, 150.5])),
            beta_ns=draw(st.sampled_from([0.0, 2.6, 40.0, 611.0])),
            grid=(4, 8, 16, 32),
        ),
        name="hypothesis",
    )


@st.composite
def requests(draw: Any, rid: str, running: bool, max_prompt: int) -> Request:
    prompt = draw(st.integers(1, max_prompt))
    if running:
        if draw(st.booleans()):  # decode: context at least the prompt
            computed = draw(st.integers(prompt, prompt + 4 * max_prompt))
        elif prompt > 1:
            computed = draw(st.integers(1, prompt - 1))
        else:
            computed = 1
    else:
        computed = draw(st.sampled_from([0, 0, 0, min(prompt - 1, 3)]))
    return Request(
        id=rid,
        prompt_tokens=prompt,
        computed_tokens=computed,
        priority=draw(st.integers(0, 3)),
        arrival_time=float(draw(st.integers(0, 20))),
    )


@st.composite
def problems(
    draw: Any,
    max_requests: int = 6,
    objective: str | None = None,
    priority_mode: str | None = None,
    preset: str | None = None,
    max_prompt: int | None = None,
    kv: bool = True,
) -> StepProblem:
    """A valid small :class:`StepProblem`.

    ``objective``/``priority_mode`` fix those fields (default: drawn). Without ``preset``: a
    random, often non-convex latency curve scaled to tiny problems (prompts up to
    ``max_prompt``, default 40), small enough for the brute-force oracle. With ``preset`` (a
    shipped latency model, see ``stepopt presets``): engine-scale numbers for that model
    (prompts up to ``max_prompt``, default 2048; budgets 256..2048 tokens; block size 16;
    vLLM-like chunk limits; targets between the empty and the full batch's latency), still
    few requests so that CP-SAT proves the optimum in well under a second. ``kv`` allows a KV
    capacity limit.
    """
    if preset:
        return draw(
            _preset_problems(max_requests, objective, priority_mode, preset, max_prompt, kv)
        )
    max_prompt = max_prompt or 40
    n_run = draw(st.integers(0, max_requests))
    n_wait = draw(st.integers(0, max_requests - n_run))
    running = [draw(requests(f"r{k}", True, max_prompt)) for k in range(n_run)]
    waiting = [draw(requests(f"w{k}", False, max_prompt)) for k in range(n_wait)]
    budget = draw(st.integers(1, max(2, max_prompt * 2)))
    cfg = EngineConfig(
        max_num_scheduled_tokens=budget,
        max_num_running_reqs=draw(st.integers(max(n_run, 1), max(n_run, 1) + 3)),
        long_prefill_token_threshold=draw(st.sampled_from([0, 0, 8, 16, 24])),
        min_prefill_chunk=draw(st.sampled_from([1, 4, 8, 16])),
        block_size=draw(st.sampled_from([1, 4, 16])),
        num_free_blocks=draw(st.none() | st.integers(0, 12)) if kv else None,
    )
    latency = draw(latency_models(max_tokens=max(budget, 1), max_batch=max_requests + 1))
    obj = objective or draw(st.sampled_from(OBJECTIVES))
    mode = priority_mode or draw(st.sampled_from(PRIORITY_MODES))
    # Targets around what the model can reach, so both objectives have something to trade.
    lo = latency.tokens(0) + latency.batch(0)
    hi = latency.tokens(budget) + latency.batch(n_run + n_wait) + 2_000_000
    target_ns = draw(st.integers(max(lo - 500_000, 1_000), max(hi, lo + 1_000)))
    return StepProblem(
        running=tuple(running),
        waiting=tuple(waiting),
        config=cfg,
        latency=latency,
        target_latency_ms=target_ns / 1e6,
        objective=obj,  # type: ignore[arg-type]
        priority_mode=mode,  # type: ignore[arg-type]
    )


# ---- engine-scale problems on a shipped latency model --------------------------------------
BLOCK = 16


@st.composite
def _scaled_request(draw: Any, rid: str, running: bool, max_prompt: int) -> Request:
    # Prompts spread over orders of magnitude (as real traffic), not uniform.
    prompt = draw(st.integers(4, max(max_prompt.bit_length() - 1, 4)).map(lambda e: 1 << e))
    prompt = min(draw(st.integers(max(prompt // 2, 1), prompt)), max_prompt)
    if running and draw(st.integers(0, 2)) > 0:  # decodes are the common running state
        computed = prompt + draw(st.integers(1, 1024))
    elif running:
        computed = min(draw(st.integers(0, prompt // BLOCK)) * BLOCK, prompt - 1)
    else:  # waiting: mostly no prefix-cache hit
        hit = draw(st.sampled_from([0, 0, 0, 1])) * (prompt // 2 // BLOCK) * BLOCK
        computed = min(hit, prompt - 1)
    return Request(
        id=rid,
        prompt_tokens=prompt,
        computed_tokens=computed,
        priority=draw(st.integers(0, 3)),
        arrival_time=float(draw(st.integers(0, 20))),
    )


@st.composite
def _preset_problems(
    draw: Any,
    max_requests: int,
    objective: str | None,
    priority_mode: str | None,
    preset: str,
    max_prompt: int | None,
    kv: bool,
) -> StepProblem:
    latency = load_preset(preset)
    max_prompt = max_prompt or 2048
    n_run = draw(st.integers(0, max_requests))
    n_wait = draw(st.integers(0, max_requests - n_run))
    running = [draw(_scaled_request(f"r{k}", True, max_prompt)) for k in range(n_run)]
    waiting = [draw(_scaled_request(f"w{k}", False, max_prompt)) for k in range(n_wait)]
    cfg = EngineConfig(
        max_num_scheduled_tokens=draw(st.sampled_from([256, 512, 1024, 2048])),
        max_num_running_reqs=draw(st.integers(max(n_run, 1), max(n_run, 1) + 3)),
        long_prefill_token_threshold=draw(st.sampled_from([0, 0, 256, 512])),
        min_prefill_chunk=draw(st.sampled_from([16, 64, 64, 128])),
        block_size=BLOCK,
        num_free_blocks=None,
    )
    problem = StepProblem(
        running=tuple(running),
        waiting=tuple(waiting),
        config=cfg,
        latency=latency,
        target_latency_ms=1.0,
        objective=objective or draw(st.sampled_from(OBJECTIVES)),  # type: ignore[arg-type]
        priority_mode=priority_mode or draw(st.sampled_from(PRIORITY_MODES)),  # type: ignore[arg-type]
    )
    # Upper end: every request at its full chunk (may exceed the budget: then the budget binds).
    full = {r.id: problem.hi(r) for r in problem.requests}
    if kv and draw(st.booleans()):
        need = sum(problem.new_blocks(r, full[r.id]) for r in problem.requests)
        # KV pressure: a share of what scheduling everything would need.
        free = int(need * draw(st.sampled_from([0.1, 0.3, 0.6, 0.9])))
        problem = problem.with_changes(config=_with_free_blocks(cfg, free))
    # Target: between the decode-only batch (the least a real step does) and the full batch,
    # so there is something to trade and a goodput cap admits at least the decodes.
    decodes = {r.id: 1 for r in problem.running_decodes}
    lo = latency.predict_ns(problem, decodes)
    hi = max(latency.predict_ns(problem, full), lo + 1_000_000)
    frac = draw(st.sampled_from([0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.1]))
    target_us = math.ceil((lo + frac * (hi - lo)) / 1000)
    return problem.with_changes(target_latency_ms=target_us / 1000)


def _with_free_blocks(cfg: EngineConfig, free: int) -> EngineConfig:
    return EngineConfig(
        cfg.max_num_scheduled_tokens,
        cfg.max_num_running_reqs,
        cfg.long_prefill_token_threshold,
        cfg.min_prefill_chunk,
        cfg.block_size,
        free,
    )
