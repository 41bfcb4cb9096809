"""Throughput of the whole study pipeline and its speed-up from 1 to 2 worker processes.

    .venv/bin/python benchmarks/study.py [--count N] [--reps R] [--time-limit S]

Problems: ``--count`` (default 60) trace-driven states from the Splitwise conversation trace
(synthetic when ../shared/data is absent), seed 0, the default measured preset, the default
regime/objective/priority mix. Each repetition runs the full pipeline into a fresh DuckDB file:
read and hash the problems, every shipped heuristic and CP-SAT (``--time-limit``, default 1 s)
per problem, the evaluator on every decision, one transaction per problem. Worker start-up is
included (it is part of what a user waits for). Prints problems per second (median over
``--reps``, default 3) for 1 and 2 workers, the speed-up, and the sizes and per-problem medians
behind them, and the CPU time per problem (this process plus its workers), which does not
depend on what else the machine runs. CP-SAT stops on wall time, so a loaded machine proves
fewer optima and a saturated one shows no speed-up; the load average is printed with the
results.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path


def _cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--time-limit", type=float, default=1.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    from stepopt.demo import trace_source
    from stepopt.scenarios import GenerateOptions, default_presets, generate
    from stepopt.studies import StudyConfig, load_rows, run_study

    tmp = Path(tempfile.mkdtemp(prefix="bench_study_"))
    presets = default_presets()
    source = trace_source()
    recs = generate(
        source, GenerateOptions(count=args.count, seed=0, presets=presets), tmp / "problems"
    )
    sizes = [r["queue_size"] for r in recs]
    print(
        f"problems: {len(recs)} from {source.split('/')[-1]}, preset {', '.join(presets)}; "
        f"queue size median {statistics.median(sizes):g}, max {max(sizes)}; "
        f"CP-SAT time limit {args.time_limit} s; cpus {os.cpu_count()}"
    )

    rates: dict[int, list[float]] = {}
    last_db = None
    for w in args.workers:
        rates[w] = []
        for rep in range(args.reps):
            db = tmp / f"w{w}-r{rep}.duckdb"
            cfg = StudyConfig(
                problems=tmp / "problems", db=db, workers=w, time_limit=args.time_limit
            )
            c0 = _cpu_s()
            t0 = time.perf_counter()
            s = run_study(cfg)
            wall = time.perf_counter() - t0
            cpu = _cpu_s() - c0  # this process and its (reaped) workers
            rates[w].append(s.ran / wall)
            last_db = db
            print(
                f"  workers {w} rep {rep}: {s.ran} problems in {wall:.2f} s "
                f"({s.ran / wall:.2f}/s), {1000 * cpu / s.ran:.0f} CPU ms per problem, "
                f"load avg {os.getloadavg()[0]:.2f}"
            )
    for w, rs in rates.items():
        print(f"workers {w}: median {statistics.median(rs):.2f} problems/s over {len(rs)} runs")
    if 1 in rates and 2 in rates:
        sp = statistics.median(rates[2]) / statistics.median(rates[1])
        print(f"speed-up 1 -> 2 workers: {sp:.2f}x")

    rows = load_rows(last_db)
    exact = [r for r in rows if r["kind"] == "exact"]
    optimal = sum(r["status"] == "OPTIMAL" for r in exact)
    print(
        f"exact: {optimal}/{len(exact)} proven optimal; solve ms median "
        f"{statistics.median(r['solve_ms'] for r in exact):.1f}, max "
        f"{max(r['solve_ms'] for r in exact):.1f}"
    )
    for alg in sorted({r["algorithm"] for r in rows if r["kind"] == "heuristic"}):
        ms = [r["decision_ms"] for r in rows if r["algorithm"] == alg]
        print(f"{alg}: decision ms median {statistics.median(ms):.3f}")


if __name__ == "__main__":
    main()
