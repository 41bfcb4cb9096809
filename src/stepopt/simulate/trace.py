"""Request traces for the simulator: read a CSV, draw Poisson arrivals or a synthetic load, cut.

The CSV format is Vidur's processed traces (``arrived_at`` in seconds, ``num_prefill_tokens``,
``num_decode_tokens``); ``arrival_time``/``prompt_tokens``/``output_tokens`` are accepted as
well, and an optional ``priority`` column (lower = more urgent). A trace without arrival times
needs a Poisson rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stepopt.errors import InputError
from stepopt.limits import MAX_REQUESTS
from stepopt.scenarios.lengths import LengthDist
from stepopt.tracefile import read_trace_csv

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival. ``output_tokens`` counts every generated token, the first
    one (emitted when the prompt completes) included."""

    arrivals_ns: np.ndarray  # int64, non-decreasing
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    priorities: np.ndarray  # int64
    source: str = "trace"

    def __len__(self) -> int:
        return len(self.prompt_tokens)

    @property
    def ids(self) -> list[str]:
        """``r`` + zero-padded index, so that ids sort like arrivals (the waiting order's last
        tie-break is the id)."""
        width = len(str(max(len(self) - 1, 0)))
        return [f"r{k:0{width}d}" for k in range(len(self))]

    def cut(self, max_requests: int | None = None, duration_s: float | None = None) -> Trace:
        """The first ``max_requests`` requests and those arriving within ``duration_s`` seconds
        of the first arrival."""
        n = len(self)
        if duration_s is not None:
            if not duration_s > 0:
                raise InputError("duration", "must be > 0 seconds", duration_s)
            if n:
                limit = int(self.arrivals_ns[0]) + round(duration_s * NS_PER_S)
                n = int(np.searchsorted(self.arrivals_ns, limit, side="left"))
        if max_requests is not None:
            if max_requests < 1:
                raise InputError("max_requests", "must be >= 1", max_requests)
            n = min(n, max_requests)
        if n == len(self):
            return self
        return Trace(
            self.arrivals_ns[:n],
            self.prompt_tokens[:n],
            self.output_tokens[:n],
            self.priorities[:n],
            self.source,
        )


def poisson_arrivals_ns(n: int, rate: float, seed: int = 0) -> np.ndarray:
    if not rate > 0:
        raise InputError("rate", "must be > 0 requests per second", rate)
    rng = np.random.default_rng([int(seed), 7])
    gaps = rng.exponential(1.0 / rate, size=n)
    times = np.cumsum(gaps) - (gaps[0] if n else 0.0)
    return np.round(times * NS_PER_S).astype(np.int64)


def make_trace(
    prompt_tokens: list[int] | np.ndarray,
    output_tokens: list[int] | np.ndarray,
    arrivals_s: list[float] | np.ndarray | None = None,
    priorities: list[int] | np.ndarray | None = None,
    *,
    rate: float | None = None,
    seed: int = 0,
    source: str = "trace",
) -> Trace:
    """A validated trace from columns (arrival seconds, or ``rate`` for Poisson arrivals)."""
    prompts = np.asarray(prompt_tokens, dtype=np.int64)
    outputs = np.asarray(output_tokens, dtype=np.int64)
    n = len(prompts)
    if len(outputs) != n:
        raise InputError("output_tokens", f"length {len(outputs)} != prompts {n}", len(outputs))
    if n and prompts.min() < 1:
        k = int(np.argmin(prompts))
        raise InputError(f"request {k}.prompt_tokens", "must be >= 1", int(prompts[k]))
    if n and outputs.min() < 1:
        k = int(np.argmin(outputs))
        raise InputError(f"request {k}.output_tokens", "must be >= 1", int(outputs[k]))
    prio = (
        np.zeros(n, dtype=np.int64)
        if priorities is None
        else np.asarray(priorities, dtype=np.int64)
    )
    if rate is not None:
        arrivals = poisson_arrivals_ns(n, rate, seed)
    elif arrivals_s is None:
        raise InputError("rate", "the trace has no arrival times: give a Poisson rate", None)
    else:
        a = np.asarray(arrivals_s, dtype=float)
        if n and (not np.all(np.isfinite(a)) or a.min() < 0):
            k = int(np.argmin(np.where(np.isfinite(a), a, -1.0)))
            raise InputError(f"request {k}.arrival_time", "must be finite and >= 0", float(a[k]))
        arrivals = np.round(a * NS_PER_S).astype(np.int64)
    order = np.argsort(arrivals, kind="stable")
    return Trace(arrivals[order], prompts[order], outputs[order], prio[order], source)


def load_trace(path: str | Path, *, rate: float | None = None, seed: int = 0) -> Trace:
    """Read a trace CSV. ``rate`` replaces its arrival times by Poisson arrivals (required when
    it has none)."""
    cols = read_trace_csv(path, "trace", min_output=1)
    return make_trace(
        cols.prompts,
        cols.outputs,
        cols.arrivals_s,
        cols.priorities,
        rate=rate,
        seed=seed,
        source=cols.name,
    )


def synthetic_trace(
    n: int, rate: float, prompts: LengthDist, outputs: LengthDist, seed: int = 0
) -> Trace:
    """``n`` requests arriving as a Poisson process at ``rate`` req/s, lengths drawn from the
    two distributions (output lengths of at least 1: the first token ends the prefill)."""
    if not 1 <= n <= MAX_REQUESTS:
        raise InputError("requests", f"must be in [1, {MAX_REQUESTS}]", n)
    rng = np.random.default_rng([int(seed), 11])  # arrivals draw from [seed, 7]
    p = prompts.draw(rng, n)
    o = np.maximum(outputs.draw(rng, n), 1)
    source = f"synthetic {rate:g} req/s, prompts {prompts.spec()}, outputs {outputs.spec()}"
    return make_trace(p, o, rate=rate, seed=seed, source=source)
