"""The step-level serving simulator: replay a trace, one engine step at a time.

Each step builds the :class:`StepProblem` of the engine's queues, asks a policy for a
:class:`Decision`, advances the clock by the latency model's prediction and advances the
requests. docs/simulate.md describes the model of time, the request lifecycle and preemption.

The loop is the hot path (hundreds of thousands of steps for a one-hour trace): per-request
state lives in small mutable slot objects, the immutable :class:`Request` of a request is
rebuilt only when its computed tokens changed, the waiting queue is kept in admission order so
the problem's ``waiting_order`` need not be sorted again, and the step latency is computed
from the batch's aggregates with the model's own integer arithmetic (validate mode checks it
against :func:`stepopt.evaluate.evaluate`).

The loop is :class:`_Engine`, one method per step phase, over one state object (slots); the
cohesive groups of phases are its mixins: :mod:`.preemption` (KV room, the policy's
preemptions), :mod:`.step_problem` (building the step problem, judging the decision) and
:mod:`.result` (the run's result). The records (config, per-request state, result) live in
:mod:`stepopt.simulate.state`.
"""

from __future__ import annotations

import bisect
import time
from array import array
from collections.abc import Callable
from typing import Any

from stepopt.latency.model import LatencyModel
from stepopt.latency.step import step_latency
from stepopt.model import EngineConfig, Request, StepProblem
from stepopt.simulate.policies import Policy
from stepopt.simulate.preemption import Preemption, min_blocks_rule
from stepopt.simulate.result import Results
from stepopt.simulate.state import (  # re-exported: the simulator's public records
    FINISHED,
    PENDING,
    REJECTED,
    RUNNING,
    STATUS_NAMES,
    WAITING,
    SimConfig,
    SimResult,
    SimulationError,
    _key,
    _Req,
    _request,
)
from stepopt.simulate.step_problem import StepProblems
from stepopt.simulate.targets import TargetRule
from stepopt.simulate.trace import Trace

__all__ = [
    "FINISHED",
    "PENDING",
    "REJECTED",
    "RUNNING",
    "STATUS_NAMES",
    "WAITING",
    "SimConfig",
    "SimResult",
    "SimulationError",
    "simulate",
]


def simulate(
    trace: Trace,
    policy: Policy,
    latency: LatencyModel,
    target: TargetRule,
    config: SimConfig | None = None,
    *,
    snapshots: Any = None,
    progress: Callable[[int, int, int, int], None] | None = None,
    progress_every: int = 5000,
) -> SimResult:
    """Replay ``trace`` under ``policy``; deterministic for given inputs.

    ``snapshots`` (a :class:`stepopt.simulate.snapshots.SnapshotWriter`) captures sampled step
    problems; ``progress(step, finished, total, simulated_ns)`` is called every
    ``progress_every`` steps.
    """
    sim = _Engine(trace, policy, latency, target, config or SimConfig(), snapshots)
    return sim.run(progress, progress_every)


