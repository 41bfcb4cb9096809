"""Trace replay of three-stage variants: what the decode choice does to TTFT, TBT and fairness.

    .venv/bin/python benchmarks/three_stage_replay.py [--setup a100|h100] [--max-requests N]
        [--objective target|goodput] [--target-rule RULE] [--variants LABEL=PARAMS ...]

The setups of benchmarks/simulate.py (Azure conversation trace, engine limits, KV cache, fixed
target, SLOs TTFT 2 s / TBT 100 ms). On ``a100`` the running decodes alone often exceed the
target, so the decode choice of an overloaded step decides who waits. Per variant: TTFT
p50/p99, TBT p50/p99 over every gap between two tokens of a request, the longest such gap
(``max``, and ``unpreempted``: the longest among requests never preempted, whose gaps are the
scheduler's choice alone: a starved decode), the p99 over requests of each request's longest
gap, SLO
attainment (TTFT and per-request p99 TBT), throughput, steps and the policy's time per step.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from simulate import SETUPS, SLO_TBT_MS, SLO_TTFT_MS
from three_stage_gap import conversation_trace, variant_specs

from stepopt.latency.presets import load_preset
from stepopt.model import EngineConfig
from stepopt.simulate import SimConfig, load_trace, make_policy, simulate, summarize
from stepopt.simulate.engine import SimulationError
from stepopt.simulate.metrics import request_columns
from stepopt.simulate.targets import parse_target_rule


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup", choices=list(SETUPS), default="a100")
    ap.add_argument("--max-requests", type=int, default=3000)
    ap.add_argument("--objective", choices=["target", "goodput"], default="target")
    ap.add_argument(
        "--target-rule", default=None, help="fixed:MS or adaptive:... (default: the setup's)"
    )
    ap.add_argument("--variants", nargs="*", metavar="LABEL=K=V,...", help="extra variants")
    args = ap.parse_args()
    path = conversation_trace()
    if path is None:
        return 1
    raw = variant_specs(args.variants)
    preset, budget, max_run, target, kv = SETUPS[args.setup]
    rule = parse_target_rule(args.target_rule or f"fixed:{target:g}")
    trace = load_trace(path).cut(args.max_requests)
    cfg = SimConfig(
        engine=EngineConfig(budget, max_run, 0, 64, 16, None),
        kv_blocks=kv,
        objective=args.objective,
        validate=False,
    )
    print(
        f"{path.name}: first {len(trace)} requests; {args.setup} ({preset}, budget {budget}, "
        f"max running {max_run}, {kv} KV blocks), objective {args.objective}, target "
        f"{rule.spec}; SLOs TTFT {SLO_TTFT_MS:g} ms, TBT {SLO_TBT_MS:g} ms"
    )
    print(
        f"{'variant':<10} {'TTFT p50/p99 s':>15} {'TBT p50/p99 ms':>15} {'TBT max s':>9} "
        f"{'unpreempted':>11} "
        f"{'req max p99 s':>13} {'SLO %':>6} {'tok/s':>6} {'steps':>7} {'us/step':>7}"
    )
    for label, params in raw.items():
        policy = make_policy(f"three-stage[{params}]" if params else "three-stage")
        try:
            res = simulate(trace, policy, load_preset(preset), rule, cfg)
        except SimulationError as exc:
            print(f"{label:<10} failed: {exc}")
            continue
        cols = request_columns(res)
        s = summarize(res, SLO_TTFT_MS, SLO_TBT_MS, columns=cols)
        has = ~np.isnan(cols["tbt_max_ms"])
        worst = cols["tbt_max_ms"][has]
        kept = cols["tbt_max_ms"][has & (cols["preemptions"] == 0)]
        decide_us = 1000 * res.stats["policy"]["decide_ms_total"] / res.num_steps
        print(
            f"{label:<10} {s['ttft_p50_ms'] / 1000:>7.1f}/{s['ttft_p99_ms'] / 1000:<7.1f} "
            f"{s['tbt_p50_ms']:>7.1f}/{s['tbt_p99_ms']:<7.1f} {worst.max() / 1000:>9.2f} "
            f"{kept.max() / 1000:>11.2f} "
            f"{np.percentile(worst, 99) / 1000:>13.2f} {100 * s['slo_attainment']:>6.1f} "
            f"{s['total_tokens_per_s']:>6.0f} {res.num_steps:>7} {decide_us:>7.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
