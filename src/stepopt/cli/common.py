"""Helpers shared by the command modules.

Command modules import only this, typer and the standard library at start-up; everything a
command needs (numpy, pydantic, solvers, rich tables) is imported inside the command, so
``stepopt --help`` and light commands start fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from stepopt.errors import InputError, MissingExtraError
from stepopt.limits import check_seed, check_time_limit, finite


class _LazyConsole:
    """A rich console created on first use (importing rich costs start-up time)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return getattr(self._console, name)


console: Any = _LazyConsole(stderr=False)
err_console: Any = _LazyConsole(stderr=True)


class Command(TyperCommand):
    """Usage lines in the usual form: ``PROBLEM`` for a required argument, ``[PROBLEM]`` for
    an optional one (typer writes ``{problem}``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for p in self.params:
            if p.param_type_name == "argument" and p.metavar is None and p.name:
                p.metavar = p.name.upper()

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name == "argument":
                name = p.metavar or (p.name or "").upper()
                pieces.append(name if p.required else f"[{name}]")
        return pieces


def command(app: typer.Typer, name: str) -> Callable[[Callable[..., Any]], Any]:
    """``app.command(name)`` with the usage lines of :class:`Command`."""
    return app.command(name, cls=Command)


def print_json(doc: Any) -> None:
    """One JSON object on stdout (never wrapped or coloured)."""
    sys.stdout.write(json.dumps(doc, indent=1, default=str) + "\n")
    sys.stdout.flush()


def exit_with(code: int) -> None:
    raise typer.Exit(code)


def _writable_dir(d: Path, option: str, path: Path) -> None:
    if not d.is_dir():
        what = "is not a directory" if d.exists() else "does not exist"
        raise InputError(option, f"directory {str(d)!r} {what}", str(path))
    if not os.access(d, os.W_OK):
        raise InputError(option, f"cannot write in directory {str(d)!r}", str(path))


def output_file(path: Path | None, option: str) -> Path | None:
    """Check a file to write before any work: not a directory, in a directory that exists
    and is writable. Returns ``path``."""
    if path is None:
        return None
    if path.is_dir():
        raise InputError(option, "is a directory; give a file name", str(path))
    _writable_dir(path.parent, option, path)
    return path


def output_dir(path: Path | None, option: str) -> Path | None:
    """Check a directory to write into: absent (it is created, parents too) or a directory."""
    if path is None:
        return None
    if path.exists() and not path.is_dir():
        raise InputError(option, "exists and is not a directory", str(path))
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    _writable_dir(probe, option, path)
    return path


def figure_file(path: Path | None, option: str) -> Path | None:
    """:func:`output_file` for a figure whose suffix matplotlib can write (png, pdf, svg...)."""
    if path is None:
        return None
    output_file(path, option)
    suffix = path.suffix.lower().lstrip(".")
    try:
        import matplotlib  # noqa: F401  (the extra itself, before its submodule)
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise MissingExtraError("matplotlib", "plot", f"{option} (a figure)") from None
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix not in formats:
        valid = ", ".join(sorted(formats))
        raise InputError(
            option, f"unknown figure format {suffix or '(none)'!r}; valid: {valid}", str(path)
        )
    return path


def sub_app(help: str) -> typer.Typer:
    """A command group (``stepopt latency ...``) with the root's plain help."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


def warn_kv_capacity(problem: Any) -> None:
    """One stderr line when the running requests cannot fit in the preset's KV cache."""
    from stepopt.latency.capacity import running_fit_message

    msg = running_fit_message(problem)
    if msg is not None:
        print(f"warning: {msg}", file=sys.stderr)


def split_names(text: str) -> list[str]:
    """``a,b,c`` as a list (blanks dropped)."""
    return [n.strip() for n in text.split(",") if n.strip()]


def check_flags(
    *,
    time_limit: float | None,
    seed: int | None = None,
    positive: dict[str, float | None],
    files: dict[str, Path | None],
) -> None:
    """Numeric flags and output files checked before any work, each a one-line error."""
    check_time_limit(time_limit)
    if seed is not None:
        check_seed(seed)
    for flag, value in positive.items():
        if value is not None and not finite(value, flag) > 0:
            raise InputError(flag, "must be > 0", value)
    for flag, path in files.items():
        if flag == "--plot":
            figure_file(path, flag)
        else:
            output_file(path, flag)
