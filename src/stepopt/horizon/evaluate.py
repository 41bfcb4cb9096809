"""The window judge: replays a plan step by step, each step judged by the step evaluator.

A :class:`WindowState` carries the engine state between steps exactly as the simulator does
(arrivals visible at the step's start time, prefill progress, one emission when the prompt
completes and one per decode, finished requests free their slot and KV blocks). Each step's
:class:`~stepopt.model.StepProblem` is built from that state and the step's decision is judged
by :func:`stepopt.evaluate.evaluate`; its latency is the evaluator's. An empty batch waits for
the next arrival (the simulator's idle jump) and still counts as a step of the window.
Per-request TTFT/TBT come from the simulator's metric code (:mod:`stepopt.simulate.metrics`).
"""

from __future__ import annotations

import itertools
from array import array
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from stepopt.evaluate import HARD_RULES, evaluate
from stepopt.horizon.problem import NS_PER_MS, WindowProblem, WindowRequest
from stepopt.model import Decision, EngineConfig, StepProblem

Plan = list[dict[str, int]]  # tokens per request id, one mapping per step


class _Slot:
    __slots__ = ("admitted", "computed", "emitted", "finished", "first", "last", "req", "times")

    def __init__(self, r: WindowRequest):
        self.req = r
        self.computed = r.computed_tokens
        self.emitted = r.emitted_tokens
        self.admitted = r.running
        self.finished = r.emitted_tokens >= r.output_tokens
        self.first = r.first_token_ns
        self.last = r.last_token_ns
        self.times: list[int] = []


