"""The ``stepopt`` command line: thin wrappers around the library.

Each command module exposes ``register(app)``. Errors a user can fix print one line and exit
with code 2; set ``STEPOPT_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from stepopt.errors import StepoptError

app = typer.Typer(
    name="stepopt",
    help="The scheduling step of LLM serving engines as an optimization problem.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = [
    "core",
    "solve_cmds",
    "latency_cmds",
    "heuristic_cmds",
    "study_cmds",
    "simulate_cmds",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"stepopt.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except StepoptError as exc:
        if os.environ.get("STEPOPT_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> None:
    sys.exit(main())
