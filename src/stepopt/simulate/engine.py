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
"""

from __future__ import annotations

import bisect
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from stepopt.errors import InputError, StepoptError
from stepopt.evaluate import HARD_RULES, evaluate
from stepopt.latency.model import LatencyModel
from stepopt.latency.step import step_latency
from stepopt.limits import MAX_BLOCKS, MAX_REQUESTS, MAX_TOKENS, check_int
from stepopt.model import (
    OBJECTIVES,
    PRIORITY_MODES,
    Decision,
    EngineConfig,
    Objective,
    PriorityMode,
    Request,
    StepProblem,
    make_request,
)
from stepopt.simulate.policies import Policy
from stepopt.simulate.targets import TargetRule
from stepopt.simulate.trace import NS_PER_S, Trace

PENDING, WAITING, RUNNING, FINISHED, REJECTED = range(5)
STATUS_NAMES = ("pending", "waiting", "running", "finished", "rejected")


class SimulationError(StepoptError):
    """A policy's decision broke a rule (or made no progress): names the step and the rule."""

    def __init__(self, step: int, t_ns: int, policy: str, rule: str, message: str):
        self.step, self.rule = step, rule
        super().__init__(
            f"step {step} (t={t_ns / NS_PER_S:.6f} s), policy {policy!r}: rule {rule}: {message}"
        )


