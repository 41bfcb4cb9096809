"""Every external step-time figure the project can cite, against a preset's prediction.

Used by ``benchmarks/latency_validation.py``, the tests and docs/latency.md. Each row names its
source; Sarathi-Serve's rows need its data folder (``../shared/data/sarathi-serve``), the
published single figures are written here with their source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stepopt.latency.engine import ENGINES, EngineOverhead
from stepopt.latency.presets import load_preset

SARATHI_SOURCE = "Sarathi-Serve OSDI'24 artifact, osdi-experiments/{}"
TRT_SOURCE = (
    "TensorRT-LLM docs/source/performance.md ({}; "
    "https://github.com/NVIDIA/TensorRT-LLM/blob/release/0.6.1/docs/source/performance.md)"
)
VLLM_SOURCE = "vLLM blog 2024-09-05, 'vLLM v0.6.0: 2.7x throughput improvement' (host overhead)"


@dataclass(frozen=True)
class Figure:
    source: str
    what: str
    preset: str
    engine: str
    measured: float
    predicted: float
    unit: str = "ms"
    note: str = ""

    @property
    def error_pct(self) -> float:
        return (self.predicted - self.measured) / self.measured * 100.0


def _ms(ns: int) -> float:
    return ns / 1e6


def sarathi_figures(root: Path, engine: str = "sarathi-2024") -> list[Figure]:
    """Every Sarathi-Serve row against ``a100/codellama-34b/tp2`` (closest shape to Yi-34B);
    with the fitted engine each row is predicted leave-one-out (engine fitted on the others)."""
    from stepopt.latency import quality as q

    preset = "a100/codellama-34b/tp2"
    rows = q.sarathi_rows(load_preset(preset), root)
    if engine == "sarathi-2024":
        rows, note = q.leave_one_out_rows(rows), "engine fitted leave-one-out"
    else:
        rows, note = q.with_engine_rows(rows, ENGINES[engine]), ""
    files = {
        "prefill": "figure-2/prefill.csv",
        "decode": "figure-2/decode.csv",
        "table-2": "table-2/results.csv",
        "chunked": "figure-9/chunking-overhead.csv",
    }
    return [
        Figure(
            SARATHI_SOURCE.format(files[r.kind]),
            f"{r.kind}: {r.label}",
            preset,
            engine,
            r.measured_ms,
            r.predicted_ms,
            note=note,
        )
        for r in rows
    ]


def sarathi_attention_figure(root: Path) -> Figure:
    """Table 2's measured attention of a 1,024-token prefill (Yi-34B: 60 layers, 28 query heads
    per GPU at TP2) against the preset's prefill term rescaled from CodeLlama-34B's shape (48
    layers, 32 heads per GPU): what decides the A100 kernel default."""
    import csv

    with (root / "osdi-experiments" / "table-2" / "results.csv").open(encoding="utf-8") as fh:
        row = next(r for r in csv.DictReader(fh) if r["batch_num_decode_tokens"] == "0")
    model = load_preset("a100/codellama-34b/tp2")
    c = int(float(row["batch_num_prefill_tokens"]))
    pred = model.prefill(c, 0, c) * (60 * 28) / (48 * 32) + model.kernel_batch(1) * 60 / 48
    return Figure(
        SARATHI_SOURCE.format("table-2/results.csv (attention column)"),
        f"attention of a {c}-token prefill",
        "a100/codellama-34b/tp2",
        "-",
        float(row["attention"]),
        _ms(round(pred)),
        note="kernel 'measured'; rescaled to Yi-34B's layers and heads",
    )


def trt_llm_figures() -> list[Figure]:
    """TensorRT-LLM's published Llama-2-7B A100 FP16 figures (first-token latency at batch 1,
    v0.5; decode throughput at batch 60, v0.6.1). TensorRT-LLM's C++ runtime has little host
    overhead, so the engine profile is ``none``."""
    preset = "a100/llama-2-7b/tp1"
    model = load_preset(preset)
    out = []
    for tokens, ms in ((128, 16.0), (2048, 133.0)):
        pred = model.step_ns(tokens, 1, 0, model.prefill(tokens, 0, tokens))
        out.append(
            Figure(
                TRT_SOURCE.format("Low Latency, A100 FP16, v0.5"),
                f"first token, {tokens}-token prompt, batch 1",
                preset,
                "none",
                ms,
                _ms(pred),
            )
        )
    # Batch 60, 128 in / 2,048 out: 1,928 output tokens/s. Decode steps dominate; the mean
    # context over the run is 128 + 2048 / 2 tokens.
    batch, ctx, out_len = 60, 128 + 1024, 2048
    step = model.step_ns(batch, batch, batch * ctx)
    prefill = model.step_ns(batch * 128, batch, 0, batch * model.prefill(128, 0, 128))
    seconds = (step * (out_len - 1) + prefill) / 1e9
    out.append(
        Figure(
            TRT_SOURCE.format("Peak Throughput, A100 FP16, v0.6.1"),
            "decode throughput, batch 60, 128 in / 2,048 out",
            preset,
            "none",
            1928.0,
            batch * out_len / seconds,
            unit="tok/s",
            note="one prefill step, then 2,047 decode steps at the mean context",
        )
    )
    return out


def vllm_figure() -> Figure:
    engine: EngineOverhead = ENGINES["vllm-0.6"]
    return Figure(
        VLLM_SOURCE,
        "host overhead per step, Llama-3-8B, one H100",
        "-",
        "vllm-0.6",
        6.0,
        _ms(engine.ns(1) - engine.per_request_ns),
        note="the profile is this figure (no H100 Llama-3-8B preset to compare kernels)",
    )


def all_figures(sarathi_root: Path | None) -> list[Figure]:
    out: list[Figure] = []
    if sarathi_root is not None:
        out += sarathi_figures(sarathi_root, "none")
        out += sarathi_figures(sarathi_root, "sarathi-2024")
        out.append(sarathi_attention_figure(sarathi_root))
    out += trt_llm_figures()
    out.append(vllm_figure())
    return out


def summary(figures: list[Figure], goal_pct: float = 10.0) -> dict[str, dict[str, float]]:
    """Per (source file, engine): rows, mean |error| % and rows within ``goal_pct``."""
    groups: dict[str, list[float]] = {}
    for f in figures:
        key = f"{f.what.split(':')[0] if ':' in f.what else f.what} [{f.engine}]"
        groups.setdefault(key, []).append(abs(f.error_pct))
    return {
        k: {
            "rows": len(v),
            "mean_abs_error_pct": float(np.mean(v)),
            "within_goal": sum(e <= goal_pct for e in v),
        }
        for k, v in groups.items()
    }
