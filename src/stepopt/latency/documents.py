"""A latency model from a document: an explicit model or a ``{"preset": NAME}`` reference.

Kept apart from :mod:`stepopt.latency.serialize` (the explicit schema, which presets are parsed
with) so that presets and the schema do not import each other.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from stepopt.errors import UnknownNameError, validation_error
from stepopt.latency.model import LatencyModel
from stepopt.latency.presets import load_preset, preset_names, with_kernel
from stepopt.latency.serialize import PresetRef, model_from_explicit

__all__ = ["model_from_dict"]


def model_from_dict(doc: Any, field: str = "latency_model") -> LatencyModel:
    """Validate an explicit model or a ``{"preset": NAME}`` reference (with an optional
    ``engine`` and ``kernel``)."""
    if not (isinstance(doc, dict) and "preset" in doc):
        return model_from_explicit(doc, field)
    try:
        ref = PresetRef.model_validate(doc)
    except ValidationError as exc:
        raise validation_error(exc, prefix=field) from None
    if ref.preset not in preset_names():
        raise UnknownNameError("preset", ref.preset, list(preset_names()), f"{field}.preset")
    model = load_preset(ref.preset)
    if ref.kernel is not None:
        model = with_kernel(model, ref.kernel, f"{field}.kernel")
    return model if ref.engine is None else model.with_engine(ref.engine)