class WindowState:
    """The engine state inside a window; :meth:`problem` and :meth:`apply` advance it."""

    def __init__(self, window: WindowProblem):
        self.window = window
        self.t = window.start_ns
        self.slots = [_Slot(r) for r in window.requests]
        self.order = [s for s in self.slots if s.req.running]  # admission order
        self.arrivals = sorted(r.arrival_ns for r in window.requests)
        self.busy_ns = 0
        self.tokens = 0

    def problem(self, target_ms: float = 1.0, objective: str = "target") -> StepProblem:
        """The step problem at the current time (running in admission order, the waiting
        queue in admission order). A plan's steps have no target (only the hard rules are
        judged); a policy replay passes the target its policy works to."""
        w = self.window
        running = [s.req for s in self.order if not s.finished]
        waiting = [
            s.req
            for s in self.slots
            if not s.admitted and not s.finished and s.req.arrival_ns <= self.t
        ]
        cfg = w.config
        if w.kv_total is not None:
            bs = cfg.block_size
            held = sum(-(-s.computed // bs) for s in self.order if not s.finished)
            cfg = EngineConfig(
                cfg.max_num_scheduled_tokens,
                cfg.max_num_running_reqs,
                cfg.long_prefill_token_threshold,
                cfg.min_prefill_chunk,
                bs,
                w.kv_total - held,
            )
        by_id = {s.req.id: s for s in self.slots}
        return StepProblem(
            tuple(_request(by_id[r.id]) for r in running),
            tuple(_request(by_id[r.id]) for r in waiting),
            cfg,
            w.latency,
            target_ms,
            objective,  # type: ignore[arg-type]
            w.priority_mode,
        )

    def apply(
        self, problem: StepProblem, tokens: dict[str, int], exempt: frozenset = frozenset()
    ) -> tuple[int, list[str]]:
        """Judge and apply one step; returns (latency ns, hard-rule violation messages).
        ``exempt``: rules a replayed policy is not held to (the vLLM replays')."""
        ev = evaluate(problem, Decision.of(tokens))
        bad = [
            f"{v.rule}: {v.message}"
            for v in ev.violations
            if v.rule in HARD_RULES and v.rule not in exempt
        ]
        if bad:
            return 0, bad
        sched = {k: v for k, v in tokens.items() if v > 0}
        if not sched:
            later = [a for a in self.arrivals if a > self.t]
            if later:
                self.t = later[0]
            return 0, []
        self.t += ev.latency_ns
        self.busy_ns += ev.latency_ns
        by_id = {s.req.id: s for s in self.slots}
        for rid, n in sched.items():
            s = by_id[rid]
            if not s.admitted:
                s.admitted = True
                self.order.append(s)
            s.computed += n
            self.tokens += n
            if s.computed >= s.req.prompt_tokens:
                s.emitted += 1
                s.times.append(self.t)
                if s.first is None:
                    s.first = self.t
                s.last = self.t
                if s.emitted >= s.req.output_tokens:
                    s.finished = True
        return ev.latency_ns, []


def _request(s: _Slot):
    r = s.req
    if s.computed == r.computed_tokens:
        return r.as_request()
    from stepopt.model import Request

    return Request(
        r.id, r.prompt_tokens, s.computed, r.priority, r.arrival_ns / 1e9, r.output_tokens
    )


@dataclass
class WindowEvaluation:
    """What a plan does to a window: feasibility, SLOs met, tokens, busy time, metrics."""

    feasible: bool
    violations: list[str]
    met: dict[str, bool]
    met_count: int
    met_weighted: int
    tokens: int
    busy_ns: int
    end_ns: int
    step_latency_ns: list[int]
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, int, int]:
        """The lexicographic objective as one sortable key (larger is better)."""
        return (self.met_weighted, self.tokens, -self.busy_ns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feasible": self.feasible,
            "violations": self.violations,
            "slo_met": self.met_count,
            "slo_met_weighted": self.met_weighted,
            "tokens": self.tokens,
            "busy_ms": self.busy_ns / NS_PER_MS,
            "end_ns": self.end_ns,
            "step_latency_ms": [x / NS_PER_MS for x in self.step_latency_ns],
            "metrics": self.metrics,
            "requests": self.requests,
        }


def evaluate_window(window: WindowProblem, plan: Plan) -> WindowEvaluation:
    """Judge ``plan`` (exactly ``window.steps`` steps) and measure its SLOs."""
    st = WindowState(window)
    violations: list[str] = []
    lats: list[int] = []
    if len(plan) != window.steps:
        violations.append(f"plan: {len(plan)} steps, the window has {window.steps}")
    for k, tokens in enumerate(plan[: window.steps], start=1):
        lat, bad = st.apply(st.problem(), dict(tokens))
        if bad:
            violations.extend(f"step {k}: {b}" for b in bad)
            break
        lats.append(lat)
    return judge(window, st, lats, violations)


def judge(
    window: WindowProblem, st: WindowState, lats: list[int], violations: list[str]
) -> WindowEvaluation:
    """SLOs, tokens and metrics of the state a replay ended in."""
    tbt = window.tbt_ns
    met: dict[str, bool] = {}
    per: dict[str, dict[str, Any]] = {}
    for s in st.slots:
        r = s.req
        ttft_ok = r.emitted_tokens > 0 or (
            s.first is not None and s.first - r.arrival_ns <= window.ttft_ns(r)
        )
        points = ([r.last_token_ns] if r.emitted_tokens > 0 else []) + s.times
        if points and not s.finished:
            points = [*points, st.t]  # the open gap: the next token comes no earlier
        gap = max((b - a for a, b in itertools.pairwise(points)), default=0)
        met[r.id] = bool(ttft_ok and gap <= tbt and points)
        per[r.id] = {"met": met[r.id], "finished": s.finished, "max_gap_ms": gap / NS_PER_MS}
    weights = window.slo_weight
    feasible = not violations
    return WindowEvaluation(
        feasible=feasible,
        violations=violations,
        met=met,
        met_count=sum(met.values()) if feasible else 0,
        met_weighted=sum(weights[k] for k, v in met.items() if v) if feasible else 0,
        tokens=st.tokens,
        busy_ns=st.busy_ns,
        end_ns=st.t,
        step_latency_ns=lats,
        requests=per,
        metrics=_metrics(st, met),
    )


def _metrics(st: WindowState, met: dict[str, bool]) -> dict[str, Any]:
    """TTFT and TBT percentiles through the simulator's own per-request metric code."""
    from stepopt.simulate.engine import FINISHED, RUNNING, WAITING
    from stepopt.simulate.metrics import PERCENTILES, request_columns

    fake = []
    for s in st.slots:
        r = s.req
        times = ([r.last_token_ns] if r.emitted_tokens > 0 else []) + s.times
        where = FINISHED if s.finished else (RUNNING if s.admitted else WAITING)
        fake.append(
            SimpleNamespace(
                id=r.id,
                arrival_ns=r.arrival_ns,
                first_ns=s.first if s.first is not None else -1,
                finish_ns=s.last if s.finished and s.last is not None else -1,
                where=where,
                times=array("q", times) if times else None,
                prompt=r.prompt_tokens,
                output=r.output_tokens,
                preemptions=0,
            )
        )
    cols = request_columns(SimpleNamespace(requests=fake))  # type: ignore[arg-type]
    out: dict[str, Any] = {
        "requests": len(fake),
        "slo_attainment": (sum(met.values()) / len(met)) if met else None,
    }
    for name, col in (("ttft", cols["ttft_ms"]), ("tbt_p99", cols["tbt_p99_ms"])):
        v = col[~np.isnan(col)]
        for q in PERCENTILES:
            out[f"{name}_p{q}_ms"] = float(np.percentile(v, q)) if len(v) else None
    return out
