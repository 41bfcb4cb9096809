"""States captured from a simulation: a directory of problem files.

``stepopt simulate ... --snapshot-dir DIR`` writes one problem file per captured engine step;
``--source snapshot:DIR`` reads any directory of problem files (``*.json``, ``*.yaml``,
``*.yml``; a ``manifest.json`` there is read for its per-file records, not as a problem). A
seeded sample of ``count`` files is taken when the directory holds more; ``--target-ms``,
``--objective`` and ``--priority-mode`` override the files' own values only when given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stepopt.errors import InputError
from stepopt.io import load_problem
from stepopt.scenarios.common import GenerateOptions, Scenario, derive_target_ms, problem_dims

MANIFEST = "manifest.json"
SUFFIXES = (".json", ".yaml", ".yml")


def problem_files(directory: str | Path) -> list[Path]:
    """Problem files of a directory, sorted by name (the manifest excluded)."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError("problems", "not a directory", str(d))
    return sorted(p for p in d.iterdir() if p.suffix.lower() in SUFFIXES and p.name != MANIFEST)


def read_manifest(directory: str | Path) -> dict[str, dict[str, Any]]:
    """Per-file records of ``DIR/manifest.json`` keyed by file name ({} when absent)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(str(path), f"invalid JSON: {exc.msg}", show_value=False) from None
    rows = doc.get("problems", []) if isinstance(doc, dict) else []
    return {r["file"]: r for r in rows if isinstance(r, dict) and "file" in r}


def generate(opts: GenerateOptions, directory: str) -> list[Scenario]:
    files = problem_files(directory)
    if not files:
        raise InputError("source", "no problem files in snapshot directory", directory)
    manifest = read_manifest(directory)
    if opts.count < len(files):
        rng = np.random.default_rng([int(opts.seed), 0])
        keep = sorted(rng.choice(len(files), size=opts.count, replace=False).tolist())
        files = [files[k] for k in keep]
    out = []
    for f in files:
        prob = load_problem(f)
        changes: dict[str, Any] = {}
        if opts.objective:
            changes["objective"] = opts.objective
        if opts.priority_mode:
            changes["priority_mode"] = opts.priority_mode
        if opts.target_ms is not None:
            changes["target_latency_ms"] = float(opts.target_ms)
        if changes:
            prob = prob.with_changes(**changes)
        rec = manifest.get(f.name, {})
        meta: dict[str, Any] = {
            k: v for k, v in rec.items() if k not in ("file", "hash") and not k.startswith("n_")
        }
        meta.update(
            {
                "source": f"snapshot:{Path(directory).name}",
                "snapshot_file": f.name,
                "regime": rec.get("regime", "snapshot"),
                "preset": prob.latency.name,
                "objective": prob.objective,
                "priority_mode": prob.priority_mode,
                "target_ms": prob.target_latency_ms,
            }
        )
        if "load" not in meta:
            meta["load"] = problem_dims(prob)["demand_ratio"]
        if opts.target_ms is None and "target_factor" not in meta:
            meta["target_factor"] = None
        out.append(Scenario(prob, meta))
    return out


__all__ = ["derive_target_ms", "generate", "problem_files", "read_manifest"]
