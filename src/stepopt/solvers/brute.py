"""Exhaustive oracle for tiny problems, written independently of the formulation.

It enumerates every batch (subset of requests) that the subset-level rules allow
(concurrency, Decode > Prefill, Running > Waiting, waiting prefix), then every chunk size of
the prefills in it. Chunk sizes are enumerated request by request, merging partial decisions
with the same (tokens, prefill attention, KV blocks): they have the same latency and
feasibility, so only the one with the most weighted tokens can be optimal. Budget and KV
capacity prune as they are exceeded. Everything is computed with the latency model's own
functions, so the result is the evaluator's optimum by construction.
"""

from __future__ import annotations

import time
from typing import Any

from stepopt.diagnose import infeasibility_reason
from stepopt.errors import InputError
from stepopt.model import Decision, StepProblem
from stepopt.solvers.base import SolveResult, SolveStatus, finish, register_solver

MAX_REQUESTS = 12
MAX_STATES = 2_000_000


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class BruteSolver:
    name = "brute"

    def solve(
        self, problem: StepProblem, time_limit: float | None = None, **params: Any
    ) -> SolveResult:
        started = time.perf_counter()
        max_requests = int(params.get("max_requests", MAX_REQUESTS))
        max_states = int(params.get("max_states", MAX_STATES))
        n = len(problem.requests)
        if n > max_requests:
            raise InputError(
                "problem",
                f"{n} requests is too large for brute force (at most {max_requests}); "
                "use cpsat, cbc or highs",
                show_value=False,
            )
        best, lat, states = _search(problem, max_states)
        info = {"max_requests": max_requests, "states": states}
        if best is None:
            return finish(
                problem,
                "brute",
                SolveStatus.INFEASIBLE,
                None,
                started,
                time_limit=time_limit,
                params=info,
                message=infeasibility_reason(problem),
            )
        info["model_latency_ns"] = lat
        return finish(
            problem,
            "brute",
            SolveStatus.OPTIMAL,
            best,
            started,
            time_limit=time_limit,
            params=info,
        )


def _search(problem: StepProblem, max_states: int) -> tuple[Decision | None, int, int]:
    # long: the referee states every rule in one place, in its own words, independently of
    # constraints/ (docs/architecture.md): splitting it would spread the definition it is checked
    # as
    cfg = problem.config
    lat = problem.latency
    reqs = problem.requests
    weights = problem.weights
    bs = cfg.block_size
    kv_cap = cfg.num_free_blocks
    budget = cfg.max_num_scheduled_tokens
    n_run = len(problem.running)
    strict = problem.priority_mode == "strict"
    target = problem.target_ns
    goodput = problem.objective == "goodput"
    if n_run > cfg.max_num_running_reqs:
        return None, 0, 0  # even the empty batch breaks the concurrency limit

    def blocks(r, c: int) -> int:
        return _ceil_div(r.computed_tokens + c, bs) - _ceil_div(r.computed_tokens, bs)

    run_decodes = [k for k in range(n_run) if reqs[k].is_decode]
    order = {r.id: pos for pos, r in enumerate(problem.waiting_order)}
    best_key: tuple[int, ...] | None = None
    best: tuple[dict[str, int], int] | None = None
    states = 0
    for mask in range(1 << len(reqs)):
        chosen = [k for k in range(len(reqs)) if mask >> k & 1]
        admitted = [k for k in chosen if k >= n_run]
        if n_run + len(admitted) > cfg.max_num_running_reqs:
            continue
        has_prefill = any(not reqs[k].is_decode for k in chosen)
        if has_prefill and any(not mask >> d & 1 for d in run_decodes):
            continue
        if strict and admitted:
            if any(not mask >> k & 1 for k in range(n_run)):
                continue  # every running request must get its full chunk
            pos = sorted(order[reqs[k].id] for k in admitted)
            if pos != list(range(len(admitted))):
                continue  # not a prefix of the waiting order
        # Fixed part: decodes get 1 token; in strict mode with admissions, running prefills
        # get their full chunk.
        fixed: dict[str, int] = {}
        free: list[int] = []
        for k in chosen:
            r = reqs[k]
            if r.is_decode:
                fixed[r.id] = 1
            elif strict and admitted and k < n_run:
                fixed[r.id] = problem.hi(r)
            else:
                free.append(k)
        s0 = sum(fixed.values())
        kv0 = sum(blocks(problem.by_id[i], c) for i, c in fixed.items())
        if s0 > budget or (kv_cap is not None and kv0 > kv_cap):
            continue
        a0 = sum(
            lat.prefill(c, problem.by_id[i].computed_tokens, problem.by_id[i].remaining_prompt)
            for i, c in fixed.items()
            if not problem.by_id[i].is_decode
        )
        w0 = sum(weights[i] * c for i, c in fixed.items())
        # (tokens, attention, kv) -> (weighted tokens, chunk sizes of the free prefills)
        layer: dict[tuple[int, int, int], tuple[int, tuple[int, ...]]] = {(s0, a0, kv0): (w0, ())}
        for k in free:
            r = reqs[k]
            lo, hi = problem.lo(r), problem.hi(r)
            w = weights[r.id]
            nxt: dict[tuple[int, int, int], tuple[int, tuple[int, ...]]] = {}
            for (s, a, kv), (wt, cs) in layer.items():
                for c in range(max(lo, 1), min(hi, budget - s) + 1):
                    kv2 = kv + blocks(r, c)
                    if kv_cap is not None and kv2 > kv_cap:
                        break  # blocks grow with c
                    key = (s + c, a + lat.prefill(c, r.computed_tokens, r.remaining_prompt), kv2)
                    cand = (wt + w * c, (*cs, c))
                    old = nxt.get(key)
                    if old is None or cand[0] > old[0]:
                        nxt[key] = cand
            states += len(nxt)
            if states > max_states:
                raise InputError(
                    "problem",
                    f"brute force explored more than {max_states} partial decisions; "
                    "the problem is too large for it",
                    show_value=False,
                )
            layer = nxt
        b = len(chosen)
        base = lat.batch(b) + lat.decode_ns(
            sum(reqs[k].computed_tokens for k in chosen if reqs[k].is_decode)
        )
        for (s, a, _kv), (wt, cs) in layer.items():
            latency = lat.tokens(s) + base + a
            if goodput:
                if latency > target:
                    continue
                key = (-wt, latency)
            else:
                key = (abs(latency - target), -b, -wt)
            if best_key is None or key < best_key:
                best_key = key
                tokens = dict(fixed)
                tokens.update({reqs[k].id: c for k, c in zip(free, cs, strict=True)})
                best = (tokens, latency)
    if best is None:
        return None, 0, states
    return Decision.of(best[0]), best[1], states


# target_tolerance_ns is accepted so that a study can pass one tolerance to every solver:
# brute force proves every answer exactly, which meets any tolerance.
@register_solver("brute", params=("max_requests", "max_states", "target_tolerance_ns"))
def _factory() -> BruteSolver:
    return BruteSolver()
