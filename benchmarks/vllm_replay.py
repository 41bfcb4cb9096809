"""How often the ``vllm-v1`` replay, run on the step problem the adapter reads, differs from
real vLLM's step, by cause (docs/vllm.md, "Known differences").

Random serving scenarios (arrivals over time, aborts, FCFS and priority, the one-step output
lag of async scheduling or synchronous steps), in four groups: async without prefix caching
(FCFS, priority), and prefix caching with ample or scarce KV blocks (prompts sharing
prefixes). Each step, the replay predicts vLLM's step from the state just before it; a step
that differs is put down to:

- ``(b) victim in flight``: vLLM preempted a request the running loop skips (its last token
  in flight), which the problem leaves out;
- ``(c) prefix: preemption``: prefix caching on and vLLM or the replay preempted;
- ``(d) prefix: more tokens``: prefix caching on, no preemption, and vLLM scheduled more
  tokens to an admitted request than the replay (its looked-up hit was evicted in the step);
- ``(e) prefix: hit in the step``: prefix caching on, and vLLM scheduled fewer tokens to an
  admitted request than the replay (it hit blocks allocated earlier in the same step);
- ``(f) prefix: admission refused``: prefix caching on, and vLLM did not admit a request the
  replay admits (reused cached blocks leave the free pool: the whole-prompt check fails);
- ``other``: none of these (printed with the first example).

    .venv-vllm/bin/python benchmarks/vllm_replay.py [--seeds 40]
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from stepopt.heuristics.vllm_v1 import vllm_v1
from stepopt.integrations import vllm as adapter
from stepopt.integrations.vllm_testing import make_scheduler, random_scenario, run_scenario
from stepopt.latency.presets import load_preset

GROUPS = {
    "async, fcfs": {"lag": True, "policy": "fcfs", "prefix": False},
    "async, priority": {"lag": True, "policy": "priority", "prefix": False},
    "prefix caching, ample KV": {"prefix": True, "kv_pressure": False},
    "prefix caching, scarce KV": {"prefix": True, "kv_pressure": True},
}


def scenario(seed: int, group: dict[str, Any]) -> dict[str, Any]:
    sc = random_scenario(seed, kv_pressure=group.get("kv_pressure", True))
    if "lag" in group:
        sc["lag"] = group["lag"]
    if "policy" in group:
        sc["kwargs"]["policy"] = group["policy"]
    sc["kwargs"]["enable_prefix_caching"] = group["prefix"]
    return sc


def classify(view: Any, predicted: Any, out: Any, prefix: bool) -> str:
    victims = set(out.preempted_req_ids)
    if victims & set(view.skipped_running):
        return "(b) victim in flight"
    if prefix and (victims or predicted.preempted):
        return "(c) prefix: preemption"
    got = out.num_scheduled_tokens
    if prefix and any(got.get(r, 0) > n for r, n in predicted.tokens.items()):
        return "(d) prefix: more tokens"
    admitted = {r.id for r in view.problem.waiting}
    if prefix and any(0 < got.get(r, 0) < predicted.tokens.get(r, 0) for r in admitted):
        return "(e) prefix: hit in the step"
    if prefix and any(got.get(r, 0) == 0 < predicted.tokens.get(r, 0) for r in admitted):
        return "(f) prefix: admission refused"
    return "other"


def run_group(name: str, group: dict[str, Any], seeds: int) -> tuple[int, Counter[str], Any]:
    latency = load_preset("demo")
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}  # cause: where it first happened (a reproduction)
    steps = 0
    example = None
    for seed in range(seeds):
        sc = scenario(seed, group)
        # Prompts that share prefixes, so that the prefix cache has something to hit.
        if group["prefix"]:
            sc["token"] = 3
        s = make_scheduler(async_scheduling=sc["lag"], **sc["kwargs"])
        state: dict[str, Any] = {"k": 0}
        orig = s.schedule

        def schedule(*a: Any, s: Any = s, orig: Any = orig, state: dict[str, Any] = state) -> Any:
            view = adapter.problem_from_scheduler(s, latency=latency, target_latency_ms=50.0)
            policy = s.policy.value
            state["view"] = view
            state["predicted"] = vllm_v1(view.problem, policy, lone_request_rule=False)
            return orig(*a)

        s.schedule = schedule

        def on_step(out: Any, state: dict[str, Any] = state, seed: int = seed) -> None:
            nonlocal steps, example
            steps += 1
            view, predicted = state["view"], state["predicted"]
            same = dict(out.num_scheduled_tokens) == dict(predicted.tokens) and set(
                out.preempted_req_ids
            ) == set(predicted.preempted)
            if not same:
                cause = classify(view, predicted, out, group["prefix"])
                counts[cause] += 1
                first.setdefault(cause, f"seed {seed} step {state['k']}")
                if cause == "other" and example is None:
                    example = (seed, dict(out.num_scheduled_tokens), dict(predicted.tokens))
            state["k"] += 1

        run_scenario(s, sc, on_step=on_step)
    return steps, counts, example, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=40)
    args = ap.parse_args()
    print(f"{args.seeds} random scenarios per group; steps where the replay differs from vLLM")
    for name, group in GROUPS.items():
        steps, counts, example, first = run_group(name, group, args.seeds)
        diff = sum(counts.values())
        parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"
        share = 100 * diff / max(steps, 1)
        print(f"{name:<28} {steps:6d} steps, {diff:4d} differ ({share:.2f} %): {parts}")
        for cause, where in sorted(first.items()):
            print(f"    {cause}: first at {where}")
        if example is not None:
            seed, got, want = example
            print(f"    first unexplained: seed {seed}: vLLM {got} replay {want}")


if __name__ == "__main__":
    main()
