"""Request metrics of a simulation: TTFT, TBT, end-to-end latency, SLO attainment, goodput.

Definitions (docs/simulate.md):

- TTFT: first token time - arrival; end-to-end: last token time - arrival.
- TBT: the gaps between consecutive tokens of a request. Summary percentiles pool every gap of
  every request; per request, its own p50/p99 (numpy's linear interpolation).
- A request meets the TTFT SLO when it finished with TTFT <= the SLO, the TBT SLO when it
  finished and its own p99 TBT <= the SLO (a one-token request has no gap: it meets it).
  Rejected and unfinished requests meet neither. Attainment is over all requests of the trace.
- Throughput and goodput divide by the makespan: first arrival to last finished token.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stepopt.simulate.engine import FINISHED, STATUS_NAMES, SimResult

NS_PER_MS = 1_000_000
PERCENTILES = (50, 90, 99)


def request_columns(result: SimResult) -> dict[str, np.ndarray]:
    """One entry per request of the trace (arrival order), times in seconds, latencies in ms.
    Values a request does not have (no first token yet, fewer than two tokens) are NaN."""
    reqs = result.requests
    n = len(reqs)
    arrival = np.fromiter((s.arrival_ns for s in reqs), dtype=np.int64, count=n)
    first = np.fromiter((s.first_ns for s in reqs), dtype=np.int64, count=n)
    finish = np.fromiter((s.finish_ns for s in reqs), dtype=np.int64, count=n)
    status = np.fromiter((s.where for s in reqs), dtype=np.int8, count=n)
    counts = np.fromiter(
        (len(s.times) if s.times is not None else 0 for s in reqs), dtype=np.int64, count=n
    )
    p50, p99, pmax = _per_request_tbt(reqs, counts)
    has_first = first >= 0
    done = status == FINISHED
    nan = np.nan
    return {
        "id": np.array([s.id for s in reqs], dtype=object),
        "status": np.array([STATUS_NAMES[k] for k in status], dtype=object),
        "arrival_s": arrival / 1e9,
        "prompt_tokens": np.fromiter((s.prompt for s in reqs), dtype=np.int64, count=n),
        "output_tokens": np.fromiter((s.output for s in reqs), dtype=np.int64, count=n),
        "emitted_tokens": counts,
        "first_token_s": np.where(has_first, first / 1e9, nan),
        "finish_s": np.where(done, finish / 1e9, nan),
        "ttft_ms": np.where(has_first, (first - arrival) / NS_PER_MS, nan),
        "tbt_p50_ms": p50,
        "tbt_p99_ms": p99,
        "tbt_max_ms": pmax,
        "e2e_ms": np.where(done, (finish - arrival) / NS_PER_MS, nan),
        "preemptions": np.fromiter((s.preemptions for s in reqs), dtype=np.int64, count=n),
    }


def _gaps(reqs: list, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All inter-token gaps (ns) and the request index of each, in one pass."""
    total = int(counts.sum())
    times = np.empty(total, dtype=np.int64)
    pos = 0
    for s in reqs:
        if s.times is not None:
            k = len(s.times)
            times[pos : pos + k] = np.frombuffer(s.times, dtype=np.int64)
            pos += k
    owner = np.repeat(np.arange(len(reqs)), counts)
    if total < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    diff = np.diff(times)
    same = owner[1:] == owner[:-1]
    return diff[same], owner[1:][same]


def _per_request_tbt(reqs: list, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    n = len(reqs)
    gaps, owner = _gaps(reqs, counts)
    p50 = np.full(n, np.nan)
    p99 = np.full(n, np.nan)
    pmax = np.full(n, np.nan)
    if len(gaps) == 0:
        return p50, p99, pmax
    # Sort gaps within each request, then interpolate like numpy's default ("linear").
    order = np.lexsort((gaps, owner))
    g = gaps[order] / NS_PER_MS
    m = np.bincount(owner, minlength=n)
    start = np.concatenate(([0], np.cumsum(m)[:-1]))
    has = m > 0
    for q, out in ((0.5, p50), (0.99, p99), (1.0, pmax)):
        pos = (m[has] - 1) * q
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, m[has] - 1)
        frac = pos - lo
        base = start[has]
        out[has] = g[base + lo] * (1 - frac) + g[base + hi] * frac
    return p50, p99, pmax


