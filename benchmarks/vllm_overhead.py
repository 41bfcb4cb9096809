"""Overhead of ``OptimizedScheduler.schedule()`` over vLLM's own ``schedule()``, and the
share of steered steps vLLM carries out exactly.

Per state and mode, in one process, thread CPU time (other processes on a shared machine do
not count), the two kinds alternating so that noise hits both alike:

- ``cold``: both schedulers rebuilt for every repetition and driven (by vLLM's own steps) to
  the state; one ``schedule()`` timed. Median of each, and the ratio.
- ``steady``: the same scheduler then runs ``--steps`` more rounds of ``schedule()`` and
  ``update_from_output()`` (fake model outputs); the sum of the ``schedule()`` times. Median
  over repetitions of each, and the ratio.

Modes: ``goodput`` with a loose cap (both schedule the same tokens), ``target`` at the
predicted latency of vLLM's own step plus 10 % (both schedule the same tokens), and ``target
40 ms`` (binding: the optimized step is smaller; shown for reference, not the same work).
``path`` says how the optimized scheduler took the timed cold step: ``whole`` (vLLM's own
step provably fits the target: left to it after a cheap check), ``decode`` (the decode-only
fast path), ``steered`` (read, decide, steer).

Then ``--exact-seeds`` random serving scenarios under KV pressure (arrivals over time, aborts,
FCFS and priority, sync and async): the share of steered steps vLLM carried out exactly.

    .venv-vllm/bin/python benchmarks/vllm_overhead.py [--reps 21] [--steps 20] [--lean]

Needs vLLM (``pip install 'stepopt[vllm]'``).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler

from stepopt.integrations import vllm as adapter
from stepopt.integrations.vllm_settings import SchedulerSettings
from stepopt.integrations.vllm_testing import (
    fake_output,
    make_request,
    make_scheduler,
    random_scenario,
    run_scenario,
)
from stepopt.latency.presets import load_preset

# name: (scheduler kwargs, requests to admit and run to decode, extra waiting at the end)
STATES: dict[str, tuple[dict[str, Any], list[tuple[int, int]], list[int]]] = {
    "64 decodes": ({"max_num_seqs": 256}, [(512, 64)], []),
    "256 decodes": ({"max_num_seqs": 256}, [(256, 256)], []),
    "64 decodes + 16 admitted": ({"max_num_seqs": 256}, [(512, 64)], [200] * 16),
    "32 decodes + 4 prefills + 8 waiting, thr 512": (
        {"max_num_seqs": 64, "max_num_batched_tokens": 2048, "long_prefill_token_threshold": 512},
        [(300, 32)],
        [3000] * 4 + [400] * 8,
    ),
}


def build(
    cls: type | None, state: str, settings: SchedulerSettings | None, lean: bool
) -> tuple[Any, int]:
    """A scheduler driven (by vLLM's own steps, whatever its class) to ``state``, and the
    thread CPU time of its last ``update_from_output()`` (where the optimized one plans the
    next step ahead)."""
    config, running, waiting = STATES[state]
    kwargs = {"max_num_batched_tokens": 8192, "num_blocks": 10000, **config}
    # `vllm serve` defaults: prefix caching and stats on.
    kwargs.update(enable_prefix_caching=not lean, log_stats=not lean)
    if settings is not None:
        kwargs["stepopt_settings"] = settings
    s = make_scheduler(cls, **kwargs)
    n = 0
    for prompt, count in running:
        for _ in range(count):
            s.add_request(make_request(f"r{n}", prompt, max_tokens=4096, arrival_time=n * 1e-3))
            n += 1
    while s.waiting or any(r.is_prefill_chunk for r in s.running):
        vllm_step(s)
    gc.collect()
    upd = vllm_step(s)  # every running request is decoding, just touched by vLLM as in an engine
    for prompt in waiting:
        s.add_request(make_request(f"w{n}", prompt, max_tokens=4096, arrival_time=n * 1e-3))
        n += 1
    return s, upd


def vllm_step(s: Any) -> int:
    out = AsyncScheduler.schedule(s)  # vLLM's own step even for the optimized class
    mro = fake_output(s, out)
    t = time.thread_time_ns()
    s.update_from_output(out, mro)
    return time.thread_time_ns() - t


def run(s: Any, steps: int) -> tuple[int, int, int, Any]:
    """Cold ``schedule()`` time, then the summed times of ``steps`` more rounds: of the
    ``schedule()`` calls, and of the ``update_from_output()`` calls before them."""
    t = time.thread_time_ns()
    out = s.schedule()
    cold = time.thread_time_ns() - t
    first = out
    total = upd = 0
    for _ in range(steps):
        mro = fake_output(s, out)
        t = time.thread_time_ns()
        s.update_from_output(out, mro)
        t1 = time.thread_time_ns()
        out = s.schedule()
        t2 = time.thread_time_ns()
        upd += t1 - t
        total += t2 - t1
    return cold, total, upd, first


def _path(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "-"
    if "fallback" in rec:
        return "fallback"
    return rec.get("path", "steered")


def measure(state: str, settings: SchedulerSettings, args: argparse.Namespace) -> dict[str, Any]:
    kinds = ("plain", "opt")
    cold: dict[str, list[int]] = {k: [] for k in kinds}
    cold_u: dict[str, list[int]] = {k: [] for k in kinds}  # + the update before it
    steady: dict[str, list[int]] = {k: [] for k in kinds}
    steady_u: dict[str, list[int]] = {k: [] for k in kinds}
    tokens = {"plain": 0, "opt": 0}
    stats: dict[str, int] = {}
    for rep in range(args.reps):
        for kind in kinds if rep % 2 else kinds[::-1]:
            if kind == "plain":
                s, u0 = build(None, state, None, args.lean)
            else:
                s, u0 = build(adapter.OptimizedScheduler, state, settings, args.lean)
            c, t, u, first = run(s, args.steps)
            cold[kind].append(c)
            cold_u[kind].append(c + u0)
            steady[kind].append(t)
            steady_u[kind].append(t + u)
            tokens[kind] = first.total_num_scheduled_tokens
            if kind == "opt":
                for key, value in _counts(s.stepopt).items():
                    stats[key] = stats.get(key, 0) + value
    n = max(args.steps, 1)

    def over(d: dict[str, list[int]]) -> float:
        a, b = statistics.median(d["plain"]), statistics.median(d["opt"])
        return 100 * (b - a) / a if a else 0.0

    return {
        "cold_vllm_ms": statistics.median(cold["plain"]) / 1e6,
        "cold_opt_ms": statistics.median(cold["opt"]) / 1e6,
        "cold_over": over(cold),
        "cold_over_u": over(cold_u),
        "steady_vllm_ms": statistics.median(steady["plain"]) / 1e6 / n,
        "steady_opt_ms": statistics.median(steady["opt"]) / 1e6 / n,
        "steady_over": over(steady) if args.steps else 0.0,
        "steady_over_u": over(steady_u) if args.steps else 0.0,
        "tok_vllm": tokens["plain"],
        "tok_opt": tokens["opt"],
        "stats": stats,
    }


def _counts(ctl: Any) -> dict[str, int]:
    """The optimized scheduler's counters (the exact rule's solver counts too)."""
    out = {"steps": ctl.steps, "steered": ctl.steered, "exact": ctl.exact, "ahead": ctl.ahead_used}
    if ctl.policy is not None:
        st = ctl.policy.stats
        out |= {"solved": st.decisions, "solver_fallbacks": st.fallbacks, "solve_ns": st.decide_ns}
    return out


def first_path(state: str, settings: SchedulerSettings, lean: bool) -> str:
    s, _ = build(adapter.OptimizedScheduler, state, settings, lean)
    s.schedule()
    return _path(s.stepopt.last)


def predicted_vllm_ms(state: str, lean: bool) -> float:
    """The demo model's prediction for vLLM's own step in ``state``."""
    s, _ = build(None, state, None, lean)
    view = adapter.problem_from_scheduler(s, latency=load_preset("demo"), target_latency_ms=1.0)
    out = s.schedule()
    return load_preset("demo").predict_ns(view.problem, out.num_scheduled_tokens) / 1e6


def exact_share(seeds: int) -> tuple[int, int, int]:
    steered = exact = steps = 0
    for seed in range(seeds):
        sc = random_scenario(seed)
        s = make_scheduler(
            adapter.OptimizedScheduler,
            async_scheduling=sc["lag"],
            stepopt_settings=SchedulerSettings(target_ms=30.0, objective="goodput", log_interval=0),
            **sc["kwargs"],
        )
        run_scenario(s, sc)
        steered += s.stepopt.steered
        exact += s.stepopt.exact
        steps += s.stepopt.steps
    return steps, steered, exact


def table(args: argparse.Namespace, rule: str, reps: int) -> None:
    """One row per state and mode for ``rule``."""

    def mode(target_ms: float, objective: str) -> SchedulerSettings:
        return SchedulerSettings(
            target_ms=target_ms,
            objective=objective,
            heuristic=rule,
            time_limit_ms=args.time_limit_ms,
            log_interval=0,
        )

    config = "lean (no prefix caching, no stats)" if args.lean else "serving defaults"
    limit = f" (time limit {args.time_limit_ms:g} ms per step)" if rule.startswith("exact") else ""
    print(
        f"\nrule {rule}{limit}; vLLM {config}; {reps} repetitions, {args.steps} steady rounds "
        "each; medians of thread CPU time; over+u: schedule() plus the update_from_output() "
        "before it"
    )
    print(
        f"{'state':<46} {'mode':<16} {'path':<8} {'cold vLLM':>9} {'opt':>7} {'over':>6} "
        f"{'over+u':>6} {'steady vLLM':>11} {'opt':>7} {'over':>6} {'over+u':>6} "
        f"{'tok vLLM':>8} {'tok opt':>7}  counts (opt, all repetitions)"
    )
    args.reps, saved = reps, args.reps
    for state in args.states:
        same = round(predicted_vllm_ms(state, args.lean) * 1.1, 3)
        modes = {
            "goodput, loose": mode(10_000.0, "goodput"),
            f"target {same:g}": mode(same, "target"),
            "target 40 ms": mode(40.0, "target"),
        }
        for name, settings in modes.items():
            m = measure(state, settings, args)
            m["path"] = first_path(state, settings, args.lean)
            c = m["stats"]
            counts = f"steps {c['steps']} steered {c['steered']} exact {c['exact']}"
            counts += f" planned ahead {c['ahead']}"
            if "solved" in c:
                mean = c["solve_ns"] / 1e6 / max(c["solved"], 1)
                counts += (
                    f"; solver {c['solved']} steps, {mean:.2f} ms mean, "
                    f"{c['solver_fallbacks']} to the fallback"
                )
            print(
                f"{state:<46} {name:<16} {m['path']:<8} {m['cold_vllm_ms']:9.3f} "
                f"{m['cold_opt_ms']:7.3f} {m['cold_over']:5.1f}% {m['cold_over_u']:5.1f}% "
                f"{m['steady_vllm_ms']:11.3f} {m['steady_opt_ms']:7.3f} "
                f"{m['steady_over']:5.1f}% {m['steady_over_u']:5.1f}% {m['tok_vllm']:8d} "
                f"{m['tok_opt']:7d}  {counts}"
            )
    args.reps = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--steps", type=int, default=20, help="steady-state rounds per repetition")
    ap.add_argument("--heuristic", default="three-stage")
    ap.add_argument(
        "--exact-rule", default="exact", help="also measured ('' to skip): exact[:SOLVER]"
    )
    ap.add_argument("--exact-reps", type=int, default=5, help="repetitions for --exact-rule")
    ap.add_argument("--time-limit-ms", type=float, default=20.0, help="the exact rule's limit")
    ap.add_argument("--lean", action="store_true", help="prefix caching and stats off")
    ap.add_argument("--states", nargs="*", default=list(STATES), choices=list(STATES))
    ap.add_argument("--exact-seeds", type=int, default=30)
    args = ap.parse_args()
    # vLLM and torch leave a huge object graph: freeze it so that the collector's passes over
    # it do not land at random in the timed calls (vLLM's engine freezes it too).
    build(None, "64 decodes", None, args.lean)
    gc.collect()
    gc.freeze()
    table(args, args.heuristic, args.reps)
    if args.exact_rule:
        table(args, args.exact_rule, args.exact_reps)
    if args.exact_seeds:
        steps, steered, exact = exact_share(args.exact_seeds)
        print(
            f"\nexactness: {args.exact_seeds} random scenarios under KV pressure, {steps} steps, "
            f"{steered} steered: {exact} carried out exactly by vLLM "
            f"({100 * exact / max(steered, 1):.2f} %)"
        )


if __name__ == "__main__":
    main()
