"""Errors a user can act on. The CLI prints them on one line and exits with code 2."""

from __future__ import annotations


class StepoptError(Exception):
    """Base class of the errors stepopt raises on purpose."""


class InputError(StepoptError, ValueError):
    """Bad user input: names the field and the value at fault."""

    def __init__(self, field: str, message: str, value: object = None, *, show_value=True):
        self.field = field
        self.value = value
        text = f"{field}: {message}"
        if show_value and value is not None:
            text += f" (got {_short(value)})"
        super().__init__(text)


class UnknownNameError(InputError):
    """A name looked up in a registry (solver, heuristic, preset) that does not exist."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        super().__init__(
            kind,
            f"unknown {kind} {name!r}; valid: {', '.join(valid) or '(none)'}",
            show_value=False,
        )
        self.name = name
        self.valid = valid


class MissingExtraError(StepoptError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the optional package {package!r}: pip install 'stepopt[{extra}]'"
        )


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
