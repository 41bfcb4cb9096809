"""Replay a per-step policy over a window from the same start state, on the same arrivals.

The policy sees each step's problem (the window's queues at that time, the per-step target
it works to) and its decision is judged and applied by the same :class:`WindowState` that
judges exact plans, so the two are compared under one set of rules and one clock.
"""

from __future__ import annotations

from stepopt.errors import InputError
from stepopt.horizon.evaluate import Plan, WindowEvaluation, WindowState, judge
from stepopt.horizon.problem import NS_PER_MS, WindowProblem


def replay_policy(
    w: WindowProblem,
    policy: str,
    target_ms: float | None = None,
    objective: str = "goodput",
    time_limit: float | None = 1.0,
) -> tuple[Plan, WindowEvaluation]:
    """The plan ``policy`` makes over ``w`` and its evaluation. The per-step target defaults
    to the TBT SLO (a latency cap per step, as Sarathi-Serve chooses its budget)."""
    from stepopt.simulate.policies import make_policy

    pol = make_policy(policy, time_limit=time_limit)
    if hasattr(pol, "start_at"):  # horizon[:K] keeps a clock and token times of its own
        pol.start_at(w)
    target = w.slo.tbt_ms if target_ms is None else target_ms
    st = WindowState(w)
    plan: Plan = []
    lats: list[int] = []
    violations: list[str] = []
    for k in range(1, w.steps + 1):
        problem = st.problem(target, objective)
        decision, _ = pol.decide(problem)
        if decision.preempted:
            raise InputError(
                "policy",
                "preempts inside a window (not modelled; give the window no KV limit)",
                policy,
            )
        tokens = decision.scheduled()
        lat, bad = st.apply(problem, tokens, pol.exempt)
        if bad:
            violations.extend(f"step {k}: {b}" for b in bad)
            break
        plan.append(tokens)
        lats.append(lat)
    return plan, judge(w, st, lats, violations)


def replay_stretched(
    w: WindowProblem, idle_from: int, max_idle: int, policy: str = "three-stage"
) -> Plan:
    """``policy``'s plan, except that from step ``idle_from`` on it idles (an empty step: the
    clock jumps to the next arrival), at most ``max_idle`` times, whenever that jump keeps
    every started, unfinished request within the TBT bound; each step's latency target is
    what is left of that bound. Per-step policies never idle, so they cannot make a late
    arrival visible inside the window; this plan is a hint for the exact model, which can."""
    from stepopt.simulate.policies import make_policy

    pol = make_policy(policy, time_limit=1.0)
    st = WindowState(w)
    plan: Plan = []
    busy = w.tbt_ns  # no idling before a busy step has shown how long one takes
    for k in range(1, w.steps + 1):
        nxt = next((a for a in st.arrivals if a > st.t), None)
        open_ = [s.last for s in st.slots if s.last is not None and not s.finished]
        left = w.tbt_ns - max((st.t - t for t in open_), default=0)
        problem = st.problem(max(left, NS_PER_MS) / NS_PER_MS, "goodput")
        # room after the jump for a step like the last busy one
        fits = nxt is not None and all(nxt + busy - t <= w.tbt_ns for t in open_)
        if k >= idle_from and max_idle > 0 and fits:
            tokens: dict[str, int] = {}
            max_idle -= 1
        else:
            tokens = pol.decide(problem)[0].scheduled()
        lat, bad = st.apply(problem, tokens, pol.exempt)
        if bad:
            raise InputError("policy", f"step {k}: {bad[0]}", policy)
        busy = lat or busy
        plan.append(tokens)
    return plan
