"""The structured solver against CP-SAT (and brute force where small) on generated strict steps.

Problems: strict priority, both objectives, random non-convex ``F_tok``/``F_seq`` curves,
KV limits, long-prefill thresholds, min chunks, ties in priority and arrival time, sizes
2-1,024 requests (most small: brute force runs up to 8 requests). For each: any OPTIMAL or
INFEASIBLE answer of ``structured`` must agree with CP-SAT (and brute force) on every objective
level to the nanosecond; a non-proven answer must be a valid decision whose bound holds
(:func:`stepopt.testing.structured_check.check_against`). Prints counts, proven shares and
disagreements (the exit status is 1 if there is any).

    .venv/bin/python benchmarks/structured_check.py                  # 3,000 problems
    .venv/bin/python benchmarks/structured_check.py --count 300 --seed 1
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter

from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.model import EngineConfig, Request, StepProblem
from stepopt.solvers import SolveStatus, solve
from stepopt.testing.structured_check import check_against

SIZES = (2, 3, 4, 5, 6, 8, 16, 32, 64, 128, 256, 512, 1024)
WEIGHTS = (12, 12, 12, 12, 12, 12, 6, 4, 3, 2, 1, 0.5, 0.5)


def curve(rng: random.Random, top: int, scale: int, points: int) -> PiecewiseLinear:
    """Non-negative, any shape (flat floors, knees, drops): like measured GEMM curves."""
    xs = sorted({0, top, *(rng.randint(1, max(top - 1, 1)) for _ in range(points))})
    ys = [rng.randint(0, scale // 4)]
    for _ in xs[1:]:
        ys.append(max(0, ys[-1] + rng.randint(-scale // 10, scale // 2)))
    return PiecewiseLinear(tuple(xs), tuple(ys))


def problem(rng: random.Random, n: int, objective: str) -> StepProblem:
    small = n <= 8
    max_prompt = 40 if small else 3000
    budget = rng.randint(8, 80) if small else rng.choice([512, 1024, 2048, 4096])
    lat = LatencyModel(
        tokens=curve(rng, budget, 4_000_000 if small else 60_000_000, rng.randint(1, 6)),
        batch=curve(rng, n + 1, 800_000 if small else 8_000_000, rng.randint(0, 3)),
        decode_context_ps=rng.choice([0, 1_000, 37_500, 350_000]),
        prefill=PrefillAttention(
            alpha_ns=rng.choice([0.0, 1.3, 26.0]) if small else rng.choice([0.0, 0.02, 0.1]),
            beta_ns=rng.choice([0.0, 2.6, 40.0]) if small else rng.choice([0.0, 0.05, 0.3]),
            grid=(4, 8, 16, 32) if small else (64, 128, 256, 512, 1024, 2048, 4096),
        ),
    )
    n_run = rng.randint(0, n)
    prios, arrivals = [0, 0, 1, 2], [0.0, 0.0, 1.0, 2.0]  # many ties
    reqs = []
    for k in range(n):
        p = rng.randint(1, max_prompt)
        if k < n_run:
            done = (
                rng.randint(p, p + 4 * max_prompt)
                if rng.random() < 0.7
                else rng.randint(0, max(p - 1, 0))
            )
        else:
            done = rng.choice([0, 0, 0, min(p - 1, 3)])
        reqs.append(
            Request(
                f"{'r' if k < n_run else 'w'}{k}", p, done, rng.choice(prios), rng.choice(arrivals)
            )
        )
    running, waiting = reqs[:n_run], reqs[n_run:]
    cfg = EngineConfig(
        max_num_scheduled_tokens=budget,
        max_num_running_reqs=max(n_run, 1) + rng.randint(0, 3 if small else n // 4),
        long_prefill_token_threshold=rng.choice([0, 0, 8, 24] if small else [0, 0, 256, 512]),
        min_prefill_chunk=rng.choice([1, 4, 8, 16] if small else [16, 64, 128]),
        block_size=rng.choice([1, 4, 16] if small else [16]),
        num_free_blocks=rng.choice([None, rng.randint(0, 12 if small else 400)]),
    )
    lo = lat.tokens(0) + lat.batch(0)
    hi = lat.tokens(budget) + lat.batch(n) + 2_000_000
    target = rng.randint(max(lo - 500_000, 1_000), max(hi, lo + 1_000))
    return StepProblem(tuple(running), tuple(waiting), cfg, lat, target / 1e6, objective, "strict")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=3.0, help="CP-SAT seconds per problem")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    counts: Counter = Counter()
    bad = 0
    started = time.perf_counter()
    for i in range(args.count):
        n = rng.choices(SIZES, WEIGHTS)[0]
        obj = ("target", "goodput")[i % 2]
        p = problem(rng, n, obj)
        res = solve(p, "structured")
        refs = [solve(p, "cpsat", time_limit=args.time_limit)]
        if n <= 8:
            refs.append(solve(p, "brute"))
        for ref in refs:
            try:
                check_against(p, res, ref)
            except AssertionError as exc:
                bad += 1
                print(f"DISAGREE #{i} n={n} {obj} vs {ref.solver}: {exc}", flush=True)
        proven_ref = refs[0].status in (SolveStatus.OPTIMAL, SolveStatus.INFEASIBLE)
        band = "<=8" if n <= 8 else "16-128" if n <= 128 else "256-1024"
        counts[(obj, band, str(res.status), proven_ref)] += 1
        if (i + 1) % 500 == 0:
            print(f"... {i + 1} problems, {bad} disagreements", flush=True)
    print(f"{args.count} strict problems, seed {args.seed}, {time.perf_counter() - started:.0f} s")
    print(f"{'objective':9} {'sizes':9} {'structured':11} {'cpsat proved':>12} {'count':>6}")
    for (obj, band, st, pr), c in sorted(counts.items()):
        print(f"{obj:9} {band:9} {st:11} {pr!s:>12} {c:>6}")
    print(f"disagreements: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
