"""How well a fitted model matches measurements: held-out mixed batches, Sarathi-Serve steps.

Used by ``benchmarks/latency_fit.py``, the tests and the docs; no tuning happens here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stepopt.latency.engine import EngineOverhead
from stepopt.latency.fit import NS_PER_MS, LatencyFitter, tokenwise_points
from stepopt.latency.model import LatencyModel
from stepopt.latency.profiles import Profile
from stepopt.latency.segment import mape_pct, weighted_lstsq


@dataclass(frozen=True)
class MixedBatch:
    decodes: int
    context: int  # per decode
    chunks: tuple[tuple[int, int], ...]  # (chunk, cached) per prefill
    truth_ns: float
    predicted_ns: int

    @property
    def tokens(self) -> int:
        return self.decodes + sum(c for c, _ in self.chunks)


def mixed_batches(
    profile: Profile, fitter: LatencyFitter, n: int = 400, seed: int = 0
) -> list[MixedBatch]:
    """Random mixed batches built from held-out measured attention rows.

    Truth: ``num_layers`` x (token-wise measured medians + all-reduces at the batch's token
    count, interpolated between neighbouring measured counts, + the measured decode call +
    one measured prefill call per chunk), as Vidur sums them. Each prefill chunk is the last of
    its prompt (``remaining == chunk``). Needs measured attention.
    """
    if profile.attention is None:
        raise ValueError(f"{profile.name} has no measured attention")
    att = fitter.attention_fit_
    dec = [s for s, h in zip(profile.attention.decode, att.decode_holdout_, strict=True) if h]
    pre = [s for s, h in zip(profile.attention.prefill, att.prefill_holdout_, strict=True) if h]
    x, y = tokenwise_points(profile)
    ux, inv = np.unique(x, return_inverse=True)
    uy = np.bincount(inv, weights=y) / np.bincount(inv)
    layers = profile.model.num_layers
    model = fitter.model_
    rng = np.random.default_rng(seed)
    out: list[MixedBatch] = []
    while len(out) < n:
        d = dec[rng.integers(len(dec))] if rng.random() < 0.9 else None
        k = int(rng.integers(0 if d is not None else 1, 3))
        chunks = [pre[rng.integers(len(pre))] for _ in range(k)]
        tokens = (d.batch_size if d else 0) + sum(p.chunk for p in chunks)
        if tokens > ux[-1]:
            continue
        per_layer = float(np.interp(tokens, ux, uy))
        per_layer += (d.time_ms if d else 0.0) + sum(p.time_ms for p in chunks)
        attention = sum(model.prefill(p.chunk, p.cached, p.chunk) for p in chunks)
        decodes = d.batch_size if d else 0
        context = d.context if d else 0
        pred = model.step_ns(tokens, decodes + len(chunks), decodes * context, attention)
        out.append(
            MixedBatch(
                decodes=decodes,
                context=context,
                chunks=tuple((p.chunk, p.cached) for p in chunks),
                truth_ns=per_layer * layers * NS_PER_MS,
                predicted_ns=pred,
            )
        )
    return out


def batches_mape_pct(batches: list[MixedBatch]) -> float:
    return mape_pct(
        np.array([b.predicted_ns for b in batches], dtype=float),
        np.array([b.truth_ns for b in batches]),
    )


# --- Sarathi-Serve whole-iteration measurements (Yi-34B, TP 2, A100) ---------------------------


@dataclass(frozen=True)
class SarathiRow:
    kind: str
    label: str
    measured_ms: float
    predicted_ms: float
    steps: int = 1  # engine steps the measurement spans
    requests: int = 1  # requests summed over those steps (the engine's per-request part)
    # The first iteration of its run (no inter-batch delay recorded): a warm-up, not a steady
    # state step (figure-2's 256-token prefill, slower than the 512-token one).
    warmup: bool = False

    @property
    def error_pct(self) -> float:
        return (self.predicted_ms - self.measured_ms) / self.measured_ms * 100.0


# Decode contexts are not in the files; the figure-2 and table-2 runs use ~1K-token prompts.
SARATHI_DECODE_CONTEXT = 1024


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _first_batch(row: dict[str, str]) -> bool:
    return not (row.get("inter_batch_delay") or "").strip()


def sarathi_rows(model: LatencyModel, root: Path) -> list[SarathiRow]:
    """Predictions of ``model`` for every measured Sarathi-Serve batch under ``root``
    (the ``sarathi-serve`` data folder)."""
    exp = root / "osdi-experiments"
    out: list[SarathiRow] = []
    ctx = SARATHI_DECODE_CONTEXT

    def prefill_ns(tokens: int, cached: int = 0, remaining: int | None = None) -> int:
        rem = tokens if remaining is None else remaining
        return model.step_ns(tokens, 1, 0, model.prefill(tokens, cached, rem))

    for r in _rows(exp / "figure-2" / "prefill.csv"):
        t = int(float(r["batch_num_tokens"]))
        out.append(
            SarathiRow(
                "prefill",
                f"{t} tokens",
                float(r["batch_execution_time"]) * 1e3,
                prefill_ns(t) / 1e6,
                1,
                1,
                _first_batch(r),
            )
        )
    for r in _rows(exp / "figure-2" / "decode.csv"):
        b = int(float(r["batch_size"]))
        pred = model.step_ns(b, b, b * ctx)
        out.append(
            SarathiRow(
                "decode",
                f"{b} decodes @{ctx}",
                float(r["batch_execution_time"]) * 1e3,
                pred / 1e6,
                1,
                b,
                _first_batch(r),
            )
        )
    for r in _rows(exp / "table-2" / "results.csv"):
        p = int(float(r["batch_num_prefill_tokens"]))
        d = int(float(r["batch_num_decode_tokens"]))
        att = model.prefill(p, 0, p) if p else 0
        pred = model.step_ns(p + d, d + (1 if p else 0), d * ctx, att)
        label = f"{p} prefill + {d} decode"
        b = d + (1 if p else 0)
        out.append(SarathiRow("table-2", label, float(r["batch_execution_time"]), pred / 1e6, 1, b))
    for r in _rows(exp / "figure-9" / "chunking-overhead.csv"):
        length = int(r["prefill_length"])
        chunk = int(r["chunk_size"])
        total, done, steps = 0, 0, 0
        while done < length:
            c = min(chunk, length - done)
            total += prefill_ns(c, done, length - done)
            done += c
            steps += 1
        label = f"prefill {length} in chunks of {chunk}"
        measured = float(r["prefill_execution_time"])
        out.append(SarathiRow("chunked", label, measured, total / 1e6, steps, steps))
    return out


def fit_engine(rows: list[SarathiRow], name: str = "fitted") -> EngineOverhead:
    """The engine overhead (step constant, per-request slope, both >= 0) that brings kernel-only
    predictions ``rows`` closest to the measurements, least squares on relative error."""
    a = np.array([[r.steps, r.requests] for r in rows], dtype=float)
    resid = np.array([r.measured_ms - r.predicted_ms for r in rows]) * NS_PER_MS
    w = 1.0 / np.array([r.measured_ms for r in rows])
    free = [0, 1]
    sol = np.zeros(2)
    while free:
        sol = np.zeros(2)
        sol[free] = weighted_lstsq(a[:, free], resid, w)
        neg = [j for j in free if sol[j] < 0]
        if not neg:
            break
        free = [j for j in free if j not in neg]
    return EngineOverhead(name, step_ns=int(sol[0] + 0.5), per_request_ns=int(sol[1] + 0.5))


def with_engine_rows(rows: list[SarathiRow], engine: EngineOverhead) -> list[SarathiRow]:
    """Kernel-only rows with ``engine`` added to each prediction."""
    return [
        replace(
            r,
            predicted_ms=r.predicted_ms
            + (r.steps * engine.step_ns + r.requests * engine.per_request_ns) / NS_PER_MS,
        )
        for r in rows
    ]


def leave_one_out_rows(rows: list[SarathiRow]) -> list[SarathiRow]:
    """Each kernel-only row predicted with the engine fitted on all the other rows."""
    out = []
    for k, r in enumerate(rows):
        engine = fit_engine(rows[:k] + rows[k + 1 :])
        out.extend(with_engine_rows([r], engine))
    return out


def error_by_kind(rows: list[SarathiRow]) -> dict[str, float]:
    """Mean absolute percentage error per row kind."""
    kinds: dict[str, list[float]] = {}
    for r in rows:
        kinds.setdefault(r.kind, []).append(abs(r.error_pct))
    return {k: float(np.mean(v)) for k, v in kinds.items()}
