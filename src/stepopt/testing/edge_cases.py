"""Seeded generators of the problems where MILP backends went wrong (issue: wrong verdicts).

Each family is a function ``(random.Random) -> StepProblem``; :data:`FAMILIES` names them. They
are plain seeded functions (not Hypothesis strategies) so that ``benchmarks/differential.py``
can draw any number of them reproducibly and the differential tests can draw a fixed set.

- ``small``: a few requests, random non-convex curves, KV limits, thresholds, min chunks;
- ``zero_pieces``: curves with flat pieces at 0 ns (free tokens, free batch slots), targets
  of a few µs, so optimal latencies sit at or next to 0 where absolute tolerances matter;
- ``weighted_ties``: weighted priorities, latency driven by the batch size only, equal
  prompts: many decisions tie on |L - T| and the tie-break levels decide;
- ``tie128``: 128 requests, target objective, a flat token curve: a large tie-break phase
  (too big for brute force; the backends are compared with each other and the evaluator).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.model import EngineConfig, Request, StepProblem

Generator = Callable[[random.Random], StepProblem]


def _curve(rng: random.Random, max_x: int, max_y: int, zeros: bool = False) -> PiecewiseLinear:
    """A random non-negative curve on ``[0, max_x]``; with ``zeros`` some pieces are flat at 0."""
    inner = rng.sample(range(1, max_x), min(rng.randint(0, 3), max(max_x - 1, 0)))
    xs = sorted({0, *inner, max_x})
    ys = [0 if zeros and rng.random() < 0.6 else rng.randint(0, max_y // 4)]
    for _ in xs[1:]:
        if zeros and rng.random() < 0.4:
            ys.append(0)
        else:
            ys.append(max(0, ys[-1] + rng.randint(-max_y // 8, max_y // 2)))
    return PiecewiseLinear(tuple(xs), tuple(ys))


def _request(rng: random.Random, rid: str, running: bool, max_prompt: int) -> Request:
    prompt = rng.randint(1, max_prompt)
    if running and rng.random() < 0.5:
        computed = rng.randint(prompt, prompt + 4 * max_prompt)  # a decode
    elif running:
        computed = rng.randint(1, prompt - 1) if prompt > 1 else 1
    else:
        computed = rng.choice([0, 0, 0, min(prompt - 1, 3)])
    return Request(
        id=rid,
        prompt_tokens=prompt,
        computed_tokens=computed,
        priority=rng.randint(0, 3),
        arrival_time=float(rng.randint(0, 20)),
    )


def _problem(
    rng: random.Random,
    n: int,
    max_prompt: int,
    latency: Callable[[int, int], LatencyModel],
    target: Callable[[LatencyModel, int], int],
    *,
    objective: str | None = None,
    mode: str | None = None,
    kv: bool = True,
) -> StepProblem:
    n_run = rng.randint(0, n)
    n_wait = rng.randint(0, n - n_run)
    running = [_request(rng, f"r{k}", True, max_prompt) for k in range(n_run)]
    waiting = [_request(rng, f"w{k}", False, max_prompt) for k in range(n_wait)]
    budget = rng.randint(1, max(2, max_prompt * 2))
    cfg = EngineConfig(
        max_num_scheduled_tokens=budget,
        max_num_running_reqs=rng.randint(max(n_run, 1), max(n_run, 1) + 3),
        long_prefill_token_threshold=rng.choice([0, 0, 8, 16, 24]),
        min_prefill_chunk=rng.choice([1, 4, 8, 16]),
        block_size=rng.choice([1, 4, 16]),
        num_free_blocks=rng.choice([None, rng.randint(0, 12)]) if kv else None,
    )
    lat = latency(budget, n + 1)
    return StepProblem(
        running=tuple(running),
        waiting=tuple(waiting),
        config=cfg,
        latency=lat,
        target_latency_ms=max(target(lat, budget), 1) / 1e6,
        objective=objective or rng.choice(["target", "goodput"]),  # type: ignore[arg-type]
        priority_mode=mode or rng.choice(["strict", "weighted"]),  # type: ignore[arg-type]
    )


def _model(rng: random.Random, tokens: int, batch: int, zeros: bool, scale: int) -> LatencyModel:
    return LatencyModel(
        tokens=_curve(rng, max(tokens, 1), scale, zeros),
        batch=_curve(rng, batch, scale // 5, zeros),
        decode_context_ps=rng.choice([0, 0, 1_000, 37_500] if zeros else [0, 1_000, 350_000]),
        prefill=PrefillAttention(
            alpha_ns=rng.choice([0.0, 1.3, 26.0]),
            beta_ns=rng.choice([0.0, 2.6, 40.0]),
            grid=(4, 8, 16, 32),
        ),
        name="edge",
    )


def small(rng: random.Random) -> StepProblem:
    def target(lat: LatencyModel, budget: int) -> int:
        lo = lat.tokens(0) + lat.batch(0)
        return rng.randint(max(lo - 500_000, 1_000), lo + lat.tokens(budget) + 2_000_000)

    return _problem(rng, 6, 40, lambda t, b: _model(rng, t, b, False, 4_000_000), target)


def zero_pieces(rng: random.Random) -> StepProblem:
    scale = rng.choice([4_000, 400_000, 4_000_000])
    return _problem(
        rng,
        6,
        40,
        lambda t, b: _model(rng, t, b, True, scale),
        lambda lat, budget: rng.randint(1, 20_000),
    )


def weighted_ties(rng: random.Random) -> StepProblem:
    step = rng.choice([1_000, 250_000])

    def latency(tokens: int, batch: int) -> LatencyModel:
        return LatencyModel(
            tokens=PiecewiseLinear((0, max(tokens, 1)), (0, rng.choice([0, 0, 7]))),
            batch=PiecewiseLinear((0, batch), (0, step * batch)),
            decode_context_ps=0,
            prefill=PrefillAttention(alpha_ns=0.0, beta_ns=0.0, grid=(4, 8, 16, 32)),
            name="ties",
        )

    def target(lat: LatencyModel, budget: int) -> int:
        return step * rng.randint(0, 6) + rng.choice([0, step // 2, 3])

    return _problem(rng, 6, 12, latency, target, mode="weighted")


def tie128(rng: random.Random) -> StepProblem:
    n = 128
    running = [
        Request(id=f"r{k}", prompt_tokens=8, computed_tokens=8 + rng.randint(0, 64))
        for k in range(96)
    ]
    waiting = [
        Request(id=f"w{k}", prompt_tokens=rng.randint(4, 64), priority=rng.randint(0, 3))
        for k in range(n - len(running))
    ]
    lat = LatencyModel(
        tokens=PiecewiseLinear((0, 64, 4096), (0, 0, rng.choice([64_000, 640_000]))),
        batch=PiecewiseLinear((0, n + 1), (0, 1_000 * (n + 1))),
        decode_context_ps=rng.choice([0, 1_000]),
        prefill=PrefillAttention(alpha_ns=0.0, beta_ns=0.0, grid=(4, 8, 16, 32)),
        name="tie128",
    )
    cfg = EngineConfig(max_num_scheduled_tokens=rng.choice([256, 512]), max_num_running_reqs=n)
    return StepProblem(
        running=tuple(running),
        waiting=tuple(waiting),
        config=cfg,
        latency=lat,
        target_latency_ms=rng.randint(96_000, 200_000) / 1e6,
        objective="target",
        priority_mode=rng.choice(["strict", "weighted"]),  # type: ignore[arg-type]
    )


FAMILIES: dict[str, Generator] = {
    "small": small,
    "zero_pieces": zero_pieces,
    "weighted_ties": weighted_ties,
    "tie128": tie128,
}
BRUTE_FAMILIES = ("small", "zero_pieces", "weighted_ties")  # small enough for brute force


def draw(family: str, seed: int) -> StepProblem:
    """Problem number ``seed`` of ``family`` (the same problem on every machine)."""
    return FAMILIES[family](random.Random(f"{family}:{seed}"))
