"""The latency/throughput frontier of one step: solve it exactly for several targets.

For each target ``T`` the problem is solved exactly (its own objective unless overridden) and
every requested heuristic is run on the same problem; the evaluator scores all points. A point
is Pareto-optimal when it is feasible (every rule of the problem, under ``goodput`` the latency
cap too) and no other feasible point has latency <= and scheduled tokens >= with one of them
strict (latency lower is better, tokens higher is better). A point that breaks a rule is never
Pareto-optimal, however good its numbers look.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from stepopt.errors import InputError
from stepopt.evaluate import evaluate
from stepopt.heuristics.base import HEURISTIC_STATUS, checked_decision, get_heuristic
from stepopt.limits import check_target_ms
from stepopt.model import OBJECTIVES, StepProblem


@dataclass
class FrontierPoint:
    algorithm: str  # solver name or heuristic name
    kind: str  # "exact" or "heuristic"
    target_ms: float
    status: str  # solver status, or HEURISTIC
    latency_ms: float | None
    scheduled_tokens: int | None
    weighted_tokens: int | None
    batch_size: int | None
    feasible: bool  # every rule of the problem (goodput: the cap included)
    hard_feasible: bool
    solve_ms: float
    pareto: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_targets(text: str) -> list[float]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            v = float(item)
        except ValueError:
            raise InputError("--targets", "not a number", item) from None
        out.append(check_target_ms(v, "--targets"))
    if not out:
        raise InputError("--targets", "give at least one target in ms", text)
    return out


def frontier(
    problem: StepProblem,
    targets: Sequence[float],
    *,
    solver: str | None = "auto",
    time_limit: float | None = None,
    heuristics: Sequence[str] = ("three-stage",),
    objective: str | None = None,
) -> list[FrontierPoint]:
    """Exact and heuristic points for every target; ``pareto`` marks the non-dominated ones."""
    from stepopt.solvers.base import get_solver

    if objective is not None and objective not in OBJECTIVES:
        raise InputError("objective", f"must be one of {', '.join(OBJECTIVES)}", objective)
    fns = {name: get_heuristic(name) for name in heuristics}  # unknown names list valid ones
    algo = get_solver(solver) if solver else None
    points: list[FrontierPoint] = []
    for t in targets:
        changes: dict[str, Any] = {"target_latency_ms": float(t)}
        if objective:
            changes["objective"] = objective
        prob = problem.with_changes(**changes)
        if algo is not None:
            res = algo.solve(prob, time_limit=time_limit)
            ev = res.evaluation
            points.append(
                FrontierPoint(
                    res.solver,
                    "exact",
                    float(t),
                    str(res.status),
                    None if ev is None else ev.latency_ms,
                    None if ev is None else ev.scheduled_tokens,
                    None if ev is None else ev.weighted_tokens,
                    None if ev is None else ev.batch_size,
                    bool(ev is not None and ev.feasible),
                    bool(ev is not None and ev.hard_feasible),
                    res.wall_ms,
                )
            )
        for name, fn in fns.items():
            t0 = time.perf_counter()
            d = checked_decision(fn(prob), name)
            ms = (time.perf_counter() - t0) * 1000
            ev = evaluate(prob, d)
            points.append(
                FrontierPoint(
                    name,
                    "heuristic",
                    float(t),
                    HEURISTIC_STATUS,
                    ev.latency_ms,
                    ev.scheduled_tokens,
                    ev.weighted_tokens,
                    ev.batch_size,
                    ev.feasible,
                    ev.hard_feasible,
                    ms,
                )
            )
    for p, flag in zip(points, pareto_mask(points), strict=True):
        p.pareto = flag
    return points


def pareto_mask(points: Sequence[FrontierPoint]) -> list[bool]:
    """Non-dominated feasible points (equal points do not dominate each other)."""
    cand = [
        (p.latency_ms, p.scheduled_tokens)
        if p.feasible and p.latency_ms is not None and p.scheduled_tokens is not None
        else None
        for p in points
    ]
    out = []
    for c in cand:
        if c is None:
            out.append(False)
            continue
        lat, tok = c
        dominated = any(
            o is not None and o[0] <= lat and o[1] >= tok and (o[0] < lat or o[1] > tok)
            for o in cand
        )
        out.append(not dominated)
    return out
