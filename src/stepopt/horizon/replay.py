"""Replay a per-step policy over a window from the same start state, on the same arrivals.

The policy sees each step's problem (the window's queues at that time, the per-step target
it works to) and its decision is judged and applied by the same :class:`WindowState` that
judges exact plans, so the two are compared under one set of rules and one clock.
"""

from __future__ import annotations

from stepopt.errors import InputError
from stepopt.horizon.evaluate import Plan, WindowEvaluation, WindowState, judge
from stepopt.horizon.problem import WindowProblem


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
