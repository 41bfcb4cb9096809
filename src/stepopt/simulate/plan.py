"""Plan files: the steps of a run and its requests, as Parquet (the ``parquet`` extra).

``PLAN.parquet`` has one row per step, ``PLAN.requests.parquet`` one row per request
(docs/simulate.md lists the columns). The decision is a JSON text column (``{"id": tokens}``),
readable by any Parquet reader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stepopt.errors import MissingExtraError
from stepopt.simulate.engine import SimResult
from stepopt.simulate.metrics import NS_PER_MS, request_columns


def require_pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("pyarrow", "parquet", "writing plan files") from None
    return pa, pq


def requests_path(plan: str | Path) -> Path:
    """``PLAN.parquet`` -> ``PLAN.requests.parquet``."""
    p = Path(plan)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.requests{p.suffix or '.parquet'}")


def step_columns(result: SimResult) -> dict[str, Any]:
    s = result.steps
    t = np.asarray(s["time_ns"], dtype=np.int64)
    lat = np.asarray(s["latency_ns"], dtype=np.int64)
    cols: dict[str, Any] = {
        "step": np.asarray(s["step"], dtype=np.int64),
        "time_s": t / 1e9,
        "end_s": (t + lat) / 1e9,
        "latency_ms": lat / NS_PER_MS,
        "latency_ns": lat,
        "target_ms": np.asarray(s["target_ms"], dtype=float),
        "n_running": np.asarray(s["n_running"], dtype=np.int64),
        "n_waiting": np.asarray(s["n_waiting"], dtype=np.int64),
        "batch_size": np.asarray(s["batch_size"], dtype=np.int64),
        "scheduled_tokens": np.asarray(s["scheduled_tokens"], dtype=np.int64),
        "prefill_tokens": np.asarray(s["prefill_tokens"], dtype=np.int64),
        "decode_tokens": np.asarray(s["decode_tokens"], dtype=np.int64),
        "n_admitted": np.asarray(s["n_admitted"], dtype=np.int64),
        "n_preempted": np.asarray(s["n_preempted"], dtype=np.int64),
        "n_finished": np.asarray(s["n_finished"], dtype=np.int64),
        "free_blocks": list(s["free_blocks"]),
        "source": list(s["source"]),
        "decide_us": np.asarray(s["decide_us"], dtype=np.int64),
    }
    if result.decisions is not None:
        cols["decision"] = [json.dumps(d, separators=(",", ":")) for d in result.decisions]
        cols["preempted"] = [json.dumps(list(p)) for p in result.preempted or []]
    return cols


def write_plan(result: SimResult, path: str | Path) -> tuple[Path, Path]:
    """Write the step and request tables; returns both paths."""
    pa, pq = require_pyarrow()
    path = Path(path)
    meta = {
        b"stepopt": json.dumps(
            {
                "policy": result.policy,
                "target_rule": result.target_rule,
                "source": result.source,
                "preset": result.preset,
                "stats": result.stats,
            },
            default=str,
        ).encode()
    }
    steps = pa.table(step_columns(result)).replace_schema_metadata(meta)
    pq.write_table(steps, path)
    rq = request_columns(result)
    rq["id"] = rq["id"].tolist()
    rq["status"] = rq["status"].tolist()
    req_table = pa.table(rq).replace_schema_metadata(meta)
    rpath = requests_path(path)
    pq.write_table(req_table, rpath)
    return path, rpath
