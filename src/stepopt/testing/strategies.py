"""Hypothesis strategies that build valid step problems.

``problems()`` draws small problems (a few requests, short prompts, small budgets) with random,
often non-convex latency curves scaled to the problem, so that exact solvers and the
brute-force oracle can solve them and so that greedy choices are not optimal by construction.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.latency.presets import load_preset
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.model import OBJECTIVES, PRIORITY_MODES, EngineConfig, Request, StepProblem


@st.composite
def curves(draw: Any, max_x: int, max_y_ns: int, max_points: int = 5) -> PiecewiseLinear:
    """A random piecewise-linear curve on ``[0, max_x]``: any shape, non-negative values."""
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
    max_prompt: int = 40,
    kv: bool = True,
) -> StepProblem:
    """A valid small :class:`StepProblem`.

    ``objective``/``priority_mode`` fix those fields (default: drawn). ``preset`` uses a shipped
    latency model instead of a random curve. ``kv`` allows a KV capacity limit.
    """
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
    latency = (
        load_preset(preset)
        if preset
        else draw(latency_models(max_tokens=max(budget, 1), max_batch=max_requests + 1))
    )
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
