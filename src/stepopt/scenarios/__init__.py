"""Problem generators: ``synthetic``, ``trace:CSV`` and ``snapshot:DIR``.

All are seeded (``numpy.random.default_rng([seed, index])``); the same arguments write
byte-identical problem files. :func:`write_problem_set` writes one problem file per state and a
``manifest.json`` with the knobs of each (regime, load, target factor, ...) for reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stepopt.errors import InputError
from stepopt.io import problem_hash, problem_to_dict
from stepopt.scenarios.common import (
    MIX,
    REGIMES,
    GenerateOptions,
    Scenario,
    derive_target_ms,
    problem_dims,
)
from stepopt.scenarios.snapshot import MANIFEST, problem_files, read_manifest

SOURCES = ("synthetic", "trace:CSV", "snapshot:DIR")
PREFERRED_PRESETS = ("a100/llama-2-7b/tp1", "a100/codellama-34b/tp2", "demo")


def default_presets() -> tuple[str, ...]:
    """The first measured preset that ships, else ``demo``."""
    from stepopt.latency.presets import preset_names

    names = preset_names()
    for name in PREFERRED_PRESETS:
        if name in names:
            return (name,)
    return (names[0],) if names else ("demo",)


def parse_source(source: str) -> tuple[str, str | None]:
    kind, _, arg = source.partition(":")
    if kind == "synthetic" and not arg:
        return kind, None
    if kind in ("trace", "snapshot") and arg:
        return kind, arg
    raise InputError("source", f"must be one of {', '.join(SOURCES)}", source)


def iter_scenarios(source: str, opts: GenerateOptions) -> Iterator[Scenario]:
    """The scenarios of a source, in order."""
    kind, arg = parse_source(source)
    from stepopt.latency.presets import load_preset

    for name in opts.presets:
        load_preset(name)  # unknown names fail before any work
    if kind == "synthetic":
        from stepopt.scenarios.synthetic import generate_one

        for i in range(opts.count):
            yield generate_one(opts, i)
    elif kind == "trace":
        from stepopt.scenarios.trace import generate_one as trace_one
        from stepopt.scenarios.trace import load_trace

        load_trace(str(Path(arg).resolve()))  # validate once, up front
        for i in range(opts.count):
            yield trace_one(opts, i, arg)
    else:
        from stepopt.scenarios.snapshot import generate as snap

        yield from snap(opts, arg)


def write_problem_set(
    scenarios: Iterable[Scenario],
    out_dir: str | Path,
    args: dict[str, Any] | None = None,
    *,
    replace: bool = False,
) -> list[dict[str, Any]]:
    """Write ``p00000.json``... and ``manifest.json``; returns the manifest records.

    A directory that already holds a problem set is refused (a study reads every problem file
    of it, and the old set would be lost without a word) unless ``replace``: then its problem
    files and manifest are removed once every new problem is generated."""
    out = Path(out_dir)
    scenarios = list(scenarios)
    names = [f"p{i:05d}.json" for i in range(len(scenarios))]
    if out.is_dir():
        old = problem_files(out)
        manifest = out / MANIFEST
        if (old or manifest.exists()) and not replace:
            raise InputError(
                "out",
                f"already holds a problem set ({len(old)} problem file(s), e.g. "
                f"{(old[0].name if old else MANIFEST)}); replace it with --force (replace=True "
                "in Python) or use another directory",
                str(out),
            )
        for f in old:
            f.unlink()
        manifest.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for name, sc in zip(names, scenarios, strict=True):
        doc = problem_to_dict(sc.problem)
        (out / name).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        rec = {"file": name, "hash": problem_hash(sc.problem), **problem_dims(sc.problem)}
        rec.update(sc.meta)
        records.append(rec)
    manifest = {"generator": "stepopt.scenarios", "args": args or {}, "problems": records}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return records


def generate(
    source: str, opts: GenerateOptions, out_dir: str | Path, *, replace: bool = False
) -> list[dict[str, Any]]:
    """Generate ``opts.count`` problems from ``source`` into ``out_dir`` (refused when it holds
    a problem set already, unless ``replace``)."""
    args = {
        "source": source,
        "count": opts.count,
        "seed": opts.seed,
        "presets": list(opts.presets),
        "target_ms": opts.target_ms,
        "objective": opts.objective or MIX,
        "priority_mode": opts.priority_mode or MIX,
        "regimes": list(opts.regimes),
        "load": opts.load,
        "concurrency": opts.concurrency,
        "max_waiting": opts.max_waiting,
    }
    return write_problem_set(iter_scenarios(source, opts), out_dir, args, replace=replace)


__all__ = [
    "MANIFEST",
    "REGIMES",
    "SOURCES",
    "GenerateOptions",
    "Scenario",
    "default_presets",
    "derive_target_ms",
    "generate",
    "iter_scenarios",
    "parse_source",
    "problem_dims",
    "problem_files",
    "read_manifest",
    "write_problem_set",
]
