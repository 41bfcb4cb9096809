"""The step latency model of the formulation, in integer nanoseconds.

    L(c) = F_tok(S) + F_seq(b) + floor(delta_ps * sum_{decode i in batch} C_i / 1000)
           + sum_{prefill i in batch} A_i(c_i)

``S`` is the number of tokens in the batch and ``b`` the number of requests in it. ``F_tok`` and
``F_seq`` are piecewise-linear (floor interpolation, any shape). ``delta_ps`` is the decode
attention cost per context token in picoseconds, an integer so that the term is exact in
integer arithmetic. ``A_i(c)`` approximates ``alpha * c * C_i + beta * c**2 + linear * c``
piecewise-linearly on a fixed grid of chunk sizes, its table computed in exact rational
arithmetic (see :class:`PrefillAttention`). Every term is an integer and the
empty batch is not special: it costs ``F_tok(0) + F_seq(0)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any, Protocol

from stepopt.latency.engine import NONE, EngineOverhead, add_engine
from stepopt.latency.pwl import PiecewiseLinear


class HasRequests(Protocol):
    """What the model reads from a problem: its requests by id (``stepopt.model.StepProblem``
    has it; the latency layer does not import the model layer)."""

    @property
    def by_id(self) -> Mapping[str, Any]: ...  # Request by id


DEFAULT_GRID: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


def exact_coefficient(value: Any, name: str = "coefficient") -> Fraction:
    """A coefficient as an exact fraction.

    A float means the shortest decimal that reads back as it (``0.7`` is 7/10, not the double
    nearest to it), so a JSON file's ``0.7`` is the 0.7 its author wrote. Ints, fractions,
    decimals and ``"7/10"``-style strings are taken as they are.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if isinstance(value, Fraction | int | Decimal | str):
        out = Fraction(value)
    else:  # float, numpy float
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"{name}: expected a finite number, got {f}")
        out = Fraction(float.__repr__(f))
    if out < 0:
        raise ValueError(f"{name}: expected a non-negative number, got {value}")
    return out


@dataclass(frozen=True, slots=True)
class PrefillAttention:
    """Prefill attention of a chunk of ``c`` new tokens over ``C`` cached tokens.

    The exact cost ``alpha_ns * c * C + beta_ns * c**2 + linear_ns * c`` is tabulated, floored
    to whole nanoseconds in exact rational arithmetic (see :func:`exact_coefficient`), at
    chunk sizes ``0``, every grid point below the request's remaining prompt ``R``, and ``R``
    itself; values in between are floor-interpolated. The table depends only on ``(C, R)``, so
    the evaluator and every solver read the same numbers.
    """

    alpha_ns: float | int | Fraction = 0.0
    beta_ns: float | int | Fraction = 0.0
    grid: tuple[int, ...] = DEFAULT_GRID
    linear_ns: float | int | Fraction = 0.0
    # Exact integer form: cost(c, C) = (a * c * C + b * c * c + g * c) // d.
    exact: tuple[int, int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fa = exact_coefficient(self.alpha_ns, "alpha_ns")
        fb = exact_coefficient(self.beta_ns, "beta_ns")
        fg = exact_coefficient(self.linear_ns, "linear_ns")
        d = math.lcm(fa.denominator, fb.denominator, fg.denominator)
        exact = (int(fa * d), int(fb * d), int(fg * d), d)
        object.__setattr__(self, "exact", exact)

    @property
    def is_zero(self) -> bool:
        return self.exact[:3] == (0, 0, 0)

    def exact_ns(self, chunk: int, cached: int) -> int:
        """``floor(alpha * chunk * cached + beta * chunk**2 + linear * chunk)``, exactly."""
        a, b, g, d = self.exact
        return (chunk * (a * cached + b * chunk + g)) // d

    def curve(self, cached: int, remaining: int) -> PiecewiseLinear:
        """The piecewise-linear ``A_i`` over ``c`` in ``[0, remaining]``."""
        return _attention_curve(self.exact, self.grid, cached, remaining)

    def __call__(self, chunk: int, cached: int, remaining: int) -> int:
        if chunk == 0 or self.is_zero:
            return 0
        return self.curve(cached, remaining)(chunk)

    def __hash__(self) -> int:
        return hash((self.exact, self.grid))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrefillAttention):
            return NotImplemented
        return (self.exact, self.grid) == (other.exact, other.grid)


