"""Synthetic queues from parametric distributions.

Queue lengths follow the shared load model (:func:`~stepopt.scenarios.common.queue_lengths`);
a share ``decode_share`` of the running requests decode (context = prompt + tokens generated so
far), the rest are in chunked prefill at a uniform point of their prompt; prompts are
log-normal. Every knob has a default that mixes the regimes of FORMULATION.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepopt.latency.presets import load_preset
from stepopt.model import Request
from stepopt.scenarios.common import (
    GenerateOptions,
    Scenario,
    draw_load,
    finish_problem,
    pick,
    queue_lengths,
    rng_for,
)
from stepopt.scenarios.lengths import LengthDist


@dataclass(frozen=True)
class SyntheticKnobs:
    decode_share: tuple[float, float] = (0.6, 1.0)
    prompt_median: float = 600.0  # tokens, log-normal
    prompt_sigma: float = 1.0
    prompt_max: int = 16384
    generated_max: int = 1024  # decode context = prompt + U(1, generated_max)


def _lognormal(rng: np.random.Generator, k: SyntheticKnobs, n: int) -> np.ndarray:
    return LengthDist("lognormal", k.prompt_median, k.prompt_sigma, 16, k.prompt_max).draw(rng, n)


def generate_one(
    opts: GenerateOptions, index: int, knobs: SyntheticKnobs | None = None
) -> Scenario:
    k = knobs or SyntheticKnobs()
    rng = rng_for(opts.seed, index)
    preset = pick(rng, opts.presets)
    latency = load_preset(preset)
    load = draw_load(rng, opts)
    n_run, n_wait = queue_lengths(rng, load, opts)
    share = float(rng.uniform(*k.decode_share))
    prompts = _lognormal(rng, k, n_run + n_wait)
    running: list[Request] = []
    for i in range(n_run):
        p = int(prompts[i])
        if rng.random() < share:
            ctx = p + int(rng.integers(1, k.generated_max + 1))
            running.append(Request(f"r{i}", p, ctx, 0, round(-float(rng.uniform(1, 60)), 6)))
        else:
            done = int(rng.integers(0, p // 16 + 1)) * 16
            done = min(done, p - 1)
            running.append(Request(f"r{i}", p, done, 0, round(-float(rng.uniform(0, 5)), 6)))
    gaps = rng.exponential(0.05, size=n_wait)
    t = np.cumsum(gaps)
    waiting = [
        Request(f"w{j}", int(prompts[n_run + j]), 0, 0, round(float(t[j]), 6))
        for j in range(n_wait)
    ]
    meta = {
        "source": "synthetic",
        "preset": preset,
        "load": load,
        "decode_share": round(share, 3),
    }
    return finish_problem(rng, opts, latency, running, waiting, meta)