class _Engine(Preemption, StepProblems, Results):
    """One run's state; :meth:`run` loops the step phases (one method each).

    The phases read their hot attributes into locals once per step: attribute access in the
    per-request loops would cost more than the method calls do.
    """

    # slots: the phases read and write these every step
    __slots__ = (
        "arrivals",
        "attn",
        "base_cfg",
        "bs",
        "budget",
        "by_id",
        "cfg",
        "decisions",
        "free",
        "idle_jumps",
        "kv_on",
        "latency",
        "lo_bound",
        "max_run",
        "min_blocks",
        "min_chunk",
        "n_finished",
        "n_preemptions",
        "n_rejected",
        "n_total",
        "nxt",
        "policy",
        "preempted_log",
        "rows",
        "running",
        "seq",
        "snapshots",
        "states",
        "step",
        "step_cfg",
        "step_ns",
        "t",
        "tail",
        "target",
        "thr",
        "total_blocks",
        "trace",
        "waiting",
        "waiting_dirty",
        "waiting_tuple",
    )

    def __init__(
        self,
        trace: Trace,
        policy: Policy,
        latency: LatencyModel,
        target: TargetRule,
        cfg: SimConfig,
        snapshots: Any,
    ):
        self.trace, self.policy, self.latency, self.target = trace, policy, latency, target
        self.cfg, self.snapshots = cfg, snapshots
        eng = cfg.engine
        self.bs = eng.block_size
        self.budget = eng.max_num_scheduled_tokens
        self.max_run = eng.max_num_running_reqs
        self.thr = eng.long_prefill_token_threshold
        self.min_chunk = eng.min_prefill_chunk
        self.kv_on = cfg.kv_blocks is not None
        self.total_blocks = cfg.kv_blocks if self.kv_on else 0
        self.free = self.total_blocks
        self.base_cfg = EngineConfig(
            self.budget, self.max_run, self.thr, self.min_chunk, self.bs, None
        )
        self.step_cfg = self.base_cfg if not self.kv_on else self._cfg_with_free()
        # the most blocks a minimum share can need
        self.lo_bound = (self.min_chunk + self.bs - 1) // self.bs + 1
        self.min_blocks = min_blocks_rule(self.bs, self.thr, self.min_chunk)
        fast = step_latency(latency)
        self.attn, self.step_ns = fast.attention, fast.total

        self.arrivals = trace.arrivals_ns.tolist()
        ids, prompts = trace.ids, trace.prompt_tokens.tolist()
        outputs, prios = trace.output_tokens.tolist(), trace.priorities.tolist()
        self.states = [
            _Req(k, ids[k], self.arrivals[k], prompts[k], outputs[k], prios[k])
            for k in range(len(ids))
        ]
        self.by_id = {s.id: s for s in self.states}
        self.n_total = len(self.states)

        self.running: list[_Req] = []
        self.waiting: list[_Req] = []  # sorted by key: the problem's waiting_order
        # The problem's waiting tuple follows ``waiting`` with C-level tuple operations (arrivals
        # appended, admitted prefixes sliced off): an overloaded engine has thousands waiting.
        self.waiting_tuple: tuple[Request, ...] = ()
        self.waiting_dirty = False  # True: rebuild waiting_tuple from waiting
        self.tail: list[Request] = []  # arrivals not yet in waiting_tuple
        self.rows: list[tuple[Any, ...]] = []  # one per step, columns as _STEP_COLUMNS
        self.decisions: list[dict[str, int]] | None = [] if cfg.record_decisions else None
        self.preempted_log: list[tuple[str, ...]] | None = [] if cfg.record_decisions else None

        self.t = self.arrivals[0] if self.arrivals else 0
        self.nxt = 0  # next arrival
        self.step = self.seq = 0
        self.n_finished = self.n_rejected = self.n_preemptions = self.idle_jumps = 0

    def _cfg_with_free(self) -> EngineConfig:
        return EngineConfig(self.budget, self.max_run, self.thr, self.min_chunk, self.bs, self.free)

    def _fail(self, rule: str, message: str) -> SimulationError:
        return SimulationError(self.step, self.t, self.policy.name, rule, message)

    def run(
        self, progress: Callable[[int, int, int, int], None] | None, progress_every: int
    ) -> SimResult:
        """The step loop: arrivals, room, problem, decide, apply, finish, record."""
        max_steps = self.cfg.max_steps
        n_total, arrivals = self.n_total, self.arrivals
        kv_on, validate = self.kv_on, self.cfg.validate
        kv_room = kv_on and not self.policy.preempts
        add_row, record = self.rows.append, self.decisions
        wall0, cpu0 = time.perf_counter(), time.process_time()
        while True:
            self._arrive()
            if not self.running and not self.waiting:
                if self.nxt >= n_total:
                    break
                self.t = arrivals[self.nxt]
                self.idle_jumps += 1
                continue
            if max_steps is not None and self.step >= max_steps:
                break
            if kv_room and self.running and self.free < len(self.running) * self.lo_bound:
                self._make_room()
            problem, target_ms = self._problem()
            free_before = self.free
            t0 = time.perf_counter_ns()
            decision, source = self.policy.decide(problem)
            decide_ns = time.perf_counter_ns() - t0
            tokens, gone = decision.tokens, decision.preempted
            if gone:
                self._policy_preemptions(tokens, gone)
            ev = self._judge(problem, tokens, gone, target_ms) if validate else None
            total, batch, ctx, att, pre_tok, admitted, emitters = self._apply(tokens)
            if batch == 0:
                if gone:
                    continue  # the policy only preempted: the state changed, decide again
                if self.nxt < n_total:
                    self.t = max(self.t, arrivals[self.nxt])  # nothing to do until then
                    self.idle_jumps += 1
                    continue
                raise self._stalled(problem, target_ms)
            lat = self.step_ns(total, batch, ctx, att)
            if ev is not None and lat != ev.latency_ns:
                raise AssertionError(
                    f"step {self.step}: latency {lat} != evaluator {ev.latency_ns}"
                )
            end = self.t + lat
            finished_now = self._finish(emitters, end, admitted)
            # fmt: off
            add_row((  # one row per step, in _STEP_COLUMNS order
                self.step, self.t, lat, target_ms, len(problem.running), len(problem.waiting),
                batch, total, pre_tok, total - pre_tok, admitted, len(gone), finished_now,
                free_before if kv_on else None, source, decide_ns // 1000,
            ))
            # fmt: on
            if record is not None:
                record.append({k: v for k, v in tokens.items() if v})
                self.preempted_log.append(tuple(gone))  # type: ignore[union-attr]
            self.t = end
            self.step += 1
            if progress is not None and self.step % progress_every == 0:
                progress(self.step, self.n_finished, n_total, self.t)
        return self._result(time.perf_counter() - wall0, time.process_time() - cpu0)

    def _stalled(self, problem: StepProblem, target_ms: float) -> SimulationError:
        return self._fail(
            "progress",
            f"nothing scheduled with {len(problem.running)} running and "
            f"{len(problem.waiting)} waiting requests and no arrivals left (target "
            f"{target_ms:g} ms; is it below the cheapest step?)",
        )

    def _arrive(self) -> None:
        """Move the arrivals up to now into the waiting queue (or reject what can never fit)."""
        arrivals, states, n_total, t = self.arrivals, self.states, self.n_total, self.t
        nxt = self.nxt
        if nxt < n_total and arrivals[nxt] <= t:
            waiting, tail = self.waiting, self.tail
            kv_on, bs, total_blocks = self.kv_on, self.bs, self.total_blocks
            while nxt < n_total and arrivals[nxt] <= t:
                s = states[nxt]
                nxt += 1
                if kv_on and (s.prompt + s.output - 1 + bs - 1) // bs > total_blocks:
                    s.where = REJECTED  # its KV cache could never fit, even alone
                    self.n_rejected += 1
                    continue
                s.where = WAITING
                s.req = _request(s)
                if not waiting or waiting[-1].key <= s.key:
                    waiting.append(s)
                    tail.append(s.req)
                else:
                    bisect.insort(waiting, s, key=_key)
                    self.waiting_dirty = True
            self.nxt = nxt
        if self.waiting_dirty:
            self.waiting_tuple = tuple([s.req for s in self.waiting])  # type: ignore[misc]
            self.waiting_dirty = False
            self.tail.clear()
        elif self.tail:
            self.waiting_tuple += tuple(self.tail)
            self.tail.clear()

    def _apply(self, tokens: dict[str, int]) -> tuple[int, int, int, int, int, int, list[_Req]]:
        """Advance every scheduled request; check the physical rules. Returns the batch's
        aggregates (tokens, size, decode context, attention term, prefill tokens, admitted)
        and the requests that emit a token at the end of the step."""
        by_id, attn, kv_on, bs = self.by_id, self.attn, self.kv_on, self.bs
        fail = self._fail
        free_before = free = self.free
        seq = self.seq
        total = batch = ctx = att = pre_tok = admitted = 0
        emitters = []
        for rid, n in tokens.items():
            if n <= 0:
                if n == 0:
                    continue
                raise fail("negative_tokens", f"{rid}={n}")
            s = by_id.get(rid)
            if s is None:
                raise fail("unknown_request", f"{rid!r} is not waiting or running")
            if s.where != RUNNING:
                if s.where != WAITING:
                    raise fail("unknown_request", f"{rid!r} is not waiting or running")
                s.where = RUNNING
                s.seq = seq
                seq += 1
                admitted += 1
            c = s.computed
            if c >= s.target:
                if n != 1:
                    raise fail("phase", f"{rid}: {n} tokens for a decode (1 allowed)")
                ctx += c
                c += 1
                emitters.append(s)
            else:
                rem = s.target - c
                if n > rem:
                    raise fail("phase", f"{rid}: {n} tokens, {rem} prompt tokens left")
                att += attn(n, c, rem)
                pre_tok += n
                c += n
                if c == s.target:
                    emitters.append(s)
            s.computed = c
            s.req = None
            total += n
            batch += 1
            if kv_on:
                nb = (c + bs - 1) // bs
                free -= nb - s.blocks
                s.blocks = nb
        self.free, self.seq = free, seq
        if total > self.budget:
            raise fail(
                "budget", f"{total} tokens scheduled, max_num_scheduled_tokens={self.budget}"
            )
        if len(self.running) + admitted > self.max_run:
            raise fail(
                "concurrency",
                f"{len(self.running)} running + {admitted} admitted > "
                f"max_num_running_reqs={self.max_run}",
            )
        if kv_on and free < 0:
            raise fail("kv_capacity", f"{free_before - free} new blocks, {free_before} free")
        return total, batch, ctx, att, pre_tok, admitted, emitters

    def _finish(self, emitters: list[_Req], end: int, admitted: int) -> int:
        """Emit the step's tokens at ``end``, retire the finished, move the admitted to running.
        Returns how many finished."""
        finished_now = 0
        for s in emitters:
            s.emitted += 1
            ts = s.times
            if ts is None:
                ts = s.times = array("q")
                s.first_ns = end
            ts.append(end)
            if s.emitted >= s.output:
                s.where = FINISHED
                s.finish_ns = end
                self.free += s.blocks
                s.blocks = 0
                finished_now += 1
        if finished_now:
            self.running = [s for s in self.running if s.where == RUNNING]
        if admitted:
            waiting = self.waiting
            if all(s.where != WAITING for s in waiting[:admitted]):
                # The usual case: a prefix of the waiting order was admitted.
                self.running.extend(s for s in waiting[:admitted] if s.where == RUNNING)
                del waiting[:admitted]
                if not self.waiting_dirty:
                    self.waiting_tuple = self.waiting_tuple[admitted:]
            else:
                self.running.extend(s for s in waiting if s.where == RUNNING)
                self.waiting = [s for s in waiting if s.where == WAITING]
                self.waiting_dirty = True
        self.n_finished += finished_now
        return finished_now