@lru_cache(maxsize=65536)
def _attention_curve(
    exact: tuple[int, int, int, int], grid: tuple[int, ...], cached: int, remaining: int
) -> PiecewiseLinear:
    a, b, g, d = exact
    top = max(remaining, 1)
    xs = [0, *(x for x in grid if 0 < x < top), top]
    ys = [(x * (a * cached + b * x + g)) // d for x in xs]
    return PiecewiseLinear(tuple(xs), tuple(ys))


@dataclass(frozen=True, slots=True)
class StepAggregates:
    """What the latency model reads from a decision: token count, batch size, decode context,
    and one ``(chunk, cached, remaining)`` per prefill in the batch."""

    total_tokens: int
    batch_size: int
    decode_context: int = 0
    prefills: tuple[tuple[int, int, int], ...] = ()

    @classmethod
    def from_decision(cls, problem: HasRequests, tokens: Mapping[str, int]) -> StepAggregates:
        """Ids that are not in the problem and non-positive counts are ignored (the evaluator
        reports them as violations)."""
        total = batch = context = 0
        prefills = []
        by_id = problem.by_id
        for rid, c in tokens.items():
            r = by_id.get(rid)
            if r is None or c <= 0:
                continue
            total += c
            batch += 1
            if r.is_decode:
                context += r.computed_tokens
            else:
                prefills.append((c, r.computed_tokens, r.remaining_prompt))
        return cls(total, batch, context, tuple(prefills))

    def predict_ns(self, model: LatencyModel) -> int:
        return model.breakdown_of(self)["total"]


@dataclass(frozen=True)
class LatencyModel:
    """Predicts the latency of one engine step; see the module docstring for the formula.

    ``batch`` is the whole ``F_seq`` the formulation reads; ``engine`` names the part of it
    that is engine overhead rather than kernels (:mod:`stepopt.latency.engine`). Use
    :meth:`with_engine` to swap engine profiles: it keeps the kernel part.
    """

    tokens: PiecewiseLinear
    batch: PiecewiseLinear = field(default_factory=lambda: PiecewiseLinear.constant(0))
    decode_context_ps: int = 0
    prefill: PrefillAttention = field(default_factory=PrefillAttention)
    name: str = "custom"
    meta: Mapping[str, Any] = field(default_factory=dict)
    engine: EngineOverhead = NONE

    @property
    def kernel_batch(self) -> PiecewiseLinear:
        """``batch`` without the engine overhead."""
        return add_engine(self.batch, self.engine, -1)

    def with_engine(self, engine: EngineOverhead) -> LatencyModel:
        """The same kernels with another engine profile."""
        from dataclasses import replace

        return replace(self, batch=add_engine(self.kernel_batch, engine), engine=engine)

    def decode_ns(self, context_tokens: int) -> int:
        """Decode attention term for a total of ``context_tokens`` over the batch's decodes."""
        return (self.decode_context_ps * context_tokens) // 1000

    def step_ns(
        self,
        total_tokens: int,
        batch_size: int,
        decode_context: int,
        prefill_attention_ns: int = 0,
    ) -> int:
        """Latency from the batch's aggregates (the prefill attention already summed)."""
        return (
            self.tokens(total_tokens)
            + self.batch(batch_size)
            + self.decode_ns(decode_context)
            + prefill_attention_ns
        )

    def predict_ns(self, problem: HasRequests, tokens: Mapping[str, int]) -> int:
        """Latency of giving ``tokens[id]`` tokens to each request of ``problem``.

        Ids that are not in the problem and non-positive counts are ignored (the evaluator
        reports them as violations).
        """
        return self.breakdown_ns(problem, tokens)["total"]

    def breakdown_ns(self, problem: HasRequests, tokens: Mapping[str, int]) -> dict[str, int]:
        """The terms (kernels, engine overhead) and their total, in nanoseconds."""
        return self.breakdown_of(StepAggregates.from_decision(problem, tokens))

    def breakdown_of(self, agg: StepAggregates) -> dict[str, int]:
        engine = self.engine.ns(agg.batch_size)
        parts = {
            "tokens": self.tokens(agg.total_tokens),
            "batch": self.batch(agg.batch_size) - engine,
            "engine": engine,
            "decode_attention": self.decode_ns(agg.decode_context),
            "prefill_attention": sum(
                self.prefill(c, cached, rem) for c, cached, rem in agg.prefills
            ),
        }
        parts["total"] = sum(parts.values())
        return parts
