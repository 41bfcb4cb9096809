"""Three-stage's gap to the exact optimum by regime: the seed's choices against the defaults.

    .venv/bin/python benchmarks/three_stage_gap.py [--count N] [--seed S] [--time-limit S]
        [--regimes NAME ...] [--variants LABEL=PARAMS ...] [--preset NAME]
        [--objectives goodput target] [--priority-mode strict|weighted]

Regimes (Azure conversation trace ../shared/data/vidur/data/processed_traces/splitwise_conv.csv,
preset a100/llama-2-7b/tp1, budget 8192, min chunk 64, no threshold, strict mode unless
``--priority-mode weighted``, which gives half of the requests a priority in 0..3):

- ``overload-64+32``, ``overload-256+64``: steady-state snapshots of the trace (running requests
  sampled by lifetime, as ``stepopt scenarios generate --source trace:...`` does; waiting ones
  consecutive rows), target = U(0.3, 0.95) x the latency of all running decodes: the decodes
  alone exceed the target, so the step is a subset of the decodes.
- ``prefill-16+8``: the same with 25-50 % of the running requests put in chunked prefill at a
  random cached length (a multiple of 16), target = the decode-only latency + U(0.2, 5) ms:
  which running prefill gets the chunk decides the gap.
- ``trace-mix``: ``stepopt scenarios generate`` trace states (every regime, load 0.3-1.3,
  strict mode): the general case, to show nothing got worse.

Each regime runs with both objectives. Every problem is solved by CP-SAT (``--time-limit``,
target tolerance 1 us); the reference is the best decision found (CP-SAT's or any variant's,
by ``stepopt.evaluate.rank_key``), and the table says how many CP-SAT proved optimal. Gap as
FORMULATION.md defines it: goodput ``(W* - W) / W*``, target ``(|L - T| - |L* - T|) / T``; a
goodput decision over the target counts as a violation, not a gap. ``tok %``: scheduled tokens
in % of the reference's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from stepopt.evaluate import evaluate, rank_key
from stepopt.heuristics.base import coerce_params, get_heuristic
from stepopt.latency.presets import load_preset
from stepopt.model import Decision, EngineConfig, Request, StepProblem
from stepopt.scenarios import iter_scenarios
from stepopt.scenarios.common import GenerateOptions, assign_priorities
from stepopt.scenarios.trace import _running, _waiting, load_trace
from stepopt.solvers.base import SolveStatus, solve
from stepopt.testing.data import shared_data_dir

REGIMES = ("overload-64+32", "overload-256+64", "prefill-16+8", "trace-mix")
VARIANTS = {
    "seed": "decode_order=queue,prefill_fallback=false",
    "default": "",
}


def conversation_trace() -> Path | None:
    """The Azure conversation trace of ../shared/data, or None (and a message) without it."""
    root = shared_data_dir()
    path = None if root is None else root / "vidur/data/processed_traces/splitwise_conv.csv"
    if path is None or not path.is_file():
        print("shared data not found: ../shared/data/vidur/data/processed_traces", file=sys.stderr)
        return None
    return path


def variant_specs(specs: list[str] | None) -> dict[str, str]:
    """``{label: "k=v,..."}``: the seed and the defaults, plus ``LABEL=k=v,...`` specs."""
    raw = dict(VARIANTS)
    for spec in specs or ():
        label, _, params = spec.partition("=")
        raw[label] = params
    return raw


def decode_only_ms(problem: StepProblem) -> float:
    return evaluate(problem, Decision.of({r.id: 1 for r in problem.running_decodes})).latency_ms


def snapshot(rng, trace, preset: str, n_run: int, n_wait: int, objective: str, mode: str):
    cfg = EngineConfig(8192, max(256, n_run), 0, 64, 16, None)
    run, wait = _running(rng, trace, n_run), _waiting(rng, trace, n_wait)
    if mode == "weighted":  # half of the requests get a priority in 0..3
        run, wait = assign_priorities(rng, run, 4), assign_priorities(rng, wait, 4)
    return StepProblem(tuple(run), tuple(wait), cfg, load_preset(preset), 1.0, objective, mode)


def with_prefills(rng, problem: StepProblem) -> StepProblem:
    run = list(problem.running)
    share = rng.uniform(0.25, 0.5)
    for i, r in enumerate(run):
        if r.prompt_tokens >= 32 and rng.random() < share:
            cached = 16 * int(rng.integers(0, r.prompt_tokens // 16))
            run[i] = Request(r.id, r.prompt_tokens, cached, 0, r.arrival_time, r.output_tokens)
    return problem.with_changes(running=tuple(run))


def problems(
    regime: str, objective: str, count: int, seed: int, preset: str, trace_path: str, mode: str
):
    if regime == "trace-mix":
        opts = GenerateOptions(
            count=count, seed=seed, presets=(preset,), objective=objective, priority_mode=mode
        )
        for sc in iter_scenarios(f"trace:{trace_path}", opts):
            yield sc.problem
        return
    trace = load_trace(trace_path)
    n_run, n_wait = (int(x) for x in regime.split("-")[1].split("+"))
    for i in range(count):
        rng = np.random.default_rng([seed, REGIMES.index(regime), i])
        p = snapshot(rng, trace, preset, n_run, n_wait, objective, mode)
        if regime.startswith("overload"):
            target = decode_only_ms(p) * rng.uniform(0.3, 0.95)
        else:
            p = with_prefills(rng, p)
            target = decode_only_ms(p) + rng.uniform(0.2, 5.0)
        yield p.with_changes(target_latency_ms=round(target, 3))


def gap(problem: StepProblem, ev, ref) -> float:
    if problem.objective == "goodput":
        return (ref.weighted_tokens - ev.weighted_tokens) / max(ref.weighted_tokens, 1)
    return (ev.deviation_ns - ref.deviation_ns) / problem.target_ns


def run_regime(regime, objective, args, variants, trace_path) -> dict:
    fn = get_heuristic("three-stage")
    rows = {v: {"gap": [], "tok": [], "viol": 0, "opt": 0} for v in variants}
    n = proven = 0
    for p in problems(
        regime, objective, args.count, args.seed, args.preset, trace_path, args.priority_mode
    ):
        evs = {v: evaluate(p, fn(p, **kw)) for v, kw in variants.items()}
        res = solve(p, "cpsat", time_limit=args.time_limit, target_tolerance_ns=1000)
        cands = [e for e in evs.values() if e.hard_feasible]
        if res.evaluation is not None:
            cands.append(res.evaluation)
        ref = min(cands, key=lambda e: rank_key(p, e))
        n += 1
        proven += res.status == SolveStatus.OPTIMAL
        for v, ev in evs.items():
            r = rows[v]
            if objective == "goodput" and not ev.within_target and ref.within_target:
                r["viol"] += 1
                continue
            r["gap"].append(gap(p, ev, ref))
            r["opt"] += rank_key(p, ev) == rank_key(p, ref)
            r["tok"].append(100 * ev.scheduled_tokens / max(ref.scheduled_tokens, 1))
    return {"n": n, "proven": proven, "rows": rows}


def p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95)) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=30, help="problems per regime and objective")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=5.0, help="CP-SAT seconds per problem")
    ap.add_argument("--preset", default="a100/llama-2-7b/tp1")
    ap.add_argument("--regimes", nargs="*", default=list(REGIMES), choices=REGIMES)
    ap.add_argument("--objectives", nargs="*", default=["goodput", "target"])
    ap.add_argument("--priority-mode", choices=["strict", "weighted"], default="strict")
    ap.add_argument(
        "--variants",
        nargs="*",
        metavar="LABEL=K=V,...",
        help="three-stage parameter sets (default: seed and default)",
    )
    args = ap.parse_args()
    path = conversation_trace()
    if path is None:
        return 1
    raw = variant_specs(args.variants)
    fn = get_heuristic("three-stage")
    variants = {
        label: coerce_params(
            fn, dict(kv.split("=", 1) for kv in params.split(",") if kv), "--variants"
        )
        for label, params in raw.items()
    }
    print(
        f"preset {args.preset}, {args.priority_mode} mode, CP-SAT {args.time_limit:g} s "
        f"(tolerance 1 us), {args.count} problems per row, seed {args.seed}; variants: "
        + "; ".join(f"{k} = [{v or 'defaults'}]" for k, v in raw.items())
    )
    print(
        f"{'regime':<16} {'objective':<8} {'proven':>6} {'variant':<10} {'optimal':>7} "
        f"{'mean gap':>9} {'p95 gap':>8} {'max gap':>8} {'tok %':>6} {'viol':>4}"
    )
    for regime in args.regimes:
        for objective in args.objectives:
            t0 = time.perf_counter()
            out = run_regime(regime, objective, args, variants, str(path))
            for v, r in out["rows"].items():
                g = r["gap"] or [float("nan")]
                print(
                    f"{regime:<16} {objective:<8} {out['proven']:>3}/{out['n']:<2} {v:<10} "
                    f"{r['opt']:>7} {statistics.mean(g):>9.4f} {p95(r['gap']):>8.4f} "
                    f"{max(g):>8.4f} {statistics.mean(r['tok'] or [float('nan')]):>6.1f} "
                    f"{r['viol']:>4}"
                )
            print(f"{'':<16} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
