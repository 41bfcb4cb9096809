"""The relative optimality gap of FORMULATION.md, written once (studies and test assertions)."""

from __future__ import annotations


def relative_gap(objective: str, value: float, reference: float, target: float) -> float | None:
    """Gap of ``value`` against ``reference`` (the optimum or a bound), in the same unit.

    ``target``: values are deviations ``|L - T|`` and the gap is ``(value - reference) / T``
    (``target`` in that unit too); ``goodput``: values are weighted tokens and the gap is
    ``(reference - value) / reference``, 0 when both are 0 and undefined (None) when only the
    reference is.
    """
    if objective == "target":
        return (value - reference) / target
    if reference == 0:
        return 0.0 if value == 0 else None
    return (reference - value) / reference
