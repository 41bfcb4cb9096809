"""The exact window model: window size (requests x steps) against time to a proven optimum,
and the SLO gap (bound - incumbent) at 1 s / 10 s / 60 s limits.

Windows are cut from a replay of the Splitwise conversation trace (Poisson arrivals at
``--rate``; a lognormal stand-in when ../shared/data is absent) under three-stage, at a step
where enough requests are present, then trimmed to the first N requests (running, then
waiting, then arrivals in arrival order); the latency model is ``a100/llama-2-7b/tp1`` without
its prefill attention (the window model does not encode it). One CP-SAT worker.

    .venv/bin/python benchmarks/horizon.py                       # default sizes and limits
    .venv/bin/python benchmarks/horizon.py --sizes 32x64 --limits 60

``slo`` is the wall time until the most SLOs met was proven (phase 1), ``proven`` until the
whole lexicographic optimum was (SLOs, tokens, busy time: status OPTIMAL), each the first
limit that reached it; ``gap@Ls`` is bound - SLOs met with limit L. The headline is the
largest window proven within 60 s (both ways).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np

from stepopt.horizon import Slo, WindowProblem, solve_window
from stepopt.horizon.windows import cut_windows, without_prefill_attention
from stepopt.latency.presets import load_preset
from stepopt.model import EngineConfig
from stepopt.simulate.trace import load_trace, make_trace
from stepopt.testing.data import shared_data_dir

TRACE = ("vidur", "data", "processed_traces", "splitwise_conv.csv")


def trace(rate: float):
    root = shared_data_dir()
    path = None if root is None else root.joinpath(*TRACE)
    if path is not None and path.is_file():
        return load_trace(path, rate=rate).cut(3000, None), "splitwise_conv"
    rng = np.random.default_rng(0)
    prompts = np.clip(rng.lognormal(6.5, 0.9, 3000), 16, 8000).astype(int)
    outputs = np.clip(rng.lognormal(4.5, 0.8, 3000), 1, 1000).astype(int)
    return make_trace(prompts, outputs, rate=rate), "lognormal (data absent)"


def window(n: int, k: int, rate: float, slo: Slo, engine: EngineConfig) -> WindowProblem:
    tr, _ = trace(rate)
    lat = without_prefill_attention(load_preset("a100/llama-2-7b/tp1"))
    for first in range(50, 2000, 50):
        (w,) = cut_windows(tr, lat, engine, slo, k, count=1, first=first)
        if len(w.requests) >= n:
            return replace(w, requests=w.requests[:n], name=f"{n}x{k}")
    raise SystemExit(f"no window with {n} requests; raise --rate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4x8,8x16,16x32,24x48,32x64")
    ap.add_argument("--limits", default="1,10,60")
    ap.add_argument("--rate", type=float, default=12.0)
    ap.add_argument("--budget", type=int, default=512)
    ap.add_argument("--max-running", type=int, default=32)
    ap.add_argument("--slo-ttft-ms", type=float, default=1000.0)
    ap.add_argument("--slo-tbt-ms", type=float, default=60.0)
    a = ap.parse_args()
    limits = [float(x) for x in a.limits.split(",")]
    engine = EngineConfig(a.budget, a.max_running, 0, 64, 16, None)
    slo = Slo(a.slo_ttft_ms, a.slo_tbt_ms)
    print(
        f"trace: {trace(a.rate)[1]} at {a.rate:g} req/s; budget {a.budget}, "
        f"max_running {a.max_running}, SLO TTFT {a.slo_ttft_ms:g} ms / TBT {a.slo_tbt_ms:g} ms"
    )
    print("machine: 2 shared cores (noisy); 1 CP-SAT worker")
    head = f"{'size':>7} {'run':>4} {'wait':>4} {'arr':>4} {'slo':>7} {'proven':>7}"
    head += "".join(f" {'gap@' + format(lim, 'g') + 's':>9}" for lim in limits) + "  met/bound"
    print(head)
    headline = headline_slo = None
    for size in a.sizes.split(","):
        n, k = (int(x) for x in size.lower().split("x"))
        w = window(n, k, a.rate, slo, engine)
        run = sum(r.running for r in w.requests)
        wait = sum(not r.running and r.arrival_ns <= w.start_ns for r in w.requests)
        arr = len(w.requests) - run - wait
        gaps, proven, slo_t, last = [], None, None, None
        for lim in limits:
            t0 = time.perf_counter()
            res = solve_window(w, lim)
            wall = time.perf_counter() - t0
            gaps.append(res.gap)
            last = res
            if res.status == "OPTIMAL" and proven is None:
                proven = wall
            ph = res.phases[0] if res.phases else {}
            if ph.get("status") == "OPTIMAL" and slo_t is None:
                slo_t = ph["wall_s"]
        p = "-" if proven is None else f"{proven:.1f}s"
        q = "-" if slo_t is None else f"{slo_t:.1f}s"
        row = f"{size:>7} {run:>4} {wait:>4} {arr:>4} {q:>7} {p:>7}"
        row += "".join(f" {'-' if g is None else g:>9}" for g in gaps)
        row += f"  {last.slo_value}/{last.slo_bound}"
        print(row, flush=True)
        if proven is not None and proven <= 60:
            headline = size
        if slo_t is not None and slo_t <= 60:
            headline_slo = size
    print(
        f"headline: largest window proven optimal within 60 s: {headline or 'none'}; "
        f"SLO optimum proven: {headline_slo or 'none'}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
