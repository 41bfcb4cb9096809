"""The step latency model of the formulation, in integer nanoseconds.

    L(c) = F_tok(S) + F_seq(b) + floor(delta_ps * sum_{decode i in batch} C_i / 1000)
           + sum_{prefill i in batch} A_i(c_i)

``S`` is the number of tokens in the batch and ``b`` the number of requests in it. ``F_tok`` and
``F_seq`` are piecewise-linear (floor interpolation, any shape). ``delta_ps`` is the decode
attention cost per context token in picoseconds, an integer so that the term is exact in
integer arithmetic. ``A_i(c)`` approximates ``alpha * c * C_i + beta * c**2`` piecewise-linearly
on a fixed grid of chunk sizes (see :class:`PrefillAttention`). Every term is an integer and the
empty batch is not special: it costs ``F_tok(0) + F_seq(0)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from stepopt.latency.pwl import PiecewiseLinear


class HasRequests(Protocol):
    """What the model reads from a problem: its requests by id (``stepopt.model.StepProblem``
    has it; the latency layer does not import the model layer)."""

    @property
    def by_id(self) -> Mapping[str, Any]: ...  # Request by id


DEFAULT_GRID: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


@dataclass(frozen=True, slots=True)
class PrefillAttention:
    """Prefill attention of a chunk of ``c`` new tokens over ``C`` cached tokens.

    The exact cost ``alpha_ns * c * C + beta_ns * c**2`` is tabulated, floored to whole
    nanoseconds, at chunk sizes ``0``, every grid point below the request's remaining prompt
    ``R``, and ``R`` itself; values in between are floor-interpolated. The table depends only
    on ``(C, R)``, so the evaluator and every solver read the same numbers.
    """

    alpha_ns: float = 0.0
    beta_ns: float = 0.0
    grid: tuple[int, ...] = DEFAULT_GRID

    def exact_ns(self, chunk: int, cached: int) -> int:
        return math.floor(self.alpha_ns * chunk * cached + self.beta_ns * chunk * chunk)

    def curve(self, cached: int, remaining: int) -> PiecewiseLinear:
        """The piecewise-linear ``A_i`` over ``c`` in ``[0, remaining]``."""
        return _attention_curve(self.alpha_ns, self.beta_ns, self.grid, cached, remaining)

    def __call__(self, chunk: int, cached: int, remaining: int) -> int:
        if chunk == 0 or (self.alpha_ns == 0.0 and self.beta_ns == 0.0):
            return 0
        return self.curve(cached, remaining)(chunk)


@lru_cache(maxsize=65536)
def _attention_curve(
    alpha: float, beta: float, grid: tuple[int, ...], cached: int, remaining: int
) -> PiecewiseLinear:
    top = max(remaining, 1)
    xs = [0, *(g for g in grid if 0 < g < top), top]
    ys = [math.floor(alpha * x * cached + beta * x * x) for x in xs]
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
    """Predicts the latency of one engine step; see the module docstring for the formula."""

    tokens: PiecewiseLinear
    batch: PiecewiseLinear = field(default_factory=lambda: PiecewiseLinear.constant(0))
    decode_context_ps: int = 0
    prefill: PrefillAttention = field(default_factory=PrefillAttention)
    name: str = "custom"
    meta: Mapping[str, Any] = field(default_factory=dict)

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
        """The four terms and their total, in nanoseconds."""
        return self.breakdown_of(StepAggregates.from_decision(problem, tokens))

    def breakdown_of(self, agg: StepAggregates) -> dict[str, int]:
        parts = {
            "tokens": self.tokens(agg.total_tokens),
            "batch": self.batch(agg.batch_size),
            "decode_attention": self.decode_ns(agg.decode_context),
            "prefill_attention": sum(
                self.prefill(c, cached, rem) for c, cached, rem in agg.prefills
            ),
        }
        parts["total"] = sum(parts.values())
        return parts
