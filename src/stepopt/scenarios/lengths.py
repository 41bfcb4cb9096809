"""Token-length distributions and synthetic loads (Poisson arrivals, drawn prompt/output lengths).

One parser and one sampler serve every generator: the synthetic queue states
(:mod:`stepopt.scenarios.synthetic`, log-normal prompts) and the synthetic request streams that
``stepopt tune`` and :func:`stepopt.simulate.trace.synthetic_trace` replay. A distribution is
written ``fixed:N``, ``uniform:LO,HI``, ``lognormal:MEDIAN,SIGMA[,MAX]`` or ``zipf:A[,MAX]``
(``numpy``'s Zipf law on 1, 2, ... with exponent ``A > 1``); every draw is rounded and clipped to
``[lo, hi]``. Named load profiles are maximum-likelihood log-normal fits of Vidur's processed
Splitwise traces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stepopt.errors import InputError, UnknownNameError
from stepopt.limits import MAX_TOKENS

KINDS = ("fixed", "uniform", "lognormal", "zipf")
SYNTAX = "fixed:N, uniform:LO,HI, lognormal:MEDIAN,SIGMA[,MAX] or zipf:A[,MAX]"


@dataclass(frozen=True)
class LengthDist:
    """Lengths in tokens: ``kind`` with parameters ``a``, ``b``, drawn then clipped to
    ``[lo, hi]``."""

    kind: str
    a: float
    b: float = 0.0
    lo: int = 1
    hi: int = MAX_TOKENS

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            x = np.full(n, self.a)
        elif self.kind == "uniform":
            x = rng.integers(int(self.a), int(self.b) + 1, size=n)
        elif self.kind == "lognormal":
            x = rng.lognormal(np.log(self.a), self.b, size=n)
        else:
            x = np.minimum(rng.zipf(self.a, size=n), self.hi)
        return np.clip(np.rint(x), self.lo, self.hi).astype(np.int64)

    def spec(self) -> str:
        """The text :func:`parse_length` reads back."""
        if self.kind == "fixed":
            return f"fixed:{self.a:g}"
        if self.kind == "uniform":
            return f"uniform:{self.a:g},{self.b:g}"
        if self.kind == "lognormal":
            return f"lognormal:{self.a:g},{self.b:g},{self.hi}"
        return f"zipf:{self.a:g},{self.hi}"


def _number(text: str, field: str, spec: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise InputError(field, f"expected {SYNTAX}", spec)
    return v


def _whole(v: float, field: str, what: str, lo: int = 1) -> int:
    if v != int(v) or not lo <= v <= MAX_TOKENS:
        raise InputError(field, f"{what} must be a whole number in [{lo}, {MAX_TOKENS}]", v)
    return int(v)


def parse_length(text: str, field: str) -> LengthDist:
    """A distribution from its text; a bad one is an error naming ``field`` and the text."""
    kind, _, args = text.strip().partition(":")
    if kind not in KINDS:
        raise InputError(field, f"expected {SYNTAX}", text)
    vals = [_number(v, field, text) for v in args.split(",")] if args.strip() else []
    counts = {"fixed": (1,), "uniform": (2,), "lognormal": (2, 3), "zipf": (1, 2)}[kind]
    if len(vals) not in counts:
        raise InputError(field, f"{kind} takes {' or '.join(map(str, counts))} numbers", text)
    if kind == "fixed":
        return LengthDist("fixed", _whole(vals[0], field, "N"))
    if kind == "uniform":
        lo, hi = _whole(vals[0], field, "LO"), _whole(vals[1], field, "HI")
        if lo > hi:
            raise InputError(field, "LO must be <= HI", text)
        return LengthDist("uniform", lo, hi)
    hi = _whole(vals[-1], field, "MAX") if len(vals) == counts[-1] else MAX_TOKENS
    if kind == "lognormal":
        if not vals[0] > 0 or not vals[1] >= 0:
            raise InputError(field, "MEDIAN must be > 0 and SIGMA >= 0", text)
        return LengthDist("lognormal", vals[0], vals[1], hi=hi)
    if not vals[0] > 1:
        raise InputError(field, "the Zipf exponent A must be > 1", text)
    return LengthDist("zipf", vals[0], hi=hi)


def fit_lognormal(values: np.ndarray, lo: int = 1) -> LengthDist:
    """The maximum-likelihood log-normal (mean and standard deviation of the logs), capped at
    the largest value seen; median rounded to 0.1 token, sigma to 0.001."""
    logs = np.log(np.asarray(values, dtype=float))
    median = round(float(np.exp(logs.mean())), 1)
    return LengthDist("lognormal", median, round(float(logs.std()), 3), lo, int(np.max(values)))


@dataclass(frozen=True)
class LoadProfile:
    prompt: LengthDist
    output: LengthDist
    rate: float  # the trace's mean arrival rate (requests/s), for reference
    source: str


# fit_lognormal on Vidur's processed traces (tests/test_tune_load.py refits them when the data
# is present). Mean lengths drawn vs the trace's: conv prompts 1,227 vs 1,155, outputs 213 vs
# 211; code prompts 2,033 vs 2,048, outputs 23 vs 28 (its outputs are more skewed than a
# log-normal). See docs/latency.md.
PROFILES: dict[str, LoadProfile] = {
    "splitwise-conv": LoadProfile(
        LengthDist("lognormal", 760.0, 0.985, 1, 14050),
        LengthDist("lognormal", 151.3, 0.859, 1, 1000),
        5.53,
        "vidur/data/processed_traces/splitwise_conv.csv (19,366 requests)",
    ),
    "splitwise-code": LoadProfile(
        LengthDist("lognormal", 1095.1, 1.36, 1, 7437),
        LengthDist("lognormal", 16.3, 0.847, 1, 1899),
        2.57,
        "vidur/data/processed_traces/splitwise_code.csv (8,819 requests)",
    ),
}


def load_profile(name: str, field: str = "--load") -> LoadProfile:
    if name not in PROFILES:
        raise UnknownNameError("load profile", name, sorted(PROFILES), field)
    return PROFILES[name]
