"""The single judge of every decision: feasibility, latency and objective.

It imports no solver. Heuristics, solvers, studies and the simulator all score decisions here,
never by an algorithm's own objective value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stepopt.model import NS_PER_MS, Decision, StepProblem


class Rule(StrEnum):
    """The constraint a violation breaks."""

    UNKNOWN_REQUEST = "unknown_request"
    NEGATIVE_TOKENS = "negative_tokens"
    BUDGET = "budget"
    CONCURRENCY = "concurrency"
    PHASE = "phase"
    DECODE_FIRST = "priority_decode_first"
    RUNNING_FIRST = "priority_running_first"
    WAITING_ORDER = "priority_waiting_order"
    KV_CAPACITY = "kv_capacity"
    PREEMPTION = "preemption"  # a preempted id that is not a running request, or gets tokens
    LATENCY_CAP = "latency_cap"  # goodput objective only: L > T


HARD_RULES = frozenset(Rule) - {Rule.LATENCY_CAP}
PRIORITY_RULES = frozenset({Rule.DECODE_FIRST, Rule.RUNNING_FIRST, Rule.WAITING_ORDER})


@dataclass(frozen=True, slots=True)
class Violation:
    rule: Rule
    message: str
    request_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": str(self.rule),
            "message": self.message,
            "request_ids": list(self.request_ids),
        }


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


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def evaluate(problem: StepProblem, decision: Decision) -> Evaluation:
    """Judge ``decision`` against every constraint of ``problem`` and predict its latency."""
    cfg = problem.config
    by_id = problem.by_id
    tokens = decision.tokens
    out: list[Violation] = []

    unknown = tuple(sorted(k for k in tokens if k not in by_id))
    if unknown:
        out.append(
            Violation(Rule.UNKNOWN_REQUEST, f"unknown request ids: {', '.join(unknown)}", unknown)
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

    def c(rid: str) -> int:
        return max(tokens.get(rid, 0), 0)

    # A preempted running request gives back its slot and its KV blocks (recompute
    # preemption, as vLLM does) and takes no part in the priority rules this step.
    running_ids = {r.id for r in problem.running}
    preempted = set(decision.preempted)
    bad_preempt = sorted(p for p in preempted if p not in running_ids or c(p) > 0)
    if bad_preempt:
        out.append(
            Violation(
                Rule.PREEMPTION,
                "preempted ids must be running requests that get no tokens: "
                + ", ".join(bad_preempt[:5]),
                tuple(bad_preempt),
            )
        )
    kept = [r for r in problem.running if r.id not in preempted]

    total = sum(c(r.id) for r in problem.requests)
    if total > cfg.max_num_scheduled_tokens:
        out.append(
            Violation(
                Rule.BUDGET,
                f"{total} tokens scheduled, budget max_num_scheduled_tokens="
                f"{cfg.max_num_scheduled_tokens}",
            )
        )

    admitted = [r for r in problem.waiting if c(r.id) > 0]
    if len(kept) + len(admitted) > cfg.max_num_running_reqs:
        out.append(
            Violation(
                Rule.CONCURRENCY,
                f"{len(kept)} running + {len(admitted)} admitted exceed "
                f"max_num_running_reqs={cfg.max_num_running_reqs}",
                tuple(r.id for r in admitted),
            )
        )

    for r in problem.requests:
        n = c(r.id)
        if n == 0:
            continue
        lo, hi = problem.lo(r), problem.hi(r)
        if not lo <= n <= hi:
            kind = "decode" if r.is_decode else "prefill"
            out.append(
                Violation(Rule.PHASE, f"{r.id}: {n} tokens, {kind} allows 0 or {lo}..{hi}", (r.id,))
            )

    # Priority. Decode > Prefill holds in both modes.
    prefill_scheduled = [r.id for r in problem.requests if not r.is_decode and c(r.id) > 0]
    starved = [r.id for r in kept if r.is_decode and c(r.id) == 0]
    if prefill_scheduled and starved:
        out.append(
            Violation(
                Rule.DECODE_FIRST,
                f"prefill tokens scheduled ({', '.join(prefill_scheduled[:5])}) while running "
                f"decodes get none ({', '.join(starved[:5])})",
                tuple(starved),
            )
        )
    if problem.priority_mode == "strict":
        if admitted:
            short = [r.id for r in kept if c(r.id) < problem.hi(r)]
            if short:
                out.append(
                    Violation(
                        Rule.RUNNING_FIRST,
                        f"waiting requests admitted while running requests get less than their "
                        f"full chunk ({', '.join(short[:5])})",
                        tuple(short),
                    )
                )
        order = problem.waiting_order
        k = 0
        while k < len(order) and c(order[k].id) > 0:
            k += 1
        skipped_ahead = [r.id for r in order[k:] if c(r.id) > 0]
        if skipped_ahead:
            out.append(
                Violation(
                    Rule.WAITING_ORDER,
                    f"waiting requests admitted out of (priority, arrival, id) order: "
                    f"{', '.join(skipped_ahead[:5])} before {order[k].id}",
                    tuple(skipped_ahead),
                )
            )

    new_blocks = 0
    bs = cfg.block_size
    for r in problem.requests:
        n = c(r.id)
        if n:
            new_blocks += _ceil_div(r.computed_tokens + n, bs) - _ceil_div(r.computed_tokens, bs)
    if cfg.num_free_blocks is not None:
        freed = sum(
            _ceil_div(problem.by_id[p].computed_tokens, bs) for p in preempted if p in running_ids
        )
        if new_blocks > cfg.num_free_blocks + freed:
            extra = f" + {freed} freed by preemption" if freed else ""
            out.append(
                Violation(
                    Rule.KV_CAPACITY,
                    f"{new_blocks} new KV blocks needed, num_free_blocks="
                    f"{cfg.num_free_blocks}{extra}",
                )
            )

    clean = {r.id: c(r.id) for r in problem.requests if c(r.id) > 0}
    parts = problem.latency.breakdown_ns(problem, clean)
    latency = parts["total"]
    target = problem.target_ns
    if problem.objective == "goodput" and latency > target:
        out.append(
            Violation(
                Rule.LATENCY_CAP,
                f"predicted latency {latency / NS_PER_MS:.3f} ms exceeds the target "
                f"{target / NS_PER_MS:.3f} ms",
            )
        )
    weights = problem.weights
    return Evaluation(
        feasible=not out,
        violations=tuple(out),
        latency_ns=latency,
        target_ns=target,
        scheduled_tokens=sum(clean.values()),
        weighted_tokens=sum(weights[k] * v for k, v in clean.items()),
        batch_size=len(clean),
        num_admitted=len(admitted),
        new_blocks=new_blocks,
        objective_name=problem.objective,
        latency_breakdown_ns=parts,
    )


def better(problem: StepProblem, a: Evaluation, b: Evaluation) -> bool:
    """Whether ``a`` is strictly better than ``b`` under the problem's lexicographic objective
    (feasibility first)."""
    return rank_key(problem, a) < rank_key(problem, b)


def rank_key(problem: StepProblem, ev: Evaluation) -> tuple[int, int, int, int]:
    """Sort key: smaller is better. Feasible first, then the objective's levels: ``target``
    |L - T|, most scheduled requests (unweighted), most weighted tokens; ``goodput`` most
    weighted tokens (with L <= T), lowest latency."""
    if problem.objective == "target":
        return (0 if ev.feasible else 1, ev.deviation_ns, -ev.batch_size, -ev.weighted_tokens)
    return (0 if ev.feasible else 1, -ev.weighted_tokens, ev.latency_ns, 0)
