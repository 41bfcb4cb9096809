"""Per-step policies for the simulator: a registered heuristic, or an exact solver with a
heuristic fallback.

A policy says which of the evaluator's hard rules it is held to in validate mode: every one,
except for the vLLM replays, which break the rules vLLM does not know (docs/heuristics.md,
"The rules vLLM may break"), and whether it preempts by itself (``Decision.preempted``); the
simulator then leaves KV-capacity preemption to it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from stepopt.errors import InputError
from stepopt.evaluate import Rule, evaluate, rank_key
from stepopt.heuristics.base import (
    check_signature,
    checked_decision,
    coerce_params,
    get_heuristic,
    heuristic_info,
)
from stepopt.model import Decision, StepProblem

EXACT = "exact"
HORIZON = "horizon"  # receding horizon: stepopt.horizon.policy


@dataclass
class PolicyStats:
    decisions: int = 0
    decide_ns: int = 0
    fallbacks: int = 0  # exact: steps decided by the fallback heuristic
    statuses: Counter[str] = field(default_factory=Counter)  # exact: solver status counts
    proved_by: Counter[str] = field(default_factory=Counter)  # exact (auto): proving backend

    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "decide_ms_total": self.decide_ns / 1e6,
            "decide_ms_mean": self.decide_ns / 1e6 / max(self.decisions, 1),
            "fallbacks": self.fallbacks,
            "solver_statuses": dict(self.statuses),
            "proved_by": dict(self.proved_by),
        }


class Policy:
    """Base: ``decide(problem) -> (decision, source)``; ``source`` names who decided."""

    name: str = "policy"
    preempts: bool = False
    exempt: frozenset[Rule] = frozenset()

    def __init__(self) -> None:
        self.stats = PolicyStats()

    def decide(self, problem: StepProblem) -> tuple[Decision, str]:
        raise NotImplementedError


class HeuristicPolicy(Policy):
    def __init__(self, name: str, params: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.name = name
        self._fn = get_heuristic(name)  # unknown names list the valid ones
        self._params = dict(params or {})
        check_signature(self._fn, name, self._params)
        info = heuristic_info(name)  # the registry says which rules it may break
        self.preempts = info.preempts
        self.exempt = info.exempt

    def decide(self, problem: StepProblem) -> tuple[Decision, str]:
        t0 = time.perf_counter_ns()
        d = self._fn(problem, **self._params) if self._params else self._fn(problem)
        if type(d) is not Decision:  # fast path; subclasses and mistakes checked below
            d = checked_decision(d, self.name)
        self.stats.decide_ns += time.perf_counter_ns() - t0
        self.stats.decisions += 1
        return d, self.name


class ExactPolicy(Policy):
    """A solver per step. When it returns no decision (time limit, error) the fallback
    heuristic decides; when its decision is not proven optimal, the better of the two by
    :func:`stepopt.evaluate.rank_key` is taken. Both count as fallbacks when the heuristic's
    decision is used."""

    def __init__(
        self,
        solver: str = "auto",
        time_limit: float | None = 1.0,
        fallback: str = "three-stage",
        params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from stepopt.solvers.base import get_solver

        if time_limit is not None and not time_limit > 0:
            raise InputError("time_limit", "must be > 0 seconds", time_limit)
        get_solver(solver)  # unknown names list the valid ones
        self.name = f"{EXACT}:{solver}"
        self.solver = solver
        self.time_limit = time_limit
        self.fallback = HeuristicPolicy(fallback)
        if self.fallback.preempts:
            raise InputError("fallback", "must be a heuristic that does not preempt", fallback)
        self._params = dict(params or {})

    def decide(self, problem: StepProblem) -> tuple[Decision, str]:
        from stepopt.solvers.base import SolveStatus, solve

        t0 = time.perf_counter_ns()
        res = solve(problem, self.solver, time_limit=self.time_limit, **self._params)
        st = self.stats
        st.statuses[str(res.status)] += 1
        if res.status == SolveStatus.OPTIMAL:
            st.proved_by[res.params.get("proved_by") or res.solver] += 1
        st.decisions += 1
        ok = res.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE) and res.decision
        source = self.solver
        if ok and res.status == SolveStatus.OPTIMAL:
            decision = res.decision
        else:
            alt, _ = self.fallback.decide(problem)
            decision = alt
            source = "fallback"
            if ok:
                ev_s = res.evaluation or evaluate(problem, res.decision)
                if rank_key(problem, ev_s) <= rank_key(problem, evaluate(problem, alt)):
                    decision, source = res.decision, self.solver
            if source == "fallback":
                st.fallbacks += 1
        st.decide_ns += time.perf_counter_ns() - t0
        assert decision is not None
        return decision, source


def make_policy(
    name: str,
    *,
    solver: str = "auto",
    time_limit: float | None = 1.0,
    fallback: str = "three-stage",
) -> Policy:
    """``exact`` (or ``exact:SOLVER``), or a registered heuristic name with optional keyword
    parameters in brackets: ``sarathi[chunk_size=512]``, ``three-stage[full_scan=true]``."""
    head, params = parse_policy_spec(name)
    kind, _, rest = head.partition(":")
    if kind == HORIZON:
        return _horizon_policy(rest, params, time_limit, fallback, name)
    if kind == EXACT:
        if params:
            raise InputError("policy", "the exact policy takes no [parameters]", name)
        return ExactPolicy(rest or solver, time_limit, fallback)
    params = coerce_params(get_heuristic(head), params, "policy")
    pol = HeuristicPolicy(head, params)
    if params:
        pol.name = f"{head}[{','.join(f'{k}={v}' for k, v in params.items())}]"
    return pol


def _horizon_policy(
    steps: str, params: dict[str, str], time_limit: float | None, fallback: str, spec: str
) -> Policy:
    """``horizon[:K][ttft_ms=..,tbt_ms=..]``: a K-step window solved every step."""
    from stepopt.horizon.policy import HorizonPolicy

    unknown = set(params) - {"ttft_ms", "tbt_ms"}
    if unknown:
        raise InputError("policy", f"horizon takes ttft_ms and tbt_ms, not {sorted(unknown)}", spec)
    try:
        k = int(steps) if steps else 4
        slo = {key: float(v) for key, v in params.items()}
    except ValueError:
        raise InputError("policy", "expected horizon[:K][ttft_ms=X,tbt_ms=Y]", spec) from None
    return HorizonPolicy(k, time_limit=time_limit, fallback=fallback, **slo)


def parse_policy_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME[k=v,k=v]`` -> (NAME, {k: v}) with the values as text (typed by
    :func:`stepopt.heuristics.base.coerce_params`)."""
    text = spec.strip()
    if "[" not in text:
        if "]" in text or not text:
            raise InputError("policy", "expected NAME or NAME[key=value,...]", spec)
        return text, {}
    head, _, rest = text.partition("[")
    if not rest.endswith("]") or "[" in rest[:-1] or "]" in rest[:-1] or not head.strip():
        raise InputError("policy", "expected NAME or NAME[key=value,...]", spec)
    params: dict[str, str] = {}
    for item in rest[:-1].split(","):
        if not item.strip():
            continue
        key, eq, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise InputError("policy", "expected key=value inside [...]", item)
        params[key] = raw.strip()
    return head.strip(), params


def split_policies(text: str) -> list[str]:
    """Split ``a,b[k=1,j=2],c`` on the commas outside brackets."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        depth += (ch == "[") - (ch == "]")
        cur.append(ch)
    out.append("".join(cur).strip())
    return [p for p in out if p]
