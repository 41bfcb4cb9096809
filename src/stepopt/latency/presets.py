"""Latency presets shipped with the package, looked up by name.

A preset is a JSON file under ``stepopt/latency/presets/``; its name is its path without the
``.json`` suffix (``demo``, ``h100/llama-2-7b/tp1``). Only fitted coefficients ship, never
profiling data.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from stepopt.errors import UnknownNameError
from stepopt.latency.model import LatencyModel


def _root():
    return resources.files("stepopt.latency") / "presets"


@lru_cache(maxsize=1)
def preset_names() -> tuple[str, ...]:
    names: list[str] = []

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".json"):
                names.append(prefix + child.name[: -len(".json")])

    walk(_root(), "")
    return tuple(sorted(names))


@cache
def preset_document(name: str) -> dict[str, Any]:
    """The raw JSON document of a preset."""
    if name not in preset_names():
        raise UnknownNameError("preset", name, list(preset_names()))
    path = _root().joinpath(*f"{name}.json".split("/"))
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


@cache
def load_preset(name: str) -> LatencyModel:
    """The latency model of a shipped preset; an unknown name lists the valid ones."""
    from stepopt.latency.serialize import model_from_explicit  # pydantic: only when parsing

    doc = dict(preset_document(name))
    doc.setdefault("name", name)
    return model_from_explicit(doc, field="latency_model")


REFERENCE_PRESET = "a100/codellama-34b/tp2"  # the measured attention shape, measured kernel


def with_kernel(model: LatencyModel, kernel: str, field: str = "kernel") -> LatencyModel:
    """A fitted preset's model with another prefill attention kernel (``measured``, ``fa2``,
    ``fa3``; see :mod:`stepopt.latency.kernels`)."""
    from stepopt.latency.kernels import prefill_efficiency, with_prefill_kernel

    measured = prefill_efficiency(load_preset(REFERENCE_PRESET))
    return with_prefill_kernel(model, kernel, measured, field)
