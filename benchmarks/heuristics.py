"""Decision time of every registered heuristic at engine-sized steps.

    .venv/bin/python benchmarks/heuristics.py [--reps N] [--seed S] [--only NAME ...]
        [--quality N]

Sizes: 64 running decodes + 32 waiting, 256 + 32, 1024 + 256 (max_num_running_reqs 2048, so
the slot limit never binds by itself). Decode contexts 128..4096, waiting prompts 32..2048,
seeded; latency preset ``h100/llama-2-7b/tp1`` (``--preset``); a KV limit that does not bind;
target = the latency of the decode-only step + 10 ms (``--slack-ms``), so the greedy admits a
few waiting requests. Each repetition runs
the heuristic on a fresh ``StepProblem`` built from the same request tuples (no cached views
carried over); time.perf_counter_ns around the call only. The reference column is vLLM
0.33.0's own ``Scheduler.schedule()`` on this machine (../shared/design/REFERENCE.md).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

from stepopt.evaluate import evaluate
from stepopt.heuristics import get_heuristic, heuristic_names
from stepopt.latency.presets import load_preset
from stepopt.model import Decision, EngineConfig, Request, StepProblem

SIZES = ((64, 32), (256, 32), (1024, 256))
VLLM_MS = {(64, 32): 1.9, (256, 32): 7.4}  # measured with 64 / 256 running decodes
GOALS_US = {(64, 32): 40.0, (256, 32): 150.0}  # three-stage median goals


def build(
    n_run: int, n_wait: int, seed: int, preset: str = "h100/llama-2-7b/tp1", slack_ms: float = 10.0
) -> tuple[tuple, tuple, EngineConfig, float]:
    rng = random.Random(seed)
    running = tuple(
        Request(f"d{k}", p := rng.randint(16, 1024), p + rng.randint(112, 3072), 0, k * 0.01)
        for k in range(n_run)
    )
    waiting = tuple(
        Request(f"w{k}", rng.randint(32, 2048), 0, rng.randint(0, 2), 100.0 + k * 0.01)
        for k in range(n_wait)
    )
    cfg = EngineConfig(
        max_num_scheduled_tokens=8192,
        max_num_running_reqs=2048,
        long_prefill_token_threshold=1024,
        min_prefill_chunk=64,
        block_size=16,
        num_free_blocks=1_000_000,
    )
    probe = StepProblem(running, waiting, cfg, load_preset(preset), 1.0)
    decode_only = evaluate(probe, Decision.of({r.id: 1 for r in running})).latency_ms
    return running, waiting, cfg, decode_only + slack_ms


def time_one(
    name: str, n_run: int, n_wait: int, reps: int, seed: int, preset: str, slack_ms: float
) -> dict:
    running, waiting, cfg, target = build(n_run, n_wait, seed, preset, slack_ms)
    latency = load_preset(preset)
    fn = get_heuristic(name)
    problems = [StepProblem(running, waiting, cfg, latency, target) for _ in range(reps + 20)]
    for p in problems[:20]:  # warm-up (code paths, attribute caches, not the problems)
        fn(p)
    samples = []
    gc.disable()
    try:
        for p in problems[20:]:
            t0 = time.perf_counter_ns()
            fn(p)
            samples.append(time.perf_counter_ns() - t0)
    finally:
        gc.enable()
    samples.sort()
    ev = evaluate(problems[0], fn(problems[0]))
    return {
        "median_us": statistics.median(samples) / 1000,
        "p99_us": samples[min(len(samples) - 1, int(0.99 * len(samples)))] / 1000,
        "tokens": ev.scheduled_tokens,
        "admitted": ev.num_admitted,
        "latency_ms": ev.latency_ms,
        "target_ms": target,
        "feasible": ev.feasible,
    }


def quality(n: int, preset: str) -> None:
    """Gap to proven CP-SAT optima on ``n`` generated engine-scale problems (<= 8 requests,
    target objective, strict mode; stepopt.testing.strategies.problems, derandomized)."""
    from hypothesis import HealthCheck, given, settings

    from stepopt.evaluate import rank_key
    from stepopt.solvers.base import SolveStatus, solve
    from stepopt.testing.strategies import problems

    names = heuristic_names()
    rows: dict[str, list[float]] = {k: [] for k in names}
    same = dict.fromkeys(names, 0)
    infeasible = dict.fromkeys(names, 0)
    proven = [0]

    @settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(problems(max_requests=8, preset=preset, objective="target", priority_mode="strict"))
    def run(p: StepProblem) -> None:
        res = solve(p, "cpsat", time_limit=10.0)
        if res.status != SolveStatus.OPTIMAL:
            return
        proven[0] += 1
        for name in names:
            ev = evaluate(p, get_heuristic(name)(p))
            same[name] += rank_key(p, ev) == rank_key(p, res.evaluation)
            if not ev.feasible:
                infeasible[name] += 1
                continue
            rows[name].append(100 * (ev.deviation_ns - res.evaluation.deviation_ns) / p.target_ns)

    run()
    print(f"\ngap to the proven optimum, |L - T| in % of T, {proven[0]} problems proven optimal")
    print(
        f"{'heuristic':<18} {'optimal':>8} {'infeasible':>10} {'median %':>9} {'mean %':>7} "
        f"{'max %':>7}"
    )
    for name in names:
        g = rows[name] or [float("nan")]
        print(
            f"{name:<18} {same[name]:>8} {infeasible[name]:>10} {statistics.median(g):>9.2f} "
            f"{statistics.mean(g):>7.2f} {max(g):>7.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000, help="repetitions at the two small sizes")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--only", nargs="*", help="heuristic names (default: all)")
    ap.add_argument("--preset", default="h100/llama-2-7b/tp1", help="latency preset")
    ap.add_argument("--slack-ms", type=float, default=10.0, help="target = decode-only + this")
    ap.add_argument(
        "--quality",
        type=int,
        default=0,
        metavar="N",
        help="also compare with CP-SAT optima on N generated problems",
    )
    args = ap.parse_args()
    names = args.only or heuristic_names()
    print(
        f"preset {args.preset}, target = decode-only latency + {args.slack_ms:g} ms, "
        f"budget 8192, threshold 1024, min chunk 64, seed {args.seed}"
    )
    print(
        f"{'heuristic':<18} {'running+waiting':>15} {'median us':>10} {'p99 us':>9} "
        f"{'vLLM ms':>8} {'goal us':>8} {'tokens':>7} {'adm':>4} {'L/T ms':>15} feasible"
    )
    for n_run, n_wait in SIZES:
        reps = args.reps if n_run < 1024 else max(args.reps // 5, 50)
        for name in names:
            r = time_one(name, n_run, n_wait, reps, args.seed, args.preset, args.slack_ms)
            ref = VLLM_MS.get((n_run, n_wait))
            goal = GOALS_US.get((n_run, n_wait)) if name == "three-stage" else None
            print(
                f"{name:<18} {f'{n_run}+{n_wait}':>15} {r['median_us']:>10.1f} "
                f"{r['p99_us']:>9.1f} {'-' if ref is None else f'{ref:.1f}':>8} "
                f"{'-' if goal is None else f'{goal:.0f}':>8} {r['tokens']:>7} "
                f"{r['admitted']:>4} {r['latency_ms']:>7.2f}/{r['target_ms']:<7.2f} "
                f"{'yes' if r['feasible'] else 'no'}"
            )
    if args.quality:
        quality(args.quality, args.preset)


if __name__ == "__main__":
    main()
