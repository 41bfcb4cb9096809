"""Engine overhead: the part of a step that is not GPU kernels (scheduling, input preparation,
sampling, launch gaps, output processing).

It is kept apart from the kernel fits and added to the ``batch`` curve, so the formulation is
unchanged (``F_seq(b)`` stays piecewise linear)::

    engine(b) = step_ns + per_request_ns * b   for b >= 1,   engine(0) = 0

Both numbers are integers, so adding the engine to a curve that has breakpoints at 0 and 1 is
exact to the nanosecond: the engine is integer-linear between any two breakpoints at or above 1.
(:func:`add_engine` inserts those two breakpoints when the curve lacks them.)

Shipped profiles (``stepopt latency engines`` lists them; docs/latency.md gives the sources):

- ``none``: kernels only (Vidur's default composition);
- ``sarathi-2024``: fitted to Sarathi-Serve's measured iteration times (OSDI'24 artifact,
  Yi-34B TP2 on A100) minus the ``a100/codellama-34b/tp2`` kernel prediction;
- ``vllm-0.6``: about 6 ms of host work per step, Llama-3-8B on one H100, from vLLM's
  performance blog (Sept 2024); no per-request slope is given there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stepopt.errors import InputError
from stepopt.latency.pwl import PiecewiseLinear


@dataclass(frozen=True, slots=True)
class EngineOverhead:
    """Per-step constant and per-request slope, integer nanoseconds."""

    name: str = "none"
    step_ns: int = 0
    per_request_ns: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        for field in ("step_ns", "per_request_ns"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"engine.{field}", "expected an integer >= 0", value)

    @property
    def is_zero(self) -> bool:
        return self.step_ns == 0 and self.per_request_ns == 0

    def ns(self, batch_size: int) -> int:
        return self.step_ns + self.per_request_ns * batch_size if batch_size >= 1 else 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "step_ns": self.step_ns}
        out["per_request_ns"] = self.per_request_ns
        if self.source:
            out["source"] = self.source
        return out


NONE = EngineOverhead()

# Fitted by ``benchmarks/latency_validation.py --fit-engine`` (least squares on relative error
# over every Sarathi-Serve row; leave-one-out errors in docs/latency.md).
ENGINES: dict[str, EngineOverhead] = {
    e.name: e
    for e in (
        NONE,
        EngineOverhead(
            "sarathi-2024",
            step_ns=18_076_000,
            per_request_ns=1_106_000,
            source="fitted to Sarathi-Serve OSDI'24 iteration times (Yi-34B TP2 A100) minus "
            "the a100/codellama-34b/tp2 kernel prediction",
        ),
        EngineOverhead(
            "vllm-0.6",
            step_ns=6_000_000,
            per_request_ns=0,
            source="vLLM blog 2024-09-05 (v0.6.0 performance update): ~6 ms host overhead per "
            "step, Llama-3-8B on one H100",
        ),
    )
}


def engine_names() -> list[str]:
    return list(ENGINES)


def load_engine(spec: Any, field: str = "engine") -> EngineOverhead:
    """A profile name, an ``EngineOverhead`` or a ``{name, step_ns, per_request_ns}`` dict."""
    if spec is None:
        return NONE
    if isinstance(spec, EngineOverhead):
        return spec
    if isinstance(spec, str):
        if spec not in ENGINES:
            valid = ", ".join(engine_names())
            raise InputError(field, f"unknown engine {spec!r}; valid: {valid}", show_value=False)
        return ENGINES[spec]
    if isinstance(spec, dict):
        if set(spec) == {"profile"}:
            return load_engine(spec["profile"], field)
        unknown = set(spec) - {"name", "step_ns", "per_request_ns", "source"}
        if unknown:
            raise InputError(f"{field}.{sorted(unknown)[0]}", "unknown key", show_value=False)
        try:
            return EngineOverhead(
                name=str(spec.get("name", "custom")),
                step_ns=spec.get("step_ns", 0),
                per_request_ns=spec.get("per_request_ns", 0),
                source=str(spec.get("source", "")),
            )
        except InputError as exc:
            raise InputError(
                f"{field}.{exc.field.split('.')[-1]}", "expected an integer >= 0", exc.value
            ) from None
    raise InputError(field, "expected a profile name or {step_ns, per_request_ns}", spec)


def add_engine(curve: PiecewiseLinear, engine: EngineOverhead, sign: int = 1) -> PiecewiseLinear:
    """``curve + sign * engine`` exactly (breakpoints at 0 and 1 added when missing)."""
    if engine.is_zero:
        return curve
    xs = sorted({*curve.xs, 0, 1})
    return PiecewiseLinear(tuple(xs), tuple(curve(x) + sign * engine.ns(x) for x in xs))
