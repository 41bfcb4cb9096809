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
from stepopt.latency.presets import load_preset, with_kernel
from stepopt.latency.quality import SARATHI_DECODE_CONTEXT

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
    kernel: str = "measured"  # prefill attention kernel of the prediction
    excluded: str = ""  # why the row is left out of the summary (a measurement artifact)

    @property
    def error_pct(self) -> float:
        return (self.predicted - self.measured) / self.measured * 100.0

    @property
    def group(self) -> str:
        return f"{self.what.split(':')[0]} [{self.engine}, {self.kernel}]"


def _ms(ns: int) -> float:
    return ns / 1e6


WARMUP = (
    "warm-up: the first iteration of its run (no inter-batch delay), slower than the 512-token "
    "prefill; left out of the class mean"
)


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
            excluded=WARMUP if r.warmup else "",
        )
        for r in rows
    ]


def sarathi_attention_figures(root: Path, kernel: str = "measured") -> list[Figure]:
    """Table 2's measured attention (op-level timing, all layers) of the prefill-only batch
    (1,024 tokens) and of the hybrid one (1,021 prefill tokens + 3 decodes at ~1K context) for
    Yi-34B (60 layers, 28 query heads per GPU at TP2), against the preset's attention terms
    rescaled from CodeLlama-34B's shape (48 layers, 32 heads per GPU)."""
    import csv

    with (root / "osdi-experiments" / "table-2" / "results.csv").open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["batch_num_prefill_tokens"] != "0"]
    model = load_preset("a100/codellama-34b/tp2")
    if kernel != "measured":
        model = with_kernel(model, kernel)
    out = []
    for row in rows:
        c = int(float(row["batch_num_prefill_tokens"]))
        d = int(float(row["batch_num_decode_tokens"]))
        pred = model.prefill(c, 0, c) * (60 * 28) / (48 * 32) + model.kernel_batch(1) * 60 / 48
        pred += model.decode_context_ps * d * SARATHI_DECODE_CONTEXT / 1000 * 60 / 48
        what = f"attention: {c}-token prefill" + (f" + {d} decodes" if d else "")
        out.append(
            Figure(
                SARATHI_SOURCE.format("table-2/results.csv (attention column)"),
                what,
                "a100/codellama-34b/tp2",
                "-",
                float(row["attention"]),
                _ms(round(pred)),
                note="rescaled to Yi-34B's layers and heads",
                kernel=kernel,
            )
        )
    return out


# TensorRT-LLM's published A100 FP16 first-token latencies at batch 1 (v0.5 numbers in the
# v0.6.1 docs, "Low Latency"): (model, preset, prompt tokens, ms).
TRT_FIRST_TOKEN = (
    ("Llama-2-7B", "a100/llama-2-7b/tp1", 128, 16.0),
    ("Llama-2-7B", "a100/llama-2-7b/tp1", 2048, 133.0),
    ("Llama-2-70B TP4", "a100/llama-2-70b/tp4", 128, 47.0),
    ("Llama-2-70B TP4", "a100/llama-2-70b/tp4", 2048, 377.0),
)


def trt_llm_figures(kernels: tuple[str, ...] = ("measured", "fa2")) -> list[Figure]:
    """TensorRT-LLM's published A100 FP16 figures: first-token latency at batch 1 (each with
    every kernel in ``kernels``: its engines are built with ``--enable_context_fmha``, a fused
    FlashAttention-style context kernel) and Llama-2-7B's decode throughput at batch 60 (v0.6.1).
    Its C++ runtime has little host overhead per step, so the engine profile is ``none``."""
    out = []
    for kernel in kernels:
        for label, preset, tokens, ms in TRT_FIRST_TOKEN:
            model = load_preset(preset)
            if kernel != "measured":
                model = with_kernel(model, kernel)
            pred = model.step_ns(tokens, 1, 0, model.prefill(tokens, 0, tokens))
            out.append(
                Figure(
                    TRT_SOURCE.format("Low Latency, A100 FP16, v0.5"),
                    f"first token: {label}, {tokens}-token prompt",
                    preset,
                    "none",
                    ms,
                    _ms(pred),
                    kernel=kernel,
                )
            )
    # Batch 60, 128 in / 2,048 out: 1,928 output tokens/s. Decode steps dominate; the mean
    # context over the run is 128 + 2048 / 2 tokens.
    preset = "a100/llama-2-7b/tp1"
    model = load_preset(preset)
    batch, ctx, out_len = 60, 128 + 1024, 2048
    step = model.step_ns(batch, batch, batch * ctx)
    prefill = model.step_ns(batch * 128, batch, 0, batch * model.prefill(128, 0, 128))
    seconds = (step * (out_len - 1) + prefill) / 1e9
    out.append(
        Figure(
            TRT_SOURCE.format("Peak Throughput, A100 FP16, v0.6.1"),
            "decode throughput: batch 60, 128 in / 2,048 out",
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
        kernel="-",
    )


def all_figures(sarathi_root: Path | None) -> list[Figure]:
    out: list[Figure] = []
    if sarathi_root is not None:
        out += sarathi_figures(sarathi_root, "none")
        out += sarathi_figures(sarathi_root, "sarathi-2024")
        out += sarathi_attention_figures(sarathi_root, "measured")
        out += sarathi_attention_figures(sarathi_root, "fa2")
    out += trt_llm_figures()
    out.append(vllm_figure())
    return out


def summary(figures: list[Figure], goal_pct: float = 10.0) -> dict[str, dict[str, float]]:
    """Per group (figure kind, engine, kernel): rows, mean |error| % and rows within
    ``goal_pct``, over the rows not excluded as measurement artifacts (``excluded`` counts
    those)."""
    groups: dict[str, list[Figure]] = {}
    for f in figures:
        groups.setdefault(f.group, []).append(f)
    out: dict[str, dict[str, float]] = {}
    for key, rows in groups.items():
        errs = [abs(f.error_pct) for f in rows if not f.excluded]
        out[key] = {
            "rows": len(errs),
            "mean_abs_error_pct": float(np.mean(errs)),
            "within_goal": sum(e <= goal_pct for e in errs),
            "excluded": len(rows) - len(errs),
        }
    return out
