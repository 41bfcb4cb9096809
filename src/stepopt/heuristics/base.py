"""The heuristic registry: any callable ``(StepProblem) -> Decision`` registered by name.

Packages may add heuristics through the entry-point group ``stepopt.heuristics`` (the entry
point's value is the callable, ``package.module:function``); they are then accepted by name
everywhere. :func:`get_heuristic` also accepts a ``module:function`` import path for a
heuristic that is not registered at all.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from stepopt.errors import InputError, UnknownNameError
from stepopt.evaluate import Rule
from stepopt.model import Decision, StepProblem

Heuristic = Callable[[StepProblem], Decision]

ENTRY_POINT_GROUP = "stepopt.heuristics"
# The status word of a heuristic's result wherever results carry one (CLI, studies, frontier).
HEURISTIC_STATUS = "HEURISTIC"
_HEURISTICS: dict[str, Heuristic] = {}
# Entry points are discovered per ``sys.path`` (a path added later, e.g. a plug-in installed
# into a running session or a test's site dir, is seen) and loaded only when looked up, so
# listing names never imports a plug-in.
_ep_scan: tuple[tuple[str, ...], dict[str, EntryPoint]] | None = None
_ep_loaded: dict[tuple[str, str], Heuristic] = {}


@dataclass(frozen=True)
class HeuristicInfo:
    """What the registry knows about a heuristic: the evaluator rules it may break (a replay
    of another scheduler's logic, such as vLLM's) and whether it preempts running requests
    by itself (``Decision.preempted``). Plug-ins and import paths get the defaults: every
    rule holds, no preemption."""

    name: str
    exempt: frozenset[Rule] = frozenset()
    preempts: bool = False


_INFO: dict[str, HeuristicInfo] = {}


def register_heuristic(
    name: str, *, exempt: Iterable[Rule] = (), preempts: bool = False
) -> Callable[[Heuristic], Heuristic]:
    """Decorator: register ``fn`` under ``name`` with the rules it may break."""

    def deco(fn: Heuristic) -> Heuristic:
        _HEURISTICS[name] = fn
        _INFO[name] = HeuristicInfo(name, frozenset(exempt), preempts)
        return fn

    return deco


def heuristic_info(name: str) -> HeuristicInfo:
    """The registry's metadata of ``name`` (the defaults for plug-ins and import paths)."""
    _builtin()
    return _INFO.get(name) or HeuristicInfo(name)


def builtin_heuristic_names() -> list[str]:
    """The heuristics this package registers (no plug-ins)."""
    return sorted(_builtin())


def _builtin() -> dict[str, Heuristic]:
    import stepopt.heuristics  # noqa: F401  (registers the built-ins)

    return _HEURISTICS


def _plugins() -> dict[str, EntryPoint]:
    """Entry points of the group by name; a registered name wins over a plug-in's."""
    global _ep_scan
    key = tuple(sys.path)
    if _ep_scan is None or _ep_scan[0] != key:
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            found.setdefault(ep.name, ep)  # first on sys.path wins, as for imports
        _ep_scan = (key, found)
    return _ep_scan[1]


def _load_entry_point(ep: EntryPoint) -> Heuristic:
    key = (ep.name, ep.value)
    if key not in _ep_loaded:
        try:
            fn = ep.load()
        except Exception as exc:  # a broken plug-in must not look like an unknown name
            raise InputError(
                "heuristic",
                f"entry point {ep.name!r} = {ep.value!r} (group {ENTRY_POINT_GROUP}) "
                f"failed to load: {type(exc).__name__}: {exc}",
                show_value=False,
            ) from None
        if not callable(fn):
            raise InputError("heuristic", f"entry point {ep.name!r} = {ep.value!r} is not callable")
        _ep_loaded[key] = fn
    return _ep_loaded[key]


def check_signature(fn: Heuristic, name: str, params: Mapping[str, Any] | None = None) -> None:
    """A user's heuristic must be callable as ``fn(problem, **params)``: a one-line error
    naming it otherwise (``-n builtins:print``, a function of two required arguments)."""
    if getattr(fn, "__module__", None) == "builtins":
        raise InputError("heuristic", f"{name!r} is a Python built-in, not a heuristic")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no signature to read: its result is checked instead
    try:
        if params is None:  # only the problem is known yet: keyword parameters may follow
            sig.bind_partial(None)
            required = [
                p
                for p in sig.parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
            ]
            if len(required) > 1:
                raise TypeError(f"it requires {len(required)} positional arguments")
        else:
            sig.bind(None, **params)
    except TypeError as exc:
        call = f"{name}(problem{', **params' if params else ''})"
        raise InputError(
            "heuristic", f"cannot be called as {call}: {exc}; signature {sig}", show_value=False
        ) from None