@dataclass(frozen=True)
class SimConfig:
    """Engine limits and simulator switches.

    ``kv_blocks`` is the engine's total KV cache in blocks of ``engine.block_size`` tokens
    (None: unlimited, no preemption); ``engine.num_free_blocks`` is ignored, each step's
    problem gets the blocks left. ``validate`` judges every decision with the evaluator's
    hard rules (the physical checks — unknown ids, token counts, budget, concurrency, KV — run
    always). ``record_decisions`` keeps every step's decision for the plan file.
    """

    engine: EngineConfig = field(default_factory=EngineConfig)
    kv_blocks: int | None = None
    objective: Objective = "target"
    priority_mode: PriorityMode = "strict"
    validate: bool = True
    record_decisions: bool = False
    max_steps: int | None = None

    def __post_init__(self) -> None:
        e = self.engine
        for name, lo, hi in (
            ("max_num_scheduled_tokens", 1, MAX_TOKENS),
            ("max_num_running_reqs", 1, MAX_REQUESTS),
            ("long_prefill_token_threshold", 0, MAX_TOKENS),
            ("min_prefill_chunk", 1, MAX_TOKENS),
            ("block_size", 1, MAX_TOKENS),
        ):
            check_int(getattr(e, name), name, lo, hi)
        if self.kv_blocks is not None:
            check_int(self.kv_blocks, "kv_blocks", 1, MAX_BLOCKS)
        if self.objective not in OBJECTIVES:
            raise InputError("objective", f"must be one of {', '.join(OBJECTIVES)}", self.objective)
        if self.priority_mode not in PRIORITY_MODES:
            raise InputError(
                "priority_mode", f"must be one of {', '.join(PRIORITY_MODES)}", self.priority_mode
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError("max_steps", "must be >= 1", self.max_steps)


class _Req:
    """Mutable per-request state (the simulator's own; policies see :class:`Request`)."""

    __slots__ = (
        "arrival_ns",
        "arrival_s",
        "blocks",
        "computed",
        "emitted",
        "finish_ns",
        "first_ns",
        "id",
        "idx",
        "key",
        "output",
        "preemptions",
        "priority",
        "prompt",
        "req",
        "seq",
        "target",
        "times",
        "where",
    )

    def __init__(self, idx: int, rid: str, arrival_ns: int, prompt: int, output: int, prio: int):
        self.idx = idx
        self.id = rid
        self.arrival_ns = arrival_ns
        self.arrival_s = arrival_ns / NS_PER_S
        self.prompt = prompt
        self.output = output
        self.priority = prio
        self.target = prompt  # prompt tokens to (re)compute: prompt + emitted after preemption
        self.computed = 0
        self.emitted = 0
        self.blocks = 0
        self.where = PENDING
        self.req: Request | None = None
        self.seq = -1  # admission sequence number (preemption victims: the latest admitted)
        self.key = (prio, arrival_ns, idx)  # == (priority, arrival_time, id) order
        self.times: array | None = None  # emission time of every output token, ns
        self.first_ns = -1
        self.finish_ns = -1
        self.preemptions = 0


def _request(s: _Req) -> Request:
    return make_request(s.id, s.target, s.computed, s.priority, s.arrival_s, s.output)


@dataclass
class SimResult:
    """What a run produced: per-step columns, per-request state, counters."""

    policy: str
    target_rule: str
    source: str
    preset: str
    config: SimConfig
    steps: dict[str, list[Any]]
    requests: list[_Req]
    stats: dict[str, Any]
    decisions: list[dict[str, int]] | None = None
    preempted: list[tuple[str, ...]] | None = None

    @property
    def num_steps(self) -> int:
        return len(self.steps["step"])


_STEP_COLUMNS = (
    "step",
    "time_ns",
    "latency_ns",
    "target_ms",
    "n_running",
    "n_waiting",
    "batch_size",
    "scheduled_tokens",
    "prefill_tokens",
    "decode_tokens",
    "n_admitted",
    "n_preempted",
    "n_finished",
    "free_blocks",
    "source",
    "decide_us",
)


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
    cfg = config or SimConfig()
    eng = cfg.engine
    bs = eng.block_size
    budget = eng.max_num_scheduled_tokens
    max_run = eng.max_num_running_reqs
    thr = eng.long_prefill_token_threshold
    min_chunk = eng.min_prefill_chunk
    kv_on = cfg.kv_blocks is not None
    total_blocks = cfg.kv_blocks if kv_on else 0
    free = total_blocks
    base_cfg = EngineConfig(budget, max_run, thr, min_chunk, bs, None)
    objective, pmode = cfg.objective, cfg.priority_mode
    validate = cfg.validate
    record = cfg.record_decisions
    max_steps = cfg.max_steps
    self_preempting = policy.preempts
    exempt = policy.exempt
    decide = policy.decide
    pname = policy.name

    fast = step_latency(latency)
    attn, step_ns = fast.attention, fast.total
    make = make_request
    inline = not make_request.rest  # type: ignore[attr-defined]
    set_id, set_prompt, set_computed, set_prio, set_arrival, set_output = make_request.setters  # type: ignore[attr-defined]
    new = object.__new__

    ids = trace.ids
    arrivals = trace.arrivals_ns.tolist()
    prompts = trace.prompt_tokens.tolist()
    outputs = trace.output_tokens.tolist()
    prios = trace.priorities.tolist()
    states = [
        _Req(k, ids[k], arrivals[k], prompts[k], outputs[k], prios[k]) for k in range(len(ids))
    ]
    by_id = {s.id: s for s in states}
    n_total = len(states)

    running: list[_Req] = []
    waiting: list[_Req] = []  # sorted by key: the problem's waiting_order
    # The problem's waiting tuple follows ``waiting`` with C-level tuple operations (arrivals
    # appended, admitted prefixes sliced off): an overloaded engine has thousands waiting.
    waiting_tuple: tuple[Request, ...] = ()
    waiting_dirty = False  # True: rebuild waiting_tuple from waiting
    tail: list[Request] = []  # arrivals not yet in waiting_tuple
    cols: dict[str, list[Any]] = {c: [] for c in _STEP_COLUMNS}
    (
        c_step,
        c_time,
        c_lat,
        c_target,
        c_run,
        c_wait,
        c_batch,
        c_tok,
        c_pre,
        c_dec,
        c_adm,
        c_preempt,
        c_fin,
        c_free,
        c_src,
        c_us,
    ) = (cols[c].append for c in _STEP_COLUMNS)
    decisions: list[dict[str, int]] | None = [] if record else None
    preempted_log: list[tuple[str, ...]] | None = [] if record else None

    t = arrivals[0] if arrivals else 0
    nxt = 0  # next arrival
    step = 0
    seq = 0
    n_finished = n_rejected = n_preemptions = idle_jumps = 0
    wall0 = time.perf_counter()
    cpu0 = time.process_time()

    def fail(rule: str, message: str) -> SimulationError:
        return SimulationError(step, t, pname, rule, message)

    def preempt(s: _Req) -> None:
        # vLLM's recompute preemption: free every block, forget the KV cache, back to waiting
        # (its (priority, arrival) key puts it ahead of later arrivals, as vLLM's appendleft).
        nonlocal free, n_preemptions, waiting_tuple
        free += s.blocks
        s.blocks = 0
        s.computed = 0
        s.target = s.prompt + s.emitted
        s.where = WAITING
        s.preemptions += 1
        r = s.req = _request(s)
        n_preemptions += 1
        running.remove(s)
        k = bisect.bisect_right(waiting, s.key, key=_key)
        waiting.insert(k, s)
        if not waiting_dirty:
            waiting_tuple = (*waiting_tuple[:k], r, *waiting_tuple[k:])

    def min_blocks(s: _Req) -> int:
        c = s.computed
        if c >= s.target:
            return 1 if c % bs == 0 else 0
        rem = s.target - c
        hi = rem if thr <= 0 or rem < thr else thr
        lo = min_chunk if min_chunk < hi else hi
        return (c + lo + bs - 1) // bs - (c + bs - 1) // bs

    lo_bound = (min_chunk + bs - 1) // bs + 1  # most blocks a minimum share can need
    step_cfg = base_cfg if not kv_on else EngineConfig(budget, max_run, thr, min_chunk, bs, free)

    while True:
        # ---- arrivals -------------------------------------------------------------------
        while nxt < n_total and arrivals[nxt] <= t:
            s = states[nxt]
            nxt += 1
            if kv_on and (s.prompt + s.output - 1 + bs - 1) // bs > total_blocks:
                s.where = REJECTED  # its KV cache could never fit, even alone
                n_rejected += 1
                continue
            s.where = WAITING
            s.req = _request(s)
            if not waiting or waiting[-1].key <= s.key:
                waiting.append(s)
                tail.append(s.req)
            else:
                bisect.insort(waiting, s, key=_key)
                waiting_dirty = True
        if waiting_dirty:
            waiting_tuple = tuple([s.req for s in waiting])  # type: ignore[misc]
            waiting_dirty = False
            tail.clear()
        elif tail:
            waiting_tuple += tuple(tail)
            tail.clear()
        if not running and not waiting:
            if nxt >= n_total:
                break
            t = arrivals[nxt]
            idle_jumps += 1
            continue
        if max_steps is not None and step >= max_steps:
            break

        # ---- KV: make room for every running request's minimum share -------------------
        if kv_on and running and not self_preempting and free < len(running) * lo_bound:
            need = 0
            for s in running:  # min_blocks(s), inlined for the decodes (most of them)
                c = s.computed
                if c >= s.target:
                    if c % bs == 0:
                        need += 1
                else:
                    need += min_blocks(s)
            needs = [min_blocks(s) for s in running] if need > free else []
            while need > free:
                k = max(range(len(running)), key=lambda i: (running[i].priority, running[i].seq))
                need -= needs.pop(k)
                preempt(running[k])

        # ---- the step problem -----------------------------------------------------------
        run_reqs = []
        for s in running:
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
                    r = s.req = make(s.id, s.target, s.computed, s.priority, s.arrival_s, s.output)
            run_reqs.append(r)
        n_run, n_wait = len(run_reqs), len(waiting_tuple)
        target_ms = target(n_wait, n_run)
        if kv_on and step_cfg.num_free_blocks != free:
            step_cfg = EngineConfig(budget, max_run, thr, min_chunk, bs, free)
        problem = StepProblem(
            tuple(run_reqs), waiting_tuple, step_cfg, latency, target_ms, objective, pmode
        )
        problem.__dict__["waiting_order"] = waiting_tuple  # already in that order
        if snapshots is not None:
            snapshots.maybe_capture(step, t, problem, pname)

        t0 = time.perf_counter_ns()
        decision, source = decide(problem)
        decide_ns = time.perf_counter_ns() - t0
        tokens = decision.tokens
        free_before = free

        # ---- preemptions the policy made ------------------------------------------------
        gone = decision.preempted
        if gone:
            for rid in gone:
                s = by_id.get(rid)
                if s is None or s.where != RUNNING:
                    raise fail("preemption", f"{rid!r} is preempted but not running")
                if tokens.get(rid, 0):
                    raise fail("preemption", f"{rid!r} is preempted and scheduled")
                preempt(s)
            if validate:
                vrun = tuple(r for r in run_reqs if r.id not in gone)
                vwait = waiting_tuple
                vcfg = (
                    base_cfg
                    if not kv_on
                    else EngineConfig(budget, max_run, thr, min_chunk, bs, free)
                )
                vproblem = StepProblem(vrun, vwait, vcfg, latency, target_ms, objective, pmode)
        elif validate:
            vproblem = problem

        if validate:
            _check_order(vproblem, fail)
            ev = evaluate(vproblem, Decision(tokens=dict(tokens)))
            for v in ev.violations:
                if v.rule in HARD_RULES and v.rule not in exempt:
                    raise fail(str(v.rule), v.message)

        # ---- apply the decision ---------------------------------------------------------
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
        if total > budget:
            raise fail("budget", f"{total} tokens scheduled, max_num_scheduled_tokens={budget}")
        if len(running) + admitted > max_run:
            raise fail(
                "concurrency",
                f"{len(running)} running + {admitted} admitted > max_num_running_reqs={max_run}",
            )
        if kv_on and free < 0:
            raise fail("kv_capacity", f"{free_before - free} new blocks, {free_before} free")

        if batch == 0:
            if gone:
                continue  # the policy only preempted: the state changed, decide again
            if nxt < n_total:
                t = max(t, arrivals[nxt])  # nothing to do until the next arrival
                idle_jumps += 1
                continue
            raise fail(
                "progress",
                f"nothing scheduled with {n_run} running and {n_wait} waiting requests and no "
                f"arrivals left (target {target_ms:g} ms; is it below the cheapest step?)",
            )

        lat = step_ns(total, batch, ctx, att)
        if validate and lat != ev.latency_ns:
            raise AssertionError(f"step {step}: latency {lat} != evaluator {ev.latency_ns}")
        end = t + lat

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
                free += s.blocks
                s.blocks = 0
                finished_now += 1
        if finished_now:
            running = [s for s in running if s.where == RUNNING]
        if admitted:
            if all(s.where != WAITING for s in waiting[:admitted]):
                # The usual case: a prefix of the waiting order was admitted.
                running.extend(s for s in waiting[:admitted] if s.where == RUNNING)
                del waiting[:admitted]
                if not waiting_dirty:
                    waiting_tuple = waiting_tuple[admitted:]
            else:
                running.extend(s for s in waiting if s.where == RUNNING)
                waiting = [s for s in waiting if s.where == WAITING]
                waiting_dirty = True
        n_finished += finished_now

        c_step(step)
        c_time(t)
        c_lat(lat)
        c_target(target_ms)
        c_run(n_run)
        c_wait(n_wait)
        c_batch(batch)
        c_tok(total)
        c_pre(pre_tok)
        c_dec(total - pre_tok)
        c_adm(admitted)
        c_preempt(len(gone))
        c_fin(finished_now)
        c_free(free_before if kv_on else None)
        c_src(source)
        c_us(decide_ns // 1000)
        if record:
            decisions.append({k: v for k, v in tokens.items() if v})  # type: ignore[union-attr]
            preempted_log.append(tuple(gone))  # type: ignore[union-attr]

        t = end
        step += 1
        if progress is not None and step % progress_every == 0:
            progress(step, n_finished, n_total, t)

    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    if snapshots is not None:
        snapshots.close()
    stats = {
        "steps": step,
        "wall_s": wall,
        "cpu_s": cpu,
        "steps_per_s": step / wall if wall > 0 else None,
        "requests": n_total,
        "finished": n_finished,
        "rejected": n_rejected,
        "unfinished": n_total - n_finished - n_rejected,
        "preemptions": n_preemptions,
        "idle_jumps": idle_jumps,
        "end_time_s": t / NS_PER_S,
        "policy": policy.stats.to_dict(),
    }
    return SimResult(
        policy=pname,
        target_rule=target.spec,
        source=trace.source,
        preset=latency.name,
        config=cfg,
        steps=cols,
        requests=states,
        stats=stats,
        decisions=decisions,
        preempted=preempted_log,
    )


def _key(s: _Req) -> tuple[int, int, int]:
    return s.key


def _check_order(problem: StepProblem, fail: Callable[[str, str], Exception]) -> None:
    """The simulator's waiting queue must be in the problem's waiting order (a bug otherwise)."""
    keys = [(r.priority, r.arrival_time, r.id) for r in problem.waiting]
    if any(a > b for a, b in pairwise(keys)):
        raise AssertionError("simulator waiting queue is out of (priority, arrival, id) order")
