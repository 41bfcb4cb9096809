"""The simulator's step problem: built from the engine's queues each step, and in validate
mode the judge of the policy's decision.

A mixin of :class:`stepopt.simulate.engine._Engine` (its attributes live there). The problem
reuses each running request's immutable :class:`Request` until its computed tokens change,
and the waiting queue's tuple as kept in admission order (so ``waiting_order`` is not sorted
again).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

from stepopt.evaluate import HARD_RULES, evaluate
from stepopt.model import Decision, Request, StepProblem, make_request


class StepProblems:
    __slots__ = ()

    def _problem(self) -> tuple[StepProblem, float]:
        """The step problem of the queues (and its target, ms)."""
        run_reqs = []
        inline = not make_request.rest  # type: ignore[attr-defined]
        set_id, set_prompt, set_computed, set_prio, set_arrival, set_output = make_request.setters  # type: ignore[attr-defined]
        new = object.__new__
        for s in self.running:
            r = s.req
            if r is None:
                if inline:  # make_request's own setters: this runs for every running request
                    r = s.req = new(Request)
                    set_id(r, s.id)
                    set_prompt(r, s.target)
                    set_computed(r, s.computed)
                    set_prio(r, s.priority)
                    set_arrival(r, s.arrival_s)
                    set_output(r, s.output)
                else:  # Request has more fields: the factory gives them their defaults
                    r = s.req = make_request(
                        s.id, s.target, s.computed, s.priority, s.arrival_s, s.output
                    )
            run_reqs.append(r)
        waiting_tuple = self.waiting_tuple
        target_ms = self.target(len(waiting_tuple), len(run_reqs))
        if self.kv_on and self.step_cfg.num_free_blocks != self.free:
            self.step_cfg = self._cfg_with_free()
        cfg = self.cfg
        problem = StepProblem(
            tuple(run_reqs),
            waiting_tuple,
            self.step_cfg,
            self.latency,
            target_ms,
            cfg.objective,
            cfg.priority_mode,
        )
        problem.__dict__["waiting_order"] = waiting_tuple  # already in that order
        if self.snapshots is not None:
            self.snapshots.maybe_capture(self.step, self.t, problem, self.policy.name)
        return problem, target_ms

    def _judge(
        self, problem: StepProblem, tokens: dict[str, int], gone: Any, target_ms: float
    ) -> Any:
        """Validate mode: the evaluation of the decision against the problem the policy's
        preemptions (already applied) leave; a hard rule the policy is held to and broke is a
        :class:`SimulationError`."""
        cfg = self.cfg
        vproblem = problem
        if gone:
            vproblem = StepProblem(
                tuple(r for r in problem.running if r.id not in gone),
                self.waiting_tuple,  # the preempted are waiting again
                self.base_cfg if not self.kv_on else self._cfg_with_free(),
                self.latency,
                target_ms,
                cfg.objective,
                cfg.priority_mode,
            )
        _check_order(vproblem, self._fail)
        ev = evaluate(vproblem, Decision(tokens=dict(tokens)))
        exempt = self.policy.exempt
        for v in ev.violations:
            if v.rule in HARD_RULES and v.rule not in exempt:
                raise self._fail(str(v.rule), v.message)
        return ev


def _check_order(problem: StepProblem, fail: Callable[[str, str], Exception]) -> None:
    """The simulator's waiting queue must be in the problem's waiting order (a bug otherwise)."""
    keys = [(r.priority, r.arrival_time, r.id) for r in problem.waiting]
    if any(a > b for a, b in pairwise(keys)):
        raise AssertionError("simulator waiting queue is out of (priority, arrival, id) order")
