"""Queue states of a steady engine, built from a request trace.

The trace is a CSV with ``num_prefill_tokens``, ``num_decode_tokens`` and optionally
``arrived_at`` (seconds), the columns of Vidur's processed traces. A state is a snapshot of an
engine in steady state at utilization ``load``:

- **running** requests: ``queue_lengths`` many, sampled with probability proportional to their
  lifetime in the engine (``ceil(P / chunk) + D`` steps: a snapshot sees long requests more
  often), each at a uniformly random step of that lifetime. Steps before ``ceil(P / chunk)``
  are chunked prefill (``computed = k * chunk``), later ones decode with context ``P + j``;
- **waiting** requests: consecutive trace rows (arrivals are not length-biased), as many as the
  load model gives, with the trace's arrival times (relative to the first one) or Poisson
  arrivals when the trace has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
from stepopt.tracefile import read_trace_csv

PREFILL_CHUNK = 512  # chunk size of the steady engine the snapshot is taken from


@dataclass(frozen=True)
class Trace:
    path: str
    prompts: np.ndarray  # int
    outputs: np.ndarray  # int
    arrivals: np.ndarray | None  # float seconds, or None


@lru_cache(maxsize=8)
def load_trace(path: str) -> Trace:
    """Read and validate a trace CSV (cached per path); requests may have no output token."""
    cols = read_trace_csv(path, "source", min_output=0)
    arrivals = cols.arrivals_s
    return Trace(
        str(Path(path)),
        np.asarray(cols.prompts, dtype=np.int64),
        np.asarray(cols.outputs, dtype=np.int64),
        np.asarray(arrivals, dtype=float) if arrivals else None,
    )


def _running(rng: np.random.Generator, tr: Trace, n: int) -> list[Request]:
    pre_steps = -(-tr.prompts // PREFILL_CHUNK)
    life = pre_steps + np.maximum(tr.outputs, 1)
    prob = life / life.sum()
    rows = rng.choice(len(tr.prompts), size=n, p=prob)
    out = []
    for i, row in enumerate(rows):
        p, d, ps = int(tr.prompts[row]), int(max(tr.outputs[row], 1)), int(pre_steps[row])
        k = int(rng.integers(0, ps + d))
        age = (ps + d - k) * 0.03  # a rough 30 ms per step, only orders running requests
        if k < ps:
            out.append(Request(f"r{i}", p, k * PREFILL_CHUNK, 0, round(-age, 6), d))
        else:
            out.append(Request(f"r{i}", p, p + (k - ps), 0, round(-age, 6), d))
    return out


def _waiting(rng: np.random.Generator, tr: Trace, n: int) -> list[Request]:
    if n == 0:
        return []
    total = len(tr.prompts)
    start = int(rng.integers(0, max(total - n, 0) + 1))
    idx = [(start + j) % total for j in range(n)]
    if tr.arrivals is not None:
        t0 = float(tr.arrivals[idx[0]])
        times = [max(float(tr.arrivals[i]) - t0, 0.0) for i in idx]
    else:
        times = list(np.cumsum(rng.exponential(0.05, size=n)))
    return [
        Request(f"w{j}", int(tr.prompts[i]), 0, 0, round(float(times[j]), 6), int(tr.outputs[i]))
        for j, i in enumerate(idx)
    ]


def generate_one(opts: GenerateOptions, index: int, path: str) -> Scenario:
    tr = load_trace(str(Path(path).resolve()))
    rng = rng_for(opts.seed, index)
    preset = pick(rng, opts.presets)
    latency = load_preset(preset)
    load = draw_load(rng, opts)
    n_run, n_wait = queue_lengths(rng, load, opts)
    running = _running(rng, tr, n_run)
    waiting = _waiting(rng, tr, n_wait)
    meta = {"source": f"trace:{Path(path).name}", "preset": preset, "load": load}
    return finish_problem(rng, opts, latency, running, waiting, meta)
