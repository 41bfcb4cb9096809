"""Hot-path helpers of the heuristics: they live in :mod:`stepopt.latency.step` (the one fast
latency arithmetic); re-exported here for existing imports."""

from stepopt.latency.step import (
    AttentionFn,
    TokenInverse,
    attention_fn,
    fast_curve,
    step_latency,
    token_inverse,
)

__all__ = [
    "AttentionFn",
    "TokenInverse",
    "attention_fn",
    "fast_curve",
    "step_latency",
    "token_inverse",
]
