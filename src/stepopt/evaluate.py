"""The single judge of every decision: feasibility, latency and objective.

It imports no solver. Heuristics, solvers, studies and the simulator all score decisions here,
never by an algorithm's own objective value. The rules themselves live in
:mod:`stepopt.constraints` (one module per family); this module checks the decision's own
well-formedness, runs every family's check and ranks the results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stepopt.constraints import FAMILIES, DecisionView, Rule, Violation
from stepopt.constraints import priority as _priority
from stepopt.latency.model import StepAggregates
from stepopt.model import NS_PER_MS, Decision, StepProblem

__all__ = [
    "HARD_RULES",
    "PRIORITY_RULES",
    "Evaluation",
    "Rule",
    "Violation",
    "evaluate",
    "rank_key",
]


HARD_RULES = frozenset(Rule) - {Rule.LATENCY_CAP}
PRIORITY_RULES = frozenset(_priority.RULES)


@dataclass(frozen=True)
class Evaluation:
    """What a decision does to a problem.

    ``objective`` is the primary objective as one number: ``|L - T|`` in ms for ``target``
    (lower is better), weighted tokens for ``goodput`` (higher is better). ``tiebreak`` is the
    secondary one: weighted tokens for ``target`` (higher is better; :func:`rank_key` ranks the
    number of scheduled requests before it), latency in ms for ``goodput`` (lower is better).
    """

    feasible: bool
    violations: tuple[Violation, ...]
    latency_ns: int
    target_ns: int
    scheduled_tokens: int
    weighted_tokens: int
    batch_size: int
    num_admitted: int
    new_blocks: int
    objective_name: str
    latency_breakdown_ns: dict[str, int] = field(default_factory=dict)

    @property
    def latency_ms(self) -> float:
        return self.latency_ns / NS_PER_MS

    @property
    def deviation_ns(self) -> int:
        return abs(self.latency_ns - self.target_ns)

    @property
    def within_target(self) -> bool:
        return self.latency_ns <= self.target_ns

    @property
    def hard_feasible(self) -> bool:
        """No violation other than the goodput latency cap."""
        return not any(v.rule in HARD_RULES for v in self.violations)

    @property
    def objective(self) -> float:
        if self.objective_name == "target":
            return self.deviation_ns / NS_PER_MS
        return float(self.weighted_tokens)

    @property
    def tiebreak(self) -> float:
        if self.objective_name == "target":
            return float(self.weighted_tokens)
        return self.latency_ms

    def rules(self) -> set[Rule]:
        return {v.rule for v in self.violations}

    def to_dict(self) -> dict[str, Any]:
        return {
            "feasible": self.feasible,
            "violations": [v.to_dict() for v in self.violations],
            "latency_ns": self.latency_ns,
            "latency_ms": self.latency_ms,
            "target_ms": self.target_ns / NS_PER_MS,
            "within_target": self.within_target,
            "objective_name": self.objective_name,
            "objective": self.objective,
            "tiebreak": self.tiebreak,
            "scheduled_tokens": self.scheduled_tokens,
            "weighted_tokens": self.weighted_tokens,
            "batch_size": self.batch_size,
            "num_admitted": self.num_admitted,
            "new_blocks": self.new_blocks,
            "latency_breakdown_ns": dict(self.latency_breakdown_ns),
        }


def evaluate(problem: StepProblem, decision: Decision) -> Evaluation:
    """Judge ``decision`` against every constraint of ``problem`` and predict its latency."""
    view, agg, weighted = _view(problem, decision)
    out = _malformed(problem, decision, len(view.tokens))
    parts = problem.latency.breakdown_of(agg)
    view.latency_ns = parts["total"]
    for family in FAMILIES:
        out.extend(family.check(view))
    return Evaluation(
        feasible=not out,
        violations=tuple(out),
        latency_ns=view.latency_ns,
        target_ns=problem.target_ns,
        scheduled_tokens=agg.total_tokens,
        weighted_tokens=weighted,
        batch_size=agg.batch_size,
        num_admitted=len(view.admitted),
        new_blocks=view.new_blocks,
        objective_name=problem.objective,
        latency_breakdown_ns=parts,
    )


def _malformed(problem: StepProblem, decision: Decision, n_clean: int) -> list[Violation]:
    """What makes a decision ill-formed whatever the rules: unknown ids, negative counts,
    preempting what is not a running request or preempting a request that gets tokens.
    ``n_clean`` counts the positive counts of known ids: when every entry is one, there is
    no unknown id and no negative count to look for."""
    by_id, tokens = problem.by_id, decision.tokens
    out: list[Violation] = []
    if n_clean < len(tokens):
        unknown = tuple(sorted(k for k in tokens if k not in by_id))
        if unknown:
            out.append(
                Violation(
                    Rule.UNKNOWN_REQUEST, f"unknown request ids: {', '.join(unknown)}", unknown
                )
            )
        negative = tuple(sorted(k for k, v in tokens.items() if v < 0))
        if negative:
            out.append(
                Violation(
                    Rule.NEGATIVE_TOKENS,
                    "negative token counts: " + ", ".join(f"{k}={tokens[k]}" for k in negative),
                    negative,
                )
            )
    if decision.preempted:
        running_ids = problem.running_ids
        bad = sorted(
            p for p in set(decision.preempted) if p not in running_ids or tokens.get(p, 0) > 0
        )
        if bad:
            out.append(
                Violation(
                    Rule.PREEMPTION,
                    "preempted ids must be running requests that get no tokens: "
                    + ", ".join(bad[:5]),
                    tuple(bad),
                )
            )
    return out


def _view(problem: StepProblem, decision: Decision) -> tuple[DecisionView, StepAggregates, int]:
    """The decision as the constraint families read it (positive counts of known ids, in
    request order), the latency model's aggregates and the weighted tokens, in one pass."""
    get = decision.tokens.get
    weights = problem.weights
    bs = problem.config.block_size
    clean: dict[str, int] = {}
    unusual: list[str] = []  # scheduled ids other than 1-token decodes (what phase checks)
    prefills: list[tuple[int, int, int]] = []
    total = context = weighted = blocks = 0
    requests = problem.requests
    if len(problem.by_id) != len(requests):  # a repeated id (a hand-built problem): once each
        requests = tuple(problem.by_id[k] for k in dict.fromkeys(r.id for r in requests))
    for r in requests:
        rid = r.id
        n = get(rid, 0)
        if n <= 0:
            continue
        clean[rid] = n
        total += n
        weighted += weights[rid] * n
        cached = r.computed_tokens
        if cached >= r.prompt_tokens:  # a decode (Request.is_decode)
            context += cached
            if n != 1:
                unusual.append(rid)
        else:
            prefills.append((n, cached, r.prompt_tokens - cached))
            unusual.append(rid)
        blocks += -(-(cached + n) // bs) + (-cached // bs)  # stepopt.model.new_blocks, inlined
    preempted = frozenset(decision.preempted)
    running = problem.running
    view = DecisionView(
        problem=problem,
        decision=decision,
        tokens=clean,
        preempted=preempted,
        kept=[r for r in running if r.id not in preempted] if preempted else list(running),
        admitted=[r for r in problem.waiting if r.id in clean],
        unusual=unusual,
    )
    view.new_blocks = blocks
    if preempted:
        by_id, running_ids = problem.by_id, problem.running_ids
        view.freed_blocks = sum(
            problem.held_blocks(by_id[p]) for p in preempted if p in running_ids
        )
    agg = StepAggregates(total, len(clean), context, tuple(prefills))
    return view, agg, weighted


def rank_key(problem: StepProblem, ev: Evaluation) -> tuple[int, int, int, int]:
    """Sort key: smaller is better. Feasible first, then the objective's levels: ``target``
    |L - T|, most scheduled requests (unweighted), most weighted tokens; ``goodput`` most
    weighted tokens (with L <= T), lowest latency."""
    if problem.objective == "target":
        return (0 if ev.feasible else 1, ev.deviation_ns, -ev.batch_size, -ev.weighted_tokens)
    return (0 if ev.feasible else 1, -ev.weighted_tokens, ev.latency_ns, 0)
