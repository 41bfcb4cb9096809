"""Helpers shared by the command modules."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def print_json(doc: Any) -> None:
    """One JSON object on stdout (never wrapped or coloured)."""
    sys.stdout.write(json.dumps(doc, indent=1, default=str) + "\n")
    sys.stdout.flush()


def exit_with(code: int) -> None:
    raise typer.Exit(code)
