"""The one reader of request-trace CSVs (Vidur's processed traces and our own column names).

Columns: ``arrived_at``/``arrival_time`` (seconds, optional), ``num_prefill_tokens``/
``prompt_tokens``, ``num_decode_tokens``/``output_tokens`` and an optional ``priority`` (lower
= more urgent). The simulator (:mod:`stepopt.simulate.trace`) and the trace scenarios
(:mod:`stepopt.scenarios.trace`) both read through :func:`read_trace_csv`; each validates the
columns for its own use (the simulator needs at least one output token per request).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from stepopt.errors import InputError
from stepopt.io import read_text
from stepopt.limits import MAX_PRIORITY, seconds, whole_number

ALIASES = {
    "arrival": ("arrived_at", "arrival_time"),
    "prompt": ("num_prefill_tokens", "prompt_tokens"),
    "output": ("num_decode_tokens", "output_tokens"),
    "priority": ("priority",),
}


@dataclass(frozen=True, slots=True)
class TraceColumns:
    """The rows of a trace CSV in file order; optional columns are None when absent."""

    name: str
    prompts: list[int]
    outputs: list[int]
    arrivals_s: list[float] | None
    priorities: list[int] | None


def read_trace_csv(path: str | Path, field: str = "trace", min_output: int = 1) -> TraceColumns:
    """Read and validate a trace CSV; errors name ``field`` (or the file line and column)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(field, "file not found", str(p))
    reader = csv.reader(read_text(p, field).splitlines())
    header = next(reader, None)
    if header is None:
        raise InputError(field, "empty file", str(p))
    cols = {name.strip(): k for k, name in enumerate(header)}
    where = {
        key: next((cols[a] for a in names if a in cols), None) for key, names in ALIASES.items()
    }
    for key in ("prompt", "output"):
        if where[key] is None:
            raise InputError(field, f"missing column {ALIASES[key][0]!r}", ", ".join(header))
    ia, ip, io_, ipr = where["arrival"], where["prompt"], where["output"], where["priority"]
    arrivals: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    prios: list[int] = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        at = f"{field} line {line}"
        if len(row) < len(header):
            raise InputError(at, f"{len(row)} cells, the header has {len(header)}", ",".join(row))
        prompts.append(whole_number(row[ip], f"{at}.{header[ip]}", 1))
        outputs.append(whole_number(row[io_], f"{at}.{header[io_]}", min_output))
        if ia is not None:
            arrivals.append(seconds(row[ia], f"{at}.{header[ia]}"))
        if ipr is not None:
            prios.append(whole_number(row[ipr], f"{at}.{header[ipr]}", -MAX_PRIORITY, MAX_PRIORITY))
    if not prompts:
        raise InputError(field, "no requests in file", str(p))
    return TraceColumns(
        p.name,
        prompts,
        outputs,
        arrivals if ia is not None else None,
        prios if ipr is not None else None,
    )
