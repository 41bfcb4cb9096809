"""Overhead of ``OptimizedScheduler.schedule()`` over vLLM's own ``schedule()``.

Both schedulers are rebuilt from scratch for every repetition and driven (with fake model
outputs) to the same state; then one ``schedule()`` call is timed. The two kinds alternate so
that machine noise hits both alike. Prints, per state, the median of each and the measured
overhead in percent (goal: under 5 %); the optimizer's own work (reading the state, the
heuristic, the steering plan with its prediction), timed on a third copy of the same state,
in microseconds and as a share of vLLM's median (a steadier estimate of the overhead on a busy
machine); and the tokens each step scheduled.

    /work/vllm-venv/bin/python benchmarks/vllm_overhead.py [--reps 31] [--heuristic three-stage]

Needs vLLM (``pip install 'stepopt[vllm]'``).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler

from stepopt.heuristics.base import get_heuristic
from stepopt.integrations import vllm as adapter
from stepopt.integrations.vllm_settings import SchedulerSettings
from stepopt.integrations.vllm_testing import fake_output, make_request, make_scheduler
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


def build(cls: type | None, state: str, settings: SchedulerSettings | None, lean: bool) -> Any:
    """A scheduler driven (by vLLM's own steps, whatever its class) to ``state``."""
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
    # Collect this build's garbage now, then one more step (every running request is decoding)
    # so that the timed call finds the requests as an engine does: just touched by vLLM.
    gc.collect()
    vllm_step(s)
    for prompt in waiting:
        s.add_request(make_request(f"w{n}", prompt, max_tokens=4096, arrival_time=n * 1e-3))
        n += 1
    return s


def vllm_step(s: Any) -> None:
    out = AsyncScheduler.schedule(s)  # vLLM's own step even for the optimized class
    s.update_from_output(out, fake_output(s, out))


def warm_up(s: Any) -> None:
    out = s.schedule()  # the optimized class steers this one (and arms its fast path)
    s.update_from_output(out, fake_output(s, out))


def timed(fn: Callable[[], Any]) -> tuple[int, Any]:
    # CPU time of this thread: other processes on a shared machine do not count.
    t = time.thread_time_ns()
    out = fn()
    return time.thread_time_ns() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=31)
    ap.add_argument("--heuristic", default="three-stage")
    ap.add_argument("--lean", action="store_true", help="prefix caching and stats off")
    ap.add_argument("--states", nargs="*", default=list(STATES), choices=list(STATES))
    args = ap.parse_args()
    # vLLM and torch leave a huge object graph: freeze it so that the collector's passes over
    # it do not land at random in the timed calls (vLLM's engine freezes it too).
    build(None, "64 decodes", None, args.lean)
    gc.collect()
    gc.freeze()
    latency = load_preset("demo")
    heuristic = get_heuristic(args.heuristic)

    def mode(target_ms: float, objective: str, fast: int) -> SchedulerSettings:
        return SchedulerSettings(
            target_ms=target_ms,
            objective=objective,
            heuristic=args.heuristic,
            log_interval=0,
            fast_decode_steps=fast,
        )

    # name: (settings, warm-up step before the timed one)
    modes = {
        # A cap far above any step: the heuristic schedules what vLLM would (same work).
        "goodput, loose cap": (mode(10_000.0, "goodput", 0), False),
        # A binding target: smaller steps than vLLM's own.
        "target 40 ms": (mode(40.0, "target", 0), False),
        # Decode-only states after one steered step: the fast path (vLLM's own step).
        "decode-only, fast": (mode(10_000.0, "goodput", 32), True),
    }
    config = "lean (no prefix caching, no stats)" if args.lean else "serving defaults"
    print(
        f"heuristic {args.heuristic}; vLLM {config}; {args.reps} repetitions per cell; "
        "medians of thread CPU time"
    )
    print(
        f"{'state':<46} {'mode':<19} {'vLLM ms':>7} {'opt ms':>7} {'over':>6} "
        f"{'own us':>6} {'own/vLLM':>8} {'tok vLLM':>8} {'tok opt':>7}  read/heur/plan us"
    )
    for state in args.states:
        for name, (settings, warm) in modes.items():
            if warm and STATES[state][2]:
                continue  # the fast path needs an empty waiting queue
            base, opt, parts = [], [], []
            tok_base = tok_opt = 0
            for rep in range(args.reps):
                for kind in ("plain", "opt") if rep % 2 else ("opt", "plain"):
                    if kind == "plain":
                        s = build(None, state, None, args.lean)
                        if warm:
                            warm_up(s)
                        dt, out = timed(s.schedule)
                        base.append(dt)
                        tok_base = out.total_num_scheduled_tokens
                    else:
                        s = build(adapter.OptimizedScheduler, state, settings, args.lean)
                        if warm:
                            warm_up(s)
                        dt, out = timed(s.schedule)
                        opt.append(dt)
                        tok_opt = out.total_num_scheduled_tokens
                        last = s.stepopt.last
                        assert last and "fallback" not in last and bool(last.get("fast")) == warm
                if warm:
                    continue  # the fast path reads nothing and asks no heuristic
                # The optimizer's own parts, one shot each on a fresh copy of the same state.
                s = build(adapter.OptimizedScheduler, state, settings, args.lean)
                t_read, view = timed(
                    lambda s=s, st=settings: adapter.problem_from_scheduler(
                        s,
                        latency=latency,
                        target_latency_ms=st.target_ms,
                        objective=st.objective,
                        min_prefill_chunk=st.min_prefill_chunk,
                    )
                )
                t_heur, decision = timed(lambda v=view: heuristic(v.problem))
                t_plan, _ = timed(lambda v=view, d=decision: adapter.plan_steering(v, d))
                parts.append((t_read, t_heur, t_plan))
            mb, mo = statistics.median(base) / 1e6, statistics.median(opt) / 1e6
            own_cols = f"{'-':>6} {'-':>8}"
            split = "-"
            if parts:
                r, h, p = (statistics.median(x[k] for x in parts) / 1e3 for k in range(3))
                own = statistics.median(sum(x) for x in parts) / 1e3
                own_cols = f"{own:6.0f} {own / (10 * mb):7.1f}%"
                split = f"{r:.0f}/{h:.0f}/{p:.0f}"
            print(
                f"{state:<46} {name:<19} {mb:7.3f} {mo:7.3f} {100 * (mo - mb) / mb:5.1f}% "
                f"{own_cols} {tok_base:8d} {tok_opt:7d}  {split}"
            )


if __name__ == "__main__":
    main()
