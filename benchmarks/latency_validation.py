"""Every external step-time figure the project can cite, the preset's prediction and the error.

    python benchmarks/latency_validation.py [--data DIR] [--json] [--fit-engine]

Rows: Sarathi-Serve's measured iterations (Yi-34B TP2 A100; kernels only and with the fitted
``sarathi-2024`` engine, leave-one-out), its measured attention (measured and ``fa2`` kernels),
TensorRT-LLM's published A100 FP16 figures (Llama-2-7B and Llama-2-70B TP4; both kernels), and
vLLM's host-overhead figure. Goal: every row within 10 %; the summary counts the rows that are
(rows marked ``x`` are measurement artifacts left out of it) and docs/latency.md says why the
others are not. ``--fit-engine`` prints the engine profile fitted on every Sarathi-Serve row
(the shipped ``sarathi-2024``) and the one fitted without the warm-up row.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from stepopt.latency.validation import all_figures, summary
from stepopt.testing.data import shared_data_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    parser.add_argument("--fit-engine", action="store_true", help="print the fitted engine")
    args = parser.parse_args()
    root = args.data or shared_data_dir()
    sarathi = root / "sarathi-serve" if root is not None else None
    if sarathi is None or not sarathi.is_dir():
        print("Sarathi-Serve data not found: its rows are skipped", file=sys.stderr)
        sarathi = None
    if args.fit_engine:
        return fit_engine(sarathi)
    figures = all_figures(sarathi)
    if args.json:
        rows = [{**asdict(f), "error_pct": round(f.error_pct, 2)} for f in figures]
        print(json.dumps({"rows": rows, "summary": summary(figures)}, indent=1))
        return 0
    head = f"{'figure':<48} {'preset':<22} {'engine':<12} {'kernel':<8} {'measured':>9}"
    head += f" {'predicted':>9} {'err %':>7}"
    print(head)
    print("-" * len(head))
    for f in figures:
        print(
            f"{f.what[:48]:<48} {f.preset:<22} {f.engine:<12} {f.kernel:<8} {f.measured:>9.1f} "
            f"{f.predicted:>9.1f} {f.error_pct:>+7.1f}  {f.unit}{'  x' if f.excluded else ''}"
        )
    for note in dict.fromkeys(f.excluded for f in figures if f.excluded):
        print(f"x: {note}")
    print("\nsources:")
    for src in dict.fromkeys(f.source for f in figures):
        print(f"  {src}")
    print("\nsummary (goal: |error| <= 10 %):")
    for key, s in summary(figures).items():
        print(
            f"  {key:<50} rows {s['rows']:>3}  mean |err| {s['mean_abs_error_pct']:5.1f} %  "
            f"within goal {s['within_goal']}/{s['rows']}"
            + (f"  ({s['excluded']} excluded)" if s["excluded"] else "")
        )
    return 0


def fit_engine(sarathi: Path | None) -> int:
    """The engine profile least squares gives on Sarathi-Serve's rows, with and without the
    warm-up row, and the leave-one-out class errors of each."""
    from stepopt.latency import quality as q
    from stepopt.latency.presets import load_preset

    if sarathi is None:
        return 1
    rows = q.sarathi_rows(load_preset("a100/codellama-34b/tp2"), sarathi)
    steady = [r for r in rows if not r.warmup]
    for label, rs in (("every row (shipped)", rows), ("without the warm-up row", steady)):
        e = q.fit_engine(rs)
        loo = q.leave_one_out_rows(rs)
        errs = q.error_by_kind([r for r in loo if not r.warmup])
        print(
            f"{label:<24} step {e.step_ns / 1e6:.3f} ms, per request {e.per_request_ns / 1e6:.4f}"
            " ms; leave-one-out |err| " + ", ".join(f"{k} {v:.1f} %" for k, v in errs.items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
