"""Exact solvers on realistic step states: solve time (median, p95) and status counts.

States: mostly running decodes (contexts = trace prompt + some generated tokens), a few running
chunked prefills, a waiting queue; prompt lengths sampled from the Splitwise conversation trace
when ../shared/data is present, else from a lognormal. The latency model is a measured-curve
preset (``a100/llama-2-7b/tp1`` when shipped, else ``demo``). The target is drawn between the
latency of the decodes alone and that of a full token budget, so both objectives trade.

    .venv/bin/python benchmarks/exact.py                         # structured, auto, cpsat
    .venv/bin/python benchmarks/exact.py --solvers structured,auto,cpsat,highs,cbc
    .venv/bin/python benchmarks/exact.py --solvers cpsat --sizes 384 --count 40
    .venv/bin/python benchmarks/exact.py --objective goodput --time-limit 2
    .venv/bin/python benchmarks/exact.py --sizes 32,128,384 --count 10 --time-limit 2 \
        --tolerance-ns 1000                                      # target within 1 us

``cpu med``: median CPU time of this process (steadier than wall time on a shared machine;
CP-SAT runs one worker thread). ``proven``: OPTIMAL, INFEASIBLE, or |L - T| proven within
the tolerance; ``vs cpsat``: median time over CP-SAT's median in the same run;
``answered by`` (auto): which backend's answer.
``exact``: |L - T| proven optimal exactly (``proven_within_ns == 0``; the tie-break may be
unproven, see the statuses); ``in tol``: FEASIBLE but proven within the tolerance
(``proven_within_ns <= --tolerance-ns``); ``dev med``: median |L - T| in ns (target).

Times include building the model (``build`` column: formulation + encoding only).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import time
from collections import Counter
from pathlib import Path

from stepopt.latency.presets import load_preset, preset_names
from stepopt.model import EngineConfig, Request, StepProblem
from stepopt.solvers import solve
from stepopt.testing.data import shared_data_dir

PREFERRED_PRESET = "a100/llama-2-7b/tp1"


def trace_prompts() -> tuple[list[int], str]:
    data = shared_data_dir()
    path = None if data is None else data / "vidur/data/processed_traces/splitwise_conv.csv"
    if path is not None and Path(path).is_file():
        with open(path, newline="") as fh:
            rows = [int(r["num_prefill_tokens"]) for r in csv.DictReader(fh)]
        return rows, f"splitwise_conv.csv ({len(rows)} prompts)"
    rng = random.Random(0)
    return [max(8, int(rng.lognormvariate(6.5, 1.0))) for _ in range(10_000)], "lognormal"


def make_state(
    rng: random.Random, n: int, prompts: list[int], preset: str, objective: str, mode: str
) -> StepProblem:
    n_wait = max(1, n // 10)
    n_pre = max(1, n // 50)
    n_dec = n - n_wait - n_pre
    running = []
    for k in range(n_dec):
        p = min(rng.choice(prompts), 4000)
        running.append(Request(f"d{k}", p, p + rng.randint(1, 400), rng.randint(0, 3), k * 0.01))
    for k in range(n_pre):
        p = min(rng.choice(prompts), 8000) + 600
        done = rng.randint(1, p // 512) * 512 if p > 1024 else 0
        running.append(Request(f"p{k}", p, min(done, p - 1), rng.randint(0, 3), n * 0.01 + k))
    waiting = [
        Request(f"w{k}", min(rng.choice(prompts), 8000), 0, rng.randint(0, 3), 100.0 + k)
        for k in range(n_wait)
    ]
    lat = load_preset(preset)
    budget = 2048
    cfg = EngineConfig(
        max_num_scheduled_tokens=budget,
        max_num_running_reqs=n + n_wait // 2,
        long_prefill_token_threshold=0,
        min_prefill_chunk=64,
        block_size=16,
        num_free_blocks=rng.choice([None, 40, 200]),
    )
    probe = StepProblem(tuple(running), tuple(waiting), cfg, lat, 1.0, objective, mode)
    base = lat.predict_ns(probe, {r.id: 1 for r in probe.running_decodes})
    full = lat.tokens(budget) + lat.batch(n) + (base - lat.tokens(n_dec) - lat.batch(n_dec))
    target_ns = rng.randint(base, max(full, base + 1))
    return probe.with_changes(target_latency_ms=target_ns / 1e6)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def run_solver(name: str, states: list[StepProblem], args, params: dict) -> dict:
    """Solve every state with one backend: times (ms) and proof counts."""
    times, cpus, statuses, devs, by = [], [], Counter(), [], Counter()
    exact = within = proven = 0
    for p in states:
        t, c = time.perf_counter(), time.process_time()
        extra = dict(params) if name == "cpsat" else {}
        if args.tolerance_ns:
            extra["target_tolerance_ns"] = args.tolerance_ns
        res = solve(p, name, time_limit=args.time_limit, **extra)
        times.append((time.perf_counter() - t) * 1000)
        cpus.append((time.process_time() - c) * 1000)
        pw = res.proven_within_ns
        exact += pw == 0
        within += pw is not None and 0 < pw <= args.tolerance_ns
        proven += str(res.status) in ("OPTIMAL", "INFEASIBLE") or (
            pw is not None and pw <= args.tolerance_ns
        )
        if res.evaluation is not None:
            devs.append(res.evaluation.deviation_ns)
        statuses[str(res.status)] += 1
        if "answered_by" in res.params:
            by[res.params["answered_by"]] += 1
    st = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
    if by:
        st += " / " + ", ".join(f"{k} {v}" for k, v in sorted(by.items()))
    return {
        "name": name,
        "median": statistics.median(times),
        "p95": pct(times, 0.95),
        "max": max(times),
        "cpu": statistics.median(cpus),
        "proven": proven,
        "exact": exact,
        "within": within,
        "dev": statistics.median(devs) if devs else float("nan"),
        "statuses": st,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--solvers", default="structured,auto,cpsat")
    ap.add_argument("--sizes", default="32,128,384,1024,4096")
    ap.add_argument("--count", type=int, default=20, help="states per size")
    ap.add_argument("--time-limit", type=float, default=10.0, help="seconds per solve")
    ap.add_argument("--objective", default="both", choices=["target", "goodput", "both"])
    ap.add_argument("--mode", default="strict", choices=["strict", "weighted"])
    ap.add_argument("--preset", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--tolerance-ns", type=int, default=0, help="target_tolerance_ns for every solver"
    )
    ap.add_argument("--param", action="append", default=[], help="solver param k=v (cpsat)")
    args = ap.parse_args()

    preset = args.preset or (PREFERRED_PRESET if PREFERRED_PRESET in preset_names() else "demo")
    prompts, source = trace_prompts()
    params = {}
    for kv in args.param:
        k, v = kv.split("=", 1)
        params[k] = {"True": True, "False": False}.get(v, int(v) if v.lstrip("-").isdigit() else v)
    load = os.getloadavg()
    print(
        f"preset {preset}; prompts from {source}; objective {args.objective}, {args.mode} "
        f"priority; time limit {args.time_limit:g} s; tolerance {args.tolerance_ns} ns; "
        f"{args.count} states per size and objective; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )
    header = (
        f"{'objective':9} {'solver':10} {'n':>5} {'median ms':>10} {'p95 ms':>9} {'max ms':>9} "
        f"{'cpu med':>8} {'vs cpsat':>8} {'proven':>6} {'exact':>5} {'in tol':>6} {'dev med':>8}  "
        "statuses / answered by"
    )
    print(header)
    print("-" * len(header))
    objectives = ["target", "goodput"] if args.objective == "both" else [args.objective]
    for objective in objectives:
        for n in [int(s) for s in args.sizes.split(",")]:
            rng = random.Random(args.seed * 1000 + n)
            states = [
                make_state(rng, n, prompts, preset, objective, args.mode) for _ in range(args.count)
            ]
            rows = [run_solver(name, states, args, params) for name in args.solvers.split(",")]
            ref = next((r for r in rows if r["name"] == "cpsat"), None)
            for r in rows:
                ratio = (
                    f"{r['median'] / ref['median']:>8.3f}" if ref and ref["median"] else f"{'':>8}"
                )
                print(
                    f"{objective:9} {r['name']:10} {n:>5} {r['median']:>10.2f} {r['p95']:>9.2f} "
                    f"{r['max']:>9.2f} {r['cpu']:>8.2f} {ratio} {r['proven']:>6} {r['exact']:>5} "
                    f"{r['within']:>6} {r['dev']:>8.0f}  {r['statuses']}",
                    flush=True,
                )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
