"""The ``stepopt`` command line: thin wrappers around the library.

Each command module exposes ``register(app)``. Errors a user can fix print one line and exit
with code 2 (a usage error too); set ``STEPOPT_DEBUG=1`` to see tracebacks. Help is plain
text (no panels that truncate option names at 80 columns).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer

from stepopt.errors import StepoptError

app = typer.Typer(
    name="stepopt",
    help="The scheduling step of LLM serving engines as an optimization problem.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = [
    "core",
    "solve_cmds",
    "latency_cmds",
    "heuristic_cmds",
    "study_cmds",
    "simulate_cmds",
    "frontier_cmds",
    "tune_cmds",
    "horizon_cmds",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"stepopt.cli.{_name}").register(app)


def _version(value: bool) -> None:
    if value:
        from stepopt import __version__

        print(f"stepopt {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_version
        ),
    ] = False,
) -> None:
    """The scheduling step of LLM serving engines as an optimization problem."""


def _is_click_error(exc: BaseException) -> bool:
    # typer bundles its own click in recent releases: match by class name, not by import.
    return any(c.__name__ == "ClickException" for c in type(exc).__mro__)


def _usage_error(exc: BaseException) -> int:
    """A usage error (unknown option, missing argument, a value of the wrong type) on one
    line; the bare help of a group called without a command as it is."""
    code = int(getattr(exc, "exit_code", 2))
    message = exc.format_message()  # type: ignore[attr-defined]
    if type(exc).__name__ == "NoArgsIsHelpError":
        print(message, file=sys.stderr)
        return code
    ctx = getattr(exc, "ctx", None)
    where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
    text = " ".join(message.split())
    print(f"error: {text}{where}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    debug = bool(os.environ.get("STEPOPT_DEBUG"))
    try:
        code = app(args=argv, standalone_mode=False, prog_name="stepopt")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except StepoptError as exc:
        if debug:
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`stepopt ... | head`): stop quietly, as other tools do.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (the exit flush must not fail)
        return 141
    except OSError as exc:
        # Writing a result failed (disk full, permissions): the file and the reason.
        if debug or exc.filename is None:
            raise
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            raise
        if type(exc).__name__ == "Abort":
            print("aborted", file=sys.stderr)
            return 1
        if not _is_click_error(exc):
            raise
        return _usage_error(exc)
    return code if isinstance(code, int) else 0


def run() -> None:
    sys.exit(main())