def checked_decision(value: Any, name: str) -> Decision:
    """``value`` when a heuristic returned a Decision; a one-line error otherwise."""
    if not isinstance(value, Decision):
        raise InputError(
            "heuristic",
            f"{name!r} returned {type(value).__name__}, not a stepopt Decision",
            show_value=False,
        )
    return value


def heuristic_names() -> list[str]:
    """Registered heuristics and those of installed plug-ins (entry points)."""
    return sorted(set(_builtin()) | set(_plugins()))


def get_heuristic(name: str) -> Heuristic:
    """The heuristic registered (or provided by an entry point) under ``name``, or a
    ``package.module:function`` path, so every place that takes a name takes a path too."""
    registered = _builtin()
    if name in registered:
        return registered[name]
    if ":" in name:
        fn = _import_path(name)
    else:
        ep = _plugins().get(name)
        if ep is None:
            raise UnknownNameError("heuristic", name, heuristic_names())
        fn = _load_entry_point(ep)
    check_signature(fn, name)
    return fn


def _import_path(name_or_path: str) -> Heuristic:
    """The callable at ``package.module:function``; errors name what failed to import, so a
    team's own heuristic works without registering it."""
    module, _, attr = name_or_path.partition(":")
    if not module or not attr:
        raise InputError("heuristic", "expected a name or module:function", name_or_path)
    try:
        obj = _import_module(module)
    except ImportError as exc:
        raise InputError(
            "heuristic",
            f"cannot import module {module!r} of {name_or_path!r}: {exc}",
            show_value=False,
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(
                "heuristic",
                f"module {module!r} has no attribute {attr!r}",
                name_or_path,
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError("heuristic", f"{name_or_path!r} is not callable", type(obj).__name__)
    return obj


def _import_module(module: str) -> Any:
    """Import ``module``; a module in the current directory is found too (as with
    ``python -m``), searched after everything installed so it never shadows a package."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        top = module.partition(".")[0]
        if exc.name != top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(module)


def coerce_params(fn: Heuristic, raw: Mapping[str, str], field: str) -> dict[str, Any]:
    """Text ``key=value`` parameters (from a command line or a policy spec) checked against
    ``fn``'s keyword parameters and converted to the type of each one's default: ``true`` or
    ``false`` for a bool, an integer for an int, a number for a float. Where a parameter has
    no default, the value is read as true/false, then int, then float, else kept as text."""
    try:
        rest = list(inspect.signature(fn).parameters.values())[1:]  # [0] is the problem
    except (TypeError, ValueError):
        rest = []
    if any(p.kind == p.VAR_KEYWORD for p in rest) or not rest:
        known: dict[str, inspect.Parameter] | None = None
    else:
        known = {p.name: p for p in rest if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    out: dict[str, Any] = {}
    for key, text in raw.items():
        key = key.strip().replace("-", "_")
        if known is not None and key not in known:
            valid = ", ".join(sorted(known)) or "(none)"
            raise InputError(field, f"unknown parameter {key!r}; valid: {valid}", key)
        param = known[key] if known is not None else None
        out[key] = _coerce(text.strip(), _kind(param), field, key)
    return out


def _kind(param: inspect.Parameter | None) -> Any:
    """A value whose type says what the parameter takes: its default, or else a sample of
    the type its annotation names (``int | None`` takes an int)."""
    if param is None:
        return None
    if param.default not in (None, inspect.Parameter.empty):
        return param.default
    note = param.annotation if isinstance(param.annotation, str) else str(param.annotation)
    for name, sample in (("bool", False), ("int", 0), ("float", 0.0), ("str", "")):
        if name in note:
            return sample
    return None


def _coerce(text: str, default: Any, field: str, key: str) -> Any:
    low = text.lower()
    if isinstance(default, bool):
        if low not in ("true", "false"):
            raise InputError(field, f"{key} takes true or false", text)
        return low == "true"
    for kind, cast, word in ((int, int, "an integer"), (float, float, "a finite number")):
        if isinstance(default, kind):
            try:
                value = cast(text)
            except ValueError:
                raise InputError(field, f"{key} takes {word}", text) from None
            if not math.isfinite(value):
                raise InputError(field, f"{key} takes {word}", text)
            return value
    if isinstance(default, str):
        return text
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
