"""Windows cut from a trace replay: the simulator's state at a step is the start state.

The trace is replayed once under a per-step policy (no KV limit, so no preemption); the state
at step ``s`` is rebuilt from the recorded decisions (prefill progress, emitted tokens, first
and last token times), and the window holds the requests running or waiting then plus those
that arrive before the simulator's own ``K``-th step from there ends.
"""

from __future__ import annotations

from dataclasses import replace

from stepopt.errors import InputError
from stepopt.horizon.problem import Slo, SloWeights, WindowProblem, WindowRequest
from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.model import EngineConfig, PriorityMode
from stepopt.simulate.trace import Trace


def without_prefill_attention(model: LatencyModel) -> LatencyModel:
    """The same model with the prefill attention term removed (the exact window model does
    not encode it); the name says so."""
    if model.prefill.is_zero:
        return model
    return replace(model, prefill=PrefillAttention(), name=f"{model.name}-no-prefill-attention")


def cut_windows(
    trace: Trace,
    latency: LatencyModel,
    engine: EngineConfig,
    slo: Slo,
    steps: int,
    *,
    every: int | None = None,
    count: int = 4,
    first: int = 0,
    policy: str = "three-stage",
    target_ms: float | None = None,
    priority_mode: PriorityMode = "strict",
    slo_weights: SloWeights = "unweighted",
) -> list[WindowProblem]:
    """``count`` windows of ``steps`` steps starting at simulator steps ``first``,
    ``first + every``, ... (``every`` defaults to ``steps``: back-to-back windows)."""
    from stepopt.simulate.engine import SimConfig, simulate
    from stepopt.simulate.policies import make_policy
    from stepopt.simulate.targets import FixedTarget

    if steps < 1:
        raise InputError("--steps", "must be >= 1", steps)
    if count < 1:
        raise InputError("--count", "must be >= 1", count)
    every = steps if every is None else every
    if every < 1:
        raise InputError("--every", "must be >= 1", every)
    starts = [first + j * every for j in range(count)]
    cfg = SimConfig(
        engine=replace(engine, num_free_blocks=None),
        objective="goodput",
        priority_mode=priority_mode,
        record_decisions=True,
        validate=False,
        max_steps=starts[-1] + steps + 1,
    )
    target = FixedTarget(slo.tbt_ms if target_ms is None else target_ms)
    res = simulate(trace, make_policy(policy), latency, target, cfg)
    times, lats = res.steps["time_ns"], res.steps["latency_ns"]
    decisions = res.decisions or []
    out = []
    for s in starts:
        if s >= len(times):
            break
        end_step = min(s + steps, len(times)) - 1
        horizon_end = times[end_step] + lats[end_step]
        out.append(
            WindowProblem(
                start_ns=times[s],
                requests=_window_at(trace, decisions, times, lats, s, horizon_end),
                config=replace(engine, num_free_blocks=None),
                latency=latency,
                slo=slo,
                steps=steps,
                priority_mode=priority_mode,
                slo_weights=slo_weights,
                name=f"{trace.source}-step{s}",
                meta={"trace": trace.source, "step": s, "policy": policy},
            )
        )
    return out


def _window_at(trace: Trace, decisions, times, lats, s: int, end_ns: int):
    """The requests of the window starting at simulator step ``s``."""
    ids = trace.ids
    arrivals = trace.arrivals_ns.tolist()
    prompts = trace.prompt_tokens.tolist()
    outputs = trace.output_tokens.tolist()
    prios = trace.priorities.tolist()
    idx = {rid: k for k, rid in enumerate(ids)}
    computed = dict.fromkeys(ids, 0)
    emitted = dict.fromkeys(ids, 0)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    admitted: list[str] = []
    for k in range(s):
        t_end = times[k] + lats[k]
        for rid, n in decisions[k].items():
            j = idx[rid]
            if computed[rid] == 0 and emitted[rid] == 0:
                admitted.append(rid)
            computed[rid] += n
            if computed[rid] >= prompts[j]:
                emitted[rid] += 1
                first.setdefault(rid, t_end)
                last[rid] = t_end
    reqs = []
    for rid in admitted:
        j = idx[rid]
        if emitted[rid] >= outputs[j]:
            continue
        reqs.append(
            WindowRequest(
                rid,
                prompts[j],
                outputs[j],
                arrivals[j],
                computed[rid],
                emitted[rid],
                prios[j],
                None,
                first.get(rid),
                last.get(rid),
                running=True,
            )
        )
    seen = set(admitted)
    for j, rid in enumerate(ids):
        if rid in seen or arrivals[j] > end_ns:
            continue
        reqs.append(WindowRequest(rid, prompts[j], outputs[j], arrivals[j], priority=prios[j]))
    return tuple(reqs)
