"""Latency models to and from plain dictionaries (the ``latency_model`` of a problem file)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from stepopt.errors import InputError, validation_error
from stepopt.latency.model import DEFAULT_GRID, LatencyModel, PrefillAttention
from stepopt.latency.pwl import PiecewiseLinear


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CurveSpec(_Strict):
    """Breakpoints of a piecewise-linear curve: x strictly increasing, y in nanoseconds."""

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
        if len(self.x) != len(self.y_ns):
            raise InputError(
                field, f"x has {len(self.x)} values but y_ns has {len(self.y_ns)}", show_value=False
            )
        return PiecewiseLinear(tuple(self.x), tuple(self.y_ns))


class PrefillSpec(_Strict):
    """Prefill attention ``alpha_ns * c * C + beta_ns * c**2`` tabulated on ``grid``."""

    alpha_ns: float = Field(default=0.0, ge=0)
    beta_ns: float = Field(default=0.0, ge=0)
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


class LatencySpec(_Strict):
    """An explicit latency model (see docs/formulation.md)."""

    tokens: CurveSpec
    batch: CurveSpec | None = None
    decode_context_ps: StrictInt = Field(default=0, ge=0)
    prefill_attention: PrefillSpec | None = None
    name: str = "custom"
    description: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)


class PresetRef(_Strict):
    """A shipped preset by name (``stepopt latency presets`` lists them)."""

    preset: str


def model_from_spec(spec: LatencySpec, field: str = "latency_model") -> LatencyModel:
    pre = spec.prefill_attention or PrefillSpec()
    return LatencyModel(
        tokens=spec.tokens.curve(f"{field}.tokens"),
        batch=spec.batch.curve(f"{field}.batch") if spec.batch else PiecewiseLinear.constant(0),
        decode_context_ps=spec.decode_context_ps,
        prefill=PrefillAttention(pre.alpha_ns, pre.beta_ns, tuple(pre.grid)),
        name=spec.name,
        meta=dict(spec.meta),
    )


def model_from_dict(doc: Any, field: str = "latency_model") -> LatencyModel:
    """Validate an explicit model (a ``{"preset": NAME}`` reference is resolved by
    :func:`stepopt.io.latency_from_document`, which knows the presets)."""
    try:
        spec = LatencySpec.model_validate(doc)
    except ValidationError as exc:
        raise validation_error(exc, prefix=field) from None
    return model_from_spec(spec, field)


def model_to_dict(model: LatencyModel) -> dict[str, Any]:
    """The explicit form of a model (round-trips through :func:`model_from_dict`)."""
    return {
        "name": model.name,
        "tokens": {"x": list(model.tokens.xs), "y_ns": list(model.tokens.ys)},
        "batch": {"x": list(model.batch.xs), "y_ns": list(model.batch.ys)},
        "decode_context_ps": model.decode_context_ps,
        "prefill_attention": {
            "alpha_ns": model.prefill.alpha_ns,
            "beta_ns": model.prefill.beta_ns,
            "grid": list(model.prefill.grid),
        },
        "meta": dict(model.meta),
    }
