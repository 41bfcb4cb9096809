"""The receding-horizon policy ``horizon[:K]``: each step, solve a K-step window of the
requests present and apply its first step; the fallback heuristic decides when the solver
gives nothing usable.

A step problem has no clock and no token times, so the policy keeps them: the simulator
runs the policy every step, the step ends ``L(decision)`` after it starts, and after an idle
step the clock jumps to the newest arrival (so ``now`` is the later of the two). Emission
times and counts are recorded from its own decisions.
"""

from __future__ import annotations

import time
from typing import Any

from stepopt.errors import InputError
from stepopt.evaluate import HARD_RULES, evaluate
from stepopt.model import Decision, StepProblem
from stepopt.simulate.policies import HeuristicPolicy, Policy

NS_PER_S = 1_000_000_000


class HorizonPolicy(Policy):
    def __init__(
        self,
        steps: int = 4,
        ttft_ms: float = 1000.0,
        tbt_ms: float = 100.0,
        time_limit: float | None = 1.0,
        fallback: str = "three-stage",
    ) -> None:
        super().__init__()
        if not 1 <= steps <= 64:
            raise InputError("horizon steps", "must be in 1..64", steps)
        for name, v in (("ttft_ms", ttft_ms), ("tbt_ms", tbt_ms)):
            if not v > 0:
                raise InputError(name, "must be > 0", v)
        self.name = f"horizon:{steps}"
        self.steps, self.ttft_ms, self.tbt_ms, self.time_limit = steps, ttft_ms, tbt_ms, time_limit
        self.fallback = HeuristicPolicy(fallback)
        self.now = 0
        self.end = 0
        self.emitted: dict[str, int] = {}
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}

    def start_at(self, window: Any) -> None:
        """Replaying a window: its start time and the token history of its requests."""
        self.end = window.start_ns
        for r in window.requests:
            if r.emitted_tokens:
                self.emitted[r.id] = r.emitted_tokens
                self.first[r.id] = r.first_token_ns
                self.last[r.id] = r.last_token_ns

    def decide(self, problem: StepProblem) -> tuple[Decision, str]:
        t0 = time.perf_counter_ns()
        newest = max((round(r.arrival_time * NS_PER_S) for r in problem.requests), default=0)
        self.now = max(self.end, newest)
        decision, source = self._solve(problem)
        tokens = decision.scheduled()
        self.end = self.now + (problem.latency.predict_ns(problem, tokens) if tokens else 0)
        by_id = problem.by_id
        for rid, c in tokens.items():
            r = by_id[rid]
            if r.computed_tokens + c >= r.prompt_tokens:
                self.emitted[rid] = self.emitted.get(rid, 0) + 1
                self.first.setdefault(rid, self.end)
                self.last[rid] = self.end
        self.stats.decisions += 1
        self.stats.decide_ns += time.perf_counter_ns() - t0
        return decision, source

    def _solve(self, problem: StepProblem) -> tuple[Decision, str]:
        from stepopt.horizon.solve import solve_window

        st = self.stats
        try:
            res = solve_window(self.window(problem), self.time_limit)
            st.statuses[res.status] += 1
            plan = res.plan
        except InputError:
            raise
        except Exception:  # the fallback decides; the status says what happened
            st.statuses["ERROR"] += 1
            plan = None
        if plan and plan[0]:
            d = Decision.of(plan[0])
            if not any(v.rule in HARD_RULES for v in evaluate(problem, d).violations):
                return d, "horizon"
        st.fallbacks += 1
        d, _ = self.fallback.decide(problem)
        return d, "fallback"

    def window(self, problem: StepProblem) -> Any:
        """The K-step window of the requests present (no arrivals: they are not known yet)."""
        from stepopt.horizon.problem import Slo, WindowProblem, WindowRequest
        from stepopt.horizon.windows import without_prefill_attention

        reqs = []
        for r in problem.requests:
            running = r.id not in problem.waiting_ids
            emitted = self.emitted.get(r.id, 0)
            if r.is_decode and emitted == 0:
                emitted = r.computed_tokens - r.prompt_tokens + 1
            out = r.output_tokens if r.output_tokens else emitted + self.steps + 1
            out = max(out, emitted + 1)
            arrival = min(round(r.arrival_time * NS_PER_S), self.now)
            last = self.last.get(r.id, self.now) if emitted else None
            first = self.first.get(r.id, last) if emitted else None
            reqs.append(
                WindowRequest(
                    r.id,
                    r.prompt_tokens,
                    out,
                    arrival,
                    r.computed_tokens if running else 0,
                    emitted if running else 0,
                    r.priority,
                    None,
                    first if running else None,
                    last if running else None,
                    running,
                )
            )
        return WindowProblem(
            start_ns=self.now,
            requests=tuple(reqs),
            config=problem.config,
            latency=without_prefill_attention(problem.latency),
            slo=Slo(self.ttft_ms, self.tbt_ms),
            steps=self.steps,
            priority_mode=problem.priority_mode,
        )
