"""Target latency rules: the step target as a function of the engine's queues.

Syntax (``--target-rule``)::

    50                                   fixed 50 ms (same as --target-ms 50)
    fixed:50                             the same
    adaptive:base=50,min=25,queue=64     linear: 50 ms with an empty waiting queue, down to
                                         25 ms when 64 or more requests wait
    adaptive:base=50,min=25,queue=64,shape=step
                                         step: 25 ms from 64 waiting requests on, else 50 ms

The load-adaptive rule is the original design's example: a long waiting queue lowers the
target, so steps get shorter and the engine reaches the next admission sooner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

from stepopt.errors import InputError
from stepopt.limits import check_target_ms

Shape = Literal["linear", "step"]


class TargetRule(Protocol):
    spec: str

    def __call__(self, n_waiting: int, n_running: int) -> float: ...


@dataclass(frozen=True)
class FixedTarget:
    ms: float

    def __post_init__(self) -> None:
        check_target_ms(self.ms, "target_ms")

    @property
    def spec(self) -> str:
        return f"fixed:{self.ms:g}"

    def __call__(self, n_waiting: int, n_running: int) -> float:
        return self.ms


@dataclass(frozen=True)
class AdaptiveTarget:
    base: float
    min: float
    queue: int
    shape: Shape = "linear"

    def __post_init__(self) -> None:
        check_target_ms(self.base, "target-rule base")
        check_target_ms(self.min, "target-rule min")
        if not self.min <= self.base:
            raise InputError("target-rule min", f"must be in (0, base={self.base:g}] ms", self.min)
        if self.queue < 1:
            raise InputError("target-rule queue", "must be >= 1 waiting requests", self.queue)
        if self.shape not in ("linear", "step"):
            raise InputError("target-rule shape", "must be linear or step", self.shape)

    @property
    def spec(self) -> str:
        s = f"adaptive:base={self.base:g},min={self.min:g},queue={self.queue}"
        return s if self.shape == "linear" else s + ",shape=step"

    def __call__(self, n_waiting: int, n_running: int) -> float:
        if self.shape == "step":
            return self.min if n_waiting >= self.queue else self.base
        frac = min(n_waiting / self.queue, 1.0)
        return self.base - (self.base - self.min) * frac


def parse_target_rule(text: str) -> TargetRule:
    """Parse the ``--target-rule`` syntax (module docstring)."""
    raw = text.strip()
    kind, sep, rest = raw.partition(":")
    if not sep:
        kind, rest = "fixed", raw
    kind = kind.strip().lower()
    if kind == "fixed":
        return FixedTarget(_number("target-rule", rest))
    if kind != "adaptive":
        raise InputError("target-rule", "expected NUMBER, fixed:MS or adaptive:k=v,...", text)
    params: dict[str, str] = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise InputError("target-rule", "expected key=value items after adaptive:", item)
        if key not in ("base", "min", "queue", "shape"):
            raise InputError("target-rule", "unknown key; valid: base, min, queue, shape", key)
        params[key] = value.strip()
    missing = [k for k in ("base", "min", "queue") if k not in params]
    if missing:
        raise InputError("target-rule", f"adaptive needs {', '.join(missing)}", text)
    queue = _number("target-rule queue", params["queue"])
    if not math.isfinite(queue) or queue != int(queue):
        raise InputError("target-rule queue", "must be a whole number", params["queue"])
    return AdaptiveTarget(
        base=_number("target-rule base", params["base"]),
        min=_number("target-rule min", params["min"]),
        queue=int(queue),
        shape=params.get("shape", "linear"),  # type: ignore[arg-type]
    )


def _number(field: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(field, "not a number", text) from None
