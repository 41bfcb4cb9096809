"""Errors a user can act on. The CLI prints them on one line and exits with code 2."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


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

    def __init__(self, kind: str, name: str, valid: list[str], field: str | None = None):
        super().__init__(
            field or kind,
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


def validation_error(exc: ValidationError, prefix: str = "") -> InputError:
    """The first pydantic error as one line naming the field and the value."""
    err = exc.errors()[0]
    path = prefix
    for part in err["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("PresetRef", "LatencySpec"):
            continue  # union branch names: not a field the user wrote
        else:
            path += f".{part}" if path else str(part)
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    value = err.get("input")
    show = err["type"] not in ("missing",) and not isinstance(value, dict | list)
    return InputError(path or "file", msg[0].lower() + msg[1:], value, show_value=show)


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
