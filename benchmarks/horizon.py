"""The exact window model: window size (requests x steps) against time to a proven optimum,
and the SLO gap (bound - SLOs met) at 1 s / 10 s / 60 s limits, on trivial and on contested
windows.

Windows are cut from a replay of the Splitwise conversation trace (Poisson arrivals at
``--rate``; a lognormal stand-in when ../shared/data is absent) under three-stage at steps
50, 75, 100, ...; each is trimmed to N requests, those with prompt work first (running prefills,
waiting, arrivals, then running decodes), keeping the window's order. A window is *trivial*
when the three-stage replay (one of the solver's hints) already meets every SLO the per-request
relaxation does not rule out (horizon/bounds.py): the SLO level is then proven before any
search. It is *contested* when the hint misses an SLO that no single-request argument rules
out: requests compete for the budget, the slots and the window's steps. Each size reports the
first trivial window and the first ``--contested`` contested ones. The latency model is
``a100/llama-2-7b/tp1`` without its prefill attention (the window model does not encode it).

    .venv/bin/python benchmarks/horizon.py                       # default sizes and limits
    .venv/bin/python benchmarks/horizon.py --sizes 32x64 --limits 60 --workers 2
    .venv/bin/python benchmarks/horizon.py --sizes 32x64 --limits 60 --kinds contested --contested 4

``slo`` is the wall time until the most SLOs met was proven (phase 1), ``proven`` until the
whole lexicographic optimum was (SLOs, tokens, busy time: status OPTIMAL), each from the
first limit that reached it; ``gap@Ls`` is bound - SLOs met with limit L; ``out`` the SLOs
ruled out alone. The headline is the largest contested window proven within 60 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np

from stepopt.horizon import Slo, WindowProblem, evaluate_window, solve_window
from stepopt.horizon.bounds import hopeless
from stepopt.horizon.solve import heuristic_hint
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


def trim(w: WindowProblem, n: int) -> WindowProblem:
    """``n`` requests of ``w``, those with prompt work first, in the window's order."""

    def rank(r):
        return 0 if r.running and not r.decoding else 1 if not r.running else 2

    keep = {r.id for r in sorted(w.requests, key=rank)[:n]}
    return replace(w, requests=tuple(r for r in w.requests if r.id in keep))


def windows(n: int, k: int, a, count: int = 30) -> list[tuple[str, WindowProblem, int, int]]:
    """The first trivial and the first ``a.contested`` contested windows of ``n`` requests x
    ``k`` steps: (kind, window, SLOs three-stage meets, SLOs ruled out alone)."""
    engine = EngineConfig(a.budget, a.max_running, 0, 64, 16, None)
    slo = Slo(a.slo_ttft_ms, a.slo_tbt_ms)
    lat = without_prefill_attention(load_preset("a100/llama-2-7b/tp1"))
    tr, _ = trace(a.rate)
    want = {"trivial": 1, "contested": a.contested}
    found: list[tuple[str, WindowProblem, int, int]] = []
    for w in cut_windows(tr, lat, engine, slo, k, count=count, first=50, every=25):
        if len(w.requests) < n:
            continue
        w = trim(w, n)
        w = replace(w, name=f"{n}x{k}@{w.meta['step']}")
        hint = heuristic_hint(w)
        met = 0 if hint is None else evaluate_window(w, hint).met_weighted
        out = len(hopeless(w))
        kind = "trivial" if met == n - out else "contested"
        if want[kind] > 0:
            want[kind] -= 1
            found.append((kind, w, met, out))
        if not any(want.values()):
            break
    return found


def measure(w: WindowProblem, limits: list[float], workers: int) -> dict:
    gaps, proven, slo_t, last = [], None, None, None
    for lim in limits:
        t0 = time.perf_counter()
        res = solve_window(w, lim, workers=workers)
        wall = time.perf_counter() - t0
        gaps.append(res.gap)
        last = res
        if res.status == "OPTIMAL" and proven is None:
            proven = wall
        ph = res.phases[0] if res.phases else {}
        if ph.get("status") == "OPTIMAL" and slo_t is None:
            slo_t = ph["wall_s"]
    return {"gaps": gaps, "proven": proven, "slo": slo_t, "last": last}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4x8,8x16,16x32,24x48,32x64")
    ap.add_argument("--limits", default="1,10,60")
    ap.add_argument("--rate", type=float, default=12.0)
    ap.add_argument("--budget", type=int, default=512)
    ap.add_argument("--max-running", type=int, default=32)
    ap.add_argument("--slo-ttft-ms", type=float, default=1000.0)
    ap.add_argument("--slo-tbt-ms", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--kinds", default="contested,trivial")
    ap.add_argument("--contested", type=int, default=1, help="contested windows per size")
    a = ap.parse_args()
    limits = [float(x) for x in a.limits.split(",")]
    kinds = a.kinds.split(",")
    print(
        f"trace: {trace(a.rate)[1]} at {a.rate:g} req/s; budget {a.budget}, "
        f"max_running {a.max_running}, SLO TTFT {a.slo_ttft_ms:g} ms / TBT {a.slo_tbt_ms:g} ms"
    )
    print(f"machine: 2 shared cores (noisy); {a.workers} CP-SAT worker(s)")
    head = f"{'size':>6} {'kind':>9} {'step':>5} {'run':>4} {'wait':>4} {'arr':>4} {'3s':>5}"
    head += f" {'out':>4} {'slo':>7} {'proven':>7}"
    head += "".join(f" {'gap@' + format(lim, 'g') + 's':>9}" for lim in limits) + "  met/bound"
    print(head)
    best: dict[str, dict[str, str]] = {kind: {} for kind in kinds}
    for size in a.sizes.split(","):
        n, k = (int(x) for x in size.lower().split("x"))
        for kind, w, met, out in windows(n, k, a):
            if kind not in kinds:
                continue
            run = sum(r.running for r in w.requests)
            wait = sum(not r.running and r.arrival_ns <= w.start_ns for r in w.requests)
            r = measure(w, limits, a.workers)
            p = "-" if r["proven"] is None else f"{r['proven']:.1f}s"
            q = "-" if r["slo"] is None else f"{r['slo']:.1f}s"
            row = f"{size:>6} {kind:>9} {w.meta['step']:>5} {run:>4} {wait:>4}"
            row += f" {n - run - wait:>4} {met:>5} {out:>4} {q:>7} {p:>7}"
            row += "".join(f" {'-' if g is None else g:>9}" for g in r["gaps"])
            row += f"  {r['last'].slo_value}/{r['last'].slo_bound}"
            print(row, flush=True)
            if r["proven"] is not None and r["proven"] <= 60:
                best[kind]["all"] = size
            if r["slo"] is not None and r["slo"] <= 60:
                best[kind]["slo"] = size
    for kind in kinds:
        print(
            f"headline ({kind}): largest window proven optimal within 60 s: "
            f"{best[kind].get('all', 'none')}; SLO level proven: {best[kind].get('slo', 'none')}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