def summarize(
    result: SimResult,
    slo_ttft_ms: float | None = None,
    slo_tbt_ms: float | None = None,
    columns: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The comparison metrics of one run (see the module docstring)."""
    cols = columns if columns is not None else request_columns(result)
    n = len(result.requests)
    done = cols["status"] == "finished"
    n_done = int(done.sum())
    arrival = cols["arrival_s"]
    start = float(arrival.min()) if n else 0.0
    end = float(np.nanmax(cols["finish_s"])) if n_done else start
    span = end - start
    per_s = (lambda x: x / span) if span > 0 else (lambda x: None)
    out_tok = int(cols["output_tokens"][done].sum())
    in_tok = int(cols["prompt_tokens"][done].sum())
    gaps, _ = _gaps(
        result.requests,
        np.asarray([len(s.times) if s.times is not None else 0 for s in result.requests]),
    )
    steps = result.steps
    lat = np.asarray(steps["latency_ns"], dtype=np.int64)
    doc: dict[str, Any] = {
        "policy": result.policy,
        "target_rule": result.target_rule,
        "requests": n,
        "finished": n_done,
        "rejected": int((cols["status"] == "rejected").sum()),
        "unfinished": n - n_done - int((cols["status"] == "rejected").sum()),
        "makespan_s": span,
        "throughput_rps": per_s(n_done),
        "output_tokens_per_s": per_s(out_tok),
        "total_tokens_per_s": per_s(out_tok + in_tok),
        **_pcts("ttft_ms", cols["ttft_ms"][done]),
        **_pcts("tbt_ms", gaps / NS_PER_MS),
        **_pcts("e2e_ms", cols["e2e_ms"][done]),
        "steps": result.num_steps,
        "step_latency_ms_mean": float(lat.mean() / NS_PER_MS) if len(lat) else None,
        "batch_size_mean": float(np.mean(steps["batch_size"])) if len(lat) else None,
        "scheduled_tokens_mean": float(np.mean(steps["scheduled_tokens"])) if len(lat) else None,
        "preemptions": result.stats["preemptions"],
        "fallbacks": result.stats["policy"]["fallbacks"],
        "wall_s": result.stats["wall_s"],
        "steps_per_s": result.stats["steps_per_s"],
    }
    doc["slo_ttft_ms"] = slo_ttft_ms
    doc["slo_tbt_ms"] = slo_tbt_ms
    ok_ttft = done.copy()
    if slo_ttft_ms is not None:
        ok_ttft &= cols["ttft_ms"] <= slo_ttft_ms
    ok_tbt = done.copy()
    if slo_tbt_ms is not None:
        p99 = cols["tbt_p99_ms"]
        ok_tbt &= np.isnan(p99) | (p99 <= slo_tbt_ms)
    both = ok_ttft & ok_tbt
    denom = max(n, 1)
    doc["ttft_attainment"] = float(ok_ttft.sum() / denom) if slo_ttft_ms is not None else None
    doc["tbt_attainment"] = float(ok_tbt.sum() / denom) if slo_tbt_ms is not None else None
    has_slo = slo_ttft_ms is not None or slo_tbt_ms is not None
    doc["slo_attainment"] = float(both.sum() / denom) if has_slo else None
    doc["goodput_rps"] = per_s(int(both.sum())) if has_slo else None
    return doc


def _pcts(name: str, values: np.ndarray) -> dict[str, float | None]:
    stem = name.removesuffix("_ms")
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return {f"{stem}_p{q}_ms": None for q in PERCENTILES}
    got = np.percentile(v, PERCENTILES)
    return {f"{stem}_p{q}_ms": float(x) for q, x in zip(PERCENTILES, got, strict=True)}
