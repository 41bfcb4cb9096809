"""Latency models to and from plain dictionaries (the ``latency_model`` of a problem file)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
)

from stepopt.errors import InputError, validation_error
from stepopt.latency.engine import NONE, EngineOverhead, load_engine
from stepopt.latency.model import DEFAULT_GRID, LatencyModel, PrefillAttention, exact_coefficient
from stepopt.latency.pwl import PiecewiseLinear, first_negative


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CurveSpec(_Strict):
    """Breakpoints of a piecewise-linear curve: x strictly increasing, y in nanoseconds.

    Between breakpoints the value is the floor of the linear interpolation; the first and
    last pieces are extended outwards. The curve must be non-negative for every x >= 0: a
    first breakpoint above 0 whose piece extends below 0 at x=0, or a last piece that slopes
    down (it crosses 0 eventually), is rejected when the model is loaded.
    """

    x: list[StrictInt] = Field(min_length=1)
    y_ns: list[StrictInt] = Field(min_length=1)

    @field_validator("x")
    @classmethod
    def _increasing(cls, xs: list[int]) -> list[int]:
        for k in range(1, len(xs)):
            if xs[k] <= xs[k - 1]:
                raise ValueError(
                    f"breakpoints must increase strictly, got x[{k - 1}]={xs[k - 1]} "
                    f"then x[{k}]={xs[k]}"
                )
        return xs

    def curve(self, field: str) -> PiecewiseLinear:
        """The curve; one that is negative anywhere on ``x >= 0`` (end pieces extended) is an
        error naming the point, since a step latency below 0 is meaningless."""
        if len(self.x) != len(self.y_ns):
            raise InputError(
                field, f"x has {len(self.x)} values but y_ns has {len(self.y_ns)}", show_value=False
            )
        curve = PiecewiseLinear(tuple(self.x), tuple(self.y_ns))
        bad = first_negative(curve)
        if bad is not None:
            x, y, why = bad
            raise InputError(field, f"negative latency {y} ns at x={x} ({why})", show_value=False)
        return curve


class PrefillSpec(_Strict):
    """Prefill attention ``alpha_ns * c * C + beta_ns * c**2 + linear_ns * c`` tabulated on
    ``grid``, floored to whole ns in exact arithmetic: each coefficient is the decimal written
    (0.7 is 7/10, not the nearest double)."""

    alpha_ns: float = Field(default=0.0, ge=0, description="ns per (chunk token x cached token)")
    beta_ns: float = Field(default=0.0, ge=0, description="ns per chunk token squared")
    linear_ns: float = Field(default=0.0, ge=0, description="ns per chunk token")
    grid: list[StrictInt] = Field(default_factory=lambda: list(DEFAULT_GRID), min_length=1)

    @field_validator("grid")
    @classmethod
    def _grid(cls, grid: list[int]) -> list[int]:
        if grid[0] <= 0:
            raise ValueError(f"grid points must be positive, got {grid[0]}")
        for k in range(1, len(grid)):
            if grid[k] <= grid[k - 1]:
                raise ValueError(f"grid must increase strictly, got {grid[k - 1]} then {grid[k]}")
        return grid


class EngineSpec(_Strict):
    """Engine overhead added to the batch curve: ``step_ns + per_request_ns * b`` for b >= 1."""

    name: str = "custom"
    step_ns: StrictInt = Field(default=0, ge=0, le=10**12)
    per_request_ns: StrictInt = Field(default=0, ge=0, le=10**12)
    source: str = ""


def _engine(value: Any) -> EngineOverhead:
    """A profile name or an explicit engine dict, as one readable error when wrong."""
    if isinstance(value, dict) and set(value) != {"profile"}:
        try:
            e = EngineSpec.model_validate(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"{where}: {err['msg'][0].lower()}{err['msg'][1:]}") from None
        return EngineOverhead(e.name, e.step_ns, e.per_request_ns, e.source)
    if value is not None and not isinstance(value, str | dict):
        raise ValueError("expected a profile name or {step_ns, per_request_ns}")
    try:
        return load_engine(value)
    except InputError as exc:
        raise ValueError(str(exc).removeprefix("engine: ")) from None


EngineRef = Annotated[Any, BeforeValidator(_engine)]
EngineField = Field(
    default=None,
    description="Engine overhead: a profile name (none, sarathi-2024, vllm-0.6) or explicit "
    "{step_ns, per_request_ns}; kept apart from the kernel curves (docs/latency.md).",
)


class LatencySpec(_Strict):
    """An explicit latency model (see docs/formulation.md)."""

    tokens: CurveSpec
    batch: CurveSpec | None = Field(
        default=None, description="Kernel part of F_seq(b); the engine overhead is added to it."
    )
    engine: EngineRef = EngineField
    decode_context_ps: StrictInt = Field(default=0, ge=0)
    prefill_attention: PrefillSpec | None = None
    name: str = "custom"
    description: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)


class PresetRef(_Strict):
    """A shipped preset by name (``stepopt latency presets`` lists them)."""

    preset: str
    engine: EngineRef = EngineField
    kernel: str | None = Field(
        default=None,
        description="Prefill attention kernel (measured, fa2, fa3); default: the preset's own.",
    )


def model_from_spec(spec: LatencySpec, field: str = "latency_model") -> LatencyModel:
    pre = spec.prefill_attention or PrefillSpec()
    model = LatencyModel(
        tokens=spec.tokens.curve(f"{field}.tokens"),
        batch=spec.batch.curve(f"{field}.batch") if spec.batch else PiecewiseLinear.constant(0),
        decode_context_ps=spec.decode_context_ps,
        prefill=PrefillAttention(pre.alpha_ns, pre.beta_ns, tuple(pre.grid), pre.linear_ns),
        name=spec.name,
        meta=dict(spec.meta),
    )
    engine = spec.engine or NONE
    return model if engine.is_zero else model.with_engine(engine)


def model_from_explicit(doc: Any, field: str = "latency_model") -> LatencyModel:
    """Validate an explicit model (curves and terms written out; presets are resolved by
    :func:`stepopt.latency.documents.model_from_dict`)."""
    try:
        spec = LatencySpec.model_validate(doc)
    except ValidationError as exc:
        raise validation_error(exc, prefix=field) from None
    return model_from_spec(spec, field)


def model_to_dict(model: LatencyModel) -> dict[str, Any]:
    """The explicit form of a model (round-trips through :func:`model_from_explicit`)."""
    pre, kernel = model.prefill, model.kernel_batch
    prefill: dict[str, Any] = {"alpha_ns": _number(pre.alpha_ns), "beta_ns": _number(pre.beta_ns)}
    if pre.exact[2]:
        prefill["linear_ns"] = _number(pre.linear_ns)
    prefill["grid"] = list(pre.grid)
    return {
        "name": model.name,
        "tokens": {"x": list(model.tokens.xs), "y_ns": list(model.tokens.ys)},
        "batch": {"x": list(kernel.xs), "y_ns": list(kernel.ys)},
        **({} if model.engine.is_zero else {"engine": model.engine.to_dict()}),
        "decode_context_ps": model.decode_context_ps,
        "prefill_attention": prefill,
        "meta": dict(model.meta),
    }


def _number(value: Any) -> float | int:
    """A coefficient for JSON; a fraction whose decimal is not exact is an error (it would not
    read back as the same model)."""
    if isinstance(value, int | float):
        return value
    exact = exact_coefficient(value)
    if exact.denominator == 1:
        return int(exact)
    f = float(exact)
    if exact_coefficient(f) != exact:
        raise ValueError(f"coefficient {value} has no exact decimal form; round it first")
    return f
