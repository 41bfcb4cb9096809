"""Exact solver for strict priority by enumeration of layers plus bounds: ``structured``.

Strict priority leaves few decisions: every feasible one lies in a layer (decodes only; every
decode plus running prefills; every running request in full plus a prefix of the waiting
order, see :mod:`stepopt.solvers.structured_layers`). For each layer and every token count the
solver knows a proven latency interval and one concrete decision; it proves optimality when no
other (layer, tokens) position can beat its best decision:

- ``goodput`` (most tokens with L <= T, then least L): OPTIMAL when every position with more
  tokens has a lower bound above T and every position with as many tokens a lower bound at or
  above the decision's latency.
- ``target`` (least |L - T|, then most requests, then most tokens): the primary bound is the
  least distance from T to any position's interval; OPTIMAL when the decision meets it and no
  position that could tie has more requests or tokens; otherwise FEASIBLE with the bound
  (``proven_within_ns`` says how close, as with CP-SAT's ``target_tolerance_ns``).

It never guesses: weighted priority, a negative decode cost, or bounds that do not close give a
non-proven status with the best decision found (checked by the evaluator) and the bound.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from stepopt.errors import InputError
from stepopt.model import Decision, StepProblem
from stepopt.solvers.base import SolveResult, SolveStatus, finish, register_solver
from stepopt.solvers.common import TOLERANCE_PARAM, pop_tolerance
from stepopt.solvers.hint import greedy_hint
from stepopt.solvers.structured_curves import allocation
from stepopt.solvers.structured_exact import Exact, exact_min
from stepopt.solvers.structured_goodput import everything_fits, goodput_layers
from stepopt.solvers.structured_layers import Ctx, Layer, b_layer, first_layers, low_fill

NAME = "structured"
MAX_PREFIX_LAYERS = 24  # candidate layers of started running prefills (``target``)
MAX_WAITING_LAYERS = 4096


class StructuredSolver:
    name = NAME

    def solve(
        self, problem: StepProblem, time_limit: float | None = None, **params: Any
    ) -> SolveResult:
        started = time.perf_counter()
        tolerance = pop_tolerance(params)
        if params:
            raise InputError("structured parameters", f"valid: {TOLERANCE_PARAM}", sorted(params))
        info: dict[str, Any] = {TOLERANCE_PARAM: tolerance}
        refusal = _refusal(problem)
        if refusal:
            return _refuse(problem, started, time_limit, info, refusal)
        if len(problem.running) > problem.config.max_num_running_reqs:
            return finish(
                problem,
                NAME,
                SolveStatus.INFEASIBLE,
                None,
                started,
                time_limit=time_limit,
                params=info,
                message="running requests alone exceed max_num_running_reqs",
            )
        if problem.objective == "goodput":
            full = everything_fits(problem)
            if full is not None:  # the one decision with every request at its most tokens
                info.update(model_latency_ns=full[1], layer="all")
                return finish(
                    problem,
                    NAME,
                    SolveStatus.OPTIMAL,
                    full[0],
                    started,
                    time_limit=time_limit,
                    params=info,
                )
        cx = Ctx(problem)
        layers = goodput_layers(cx) if problem.objective == "goodput" else build_layers(cx)
        info["layers"] = len(layers)
        if problem.objective == "goodput":
            return _goodput(problem, cx, layers, started, time_limit, info)
        return _target(problem, cx, layers, started, time_limit, info)


def _refusal(problem: StepProblem) -> str:
    if problem.priority_mode != "strict":
        return "weighted priority has no layer structure"
    if problem.latency.decode_context_ps < 0:
        return "a negative decode attention cost breaks the subset bounds"
    return ""


def _refuse(problem, started, time_limit, info, why: str) -> SolveResult:
    """Not proven: the greedy strict decision when it is valid (the evaluator checks it)."""
    hint = greedy_hint(problem)
    status = SolveStatus.FEASIBLE if hint is not None else SolveStatus.NO_SOLUTION
    return finish(
        problem,
        NAME,
        status,
        hint,
        started,
        time_limit=time_limit,
        params={**info, "unsupported": why},
        message=f"unsupported: {why}; not proven",
    )


def _none_found(problem, started, time_limit, info, proven: bool, why: str) -> SolveResult:
    """No candidate decision: INFEASIBLE when the bounds prove it (no message, so callers give
    the diagnosis), else the greedy decision, not proven."""
    if not proven:
        return _refuse(problem, started, time_limit, info, why)
    return finish(
        problem, NAME, SolveStatus.INFEASIBLE, None, started, time_limit=time_limit, params=info
    )


def build_layers(cx: Ctx) -> list[Layer]:
    """Every layer (``target``; ``goodput`` builds fewer, see ``structured_goodput``)."""
    p = cx.problem
    layers = first_layers(cx)
    if len(cx.decodes) >= cx.budget:
        return layers  # every B layer runs every decode and more: over the budget
    if len(layers) > 1:  # B0's started prefixes: candidates for ``target``
        layers.extend(_started_prefixes(cx, layers[1]))
    running_pre = list(p.running_prefills)
    full = {r.id: p.hi(r) for r in running_pre}
    order = p.waiting_order
    budget_left = cx.budget - len(cx.decodes) - sum(full.values())
    j_max = min(len(order), p.free_slots, MAX_WAITING_LAYERS)
    los = np.cumsum([p.lo(r) for r in order[:j_max]])
    j_max = int(np.searchsorted(los, budget_left, side="right")) if j_max else 0
    for j in range(0 if running_pre else 1, j_max + 1):
        if j == 0:
            continue  # every running prefill at hi is a B0 decision
        layer = b_layer(cx, f"B{j}", full, running_pre, list(order[:j]), optional=False)
        if layer is not None:
            layers.append(layer)
    return layers


def _started_prefixes(cx: Ctx, b0: Layer) -> list[Layer]:
    """Candidates only: B0 with its first ``m`` prefills (in the greedy's start order) at
    ``[lo, hi]`` and the rest at 0, so every token count has a valid split even where the
    greedy would stop an item between 0 and ``lo``. B0's bounds cover them: none of their
    own."""
    first = {}
    for k in range(b0.fill.item.size):
        first.setdefault(int(b0.fill.item[k]), k)
    order = [b0.reqs[i] for i in sorted(first, key=first.get)]
    out = []
    for m in range(1, min(len(order), MAX_PREFIX_LAYERS) + 1):
        ly = b_layer(cx, f"B0/{m}", {}, [], order[:m], optional=False, bounds=False)
        if ly is not None:  # no bounds of its own (lb BIG, ub -BIG)
            out.append(ly)
    return out


def _decision(problem: StepProblem, layer: Layer, pos: int) -> Decision:
    """The concrete decision behind position ``pos`` of ``layer``."""
    if layer.decode_pick is not None:
        need_up, free_up, a_lo, _ = layer.decode_pick
        a = int(a_lo[pos])
        idx = [*need_up[:a].tolist(), *free_up[: pos - a].tolist()]
        decodes = problem.running_decodes
        return Decision.of(dict.fromkeys([decodes[i].id for i in idx], 1))
    tokens = dict(layer.fixed)
    chunks = allocation(layer.items, low_fill(layer), pos)
    tokens.update({r.id: c for r, c in zip(layer.reqs, chunks, strict=True)})
    return Decision.of(tokens)


def _all(layers: list[Layer], attr: str) -> np.ndarray:
    return np.concatenate([getattr(ly.arrays, attr) for ly in layers])


def _locate(layers: list[Layer], flat: int) -> tuple[Layer, int]:
    for ly in layers:
        n = ly.arrays.tok.size
        if flat < n:
            return ly, flat
        flat -= n
    raise IndexError(flat)


def _goodput(problem, cx, layers, started, time_limit, info) -> SolveResult:
    """Most tokens with ``L <= T``, then least ``L``: the best candidate, then every position
    whose bound could beat it (more tokens with ``lb <= T``, as many with ``lb`` below its
    latency), highest token count first, settled exactly by :func:`exact_min`."""
    t = problem.target_ns
    tok, lb, cand, ok = (_all(layers, a) for a in ("tok", "lb", "cand", "ok"))
    good = ok & (cand <= t)
    b_tok, b_lat, pick, where = -1, 0, None, None  # pick: the best decision, built at the end
    if good.any():
        idx = np.flatnonzero(good)
        best = int(idx[np.lexsort((cand[idx], -tok[idx]))[0]])
        b_tok, b_lat = int(tok[best]), int(cand[best])
        layer, pos = _locate(layers, best)
        pick, where = (layer, pos, None), layer.name
    open_left: list[int] = []
    todo = np.flatnonzero((tok >= b_tok) & (lb <= t))
    for flat in todo[np.lexsort((lb[todo], -tok[todo]))]:
        f_tok = int(tok[flat])
        if f_tok < b_tok:
            break
        limit = t if f_tok > b_tok else b_lat - 1
        if lb[flat] > limit:
            continue
        layer, pos = _locate(layers, int(flat))
        got = _settle(problem, cx, layer, pos, limit, started, time_limit)
        if got is None:
            open_left.append(int(flat))
        elif got.latency is not None:
            b_tok, b_lat, where = f_tok, got.latency, layer.name
            pick = (layer, None, got.chunks)
    left = [f for f in open_left if tok[f] >= b_tok]
    dec = None
    if pick is not None:
        ly, pos, chunks = pick
        dec = _decision(problem, ly, pos) if chunks is None else _chunks_decision(ly, chunks)
    info.update(exact_positions=len(todo))
    if dec is None:
        if left:
            return _refuse(problem, started, time_limit, info, "the bounds do not close")
        return finish(
            problem, NAME, SolveStatus.INFEASIBLE, None, started, time_limit=time_limit, params=info
        )
    info.update(model_latency_ns=b_lat, layer=where)
    open_more = [f for f in left if tok[f] > b_tok]
    if not left:
        return finish(
            problem, NAME, SolveStatus.OPTIMAL, dec, started, time_limit=time_limit, params=info
        )
    if not open_more:
        msg, bound = "tokens proven optimal; the latency tie-break not proven", float(b_tok)
    else:
        msg, bound = "bounds do not close: not proven", float(max(tok[f] for f in open_more))
    return finish(
        problem,
        NAME,
        SolveStatus.FEASIBLE,
        dec,
        started,
        bound=bound,
        time_limit=time_limit,
        params=info,
        message=msg,
    )


def _settle(problem, cx, layer: Layer, pos: int, limit: int, started, time_limit):
    """The exact least latency at a position if at most ``limit`` (None: not settled)."""
    if layer.fill is None or not layer.items:
        a = layer.arrays  # exact already: A layers, and B layers without free items
        return Exact(int(a.cand[pos]) if a.ok[pos] and a.cand[pos] <= limit else None)
    if time_limit is not None and time.perf_counter() - started > time_limit:
        return None
    return exact_min(cx, layer, pos, limit)


def _chunks_decision(layer: Layer, chunks) -> Decision:
    tokens = dict(layer.fixed)
    tokens.update({r.id: c for r, c in zip(layer.reqs, chunks, strict=True)})
    return Decision.of(tokens)


def _target(problem, cx, layers, started, time_limit, info) -> SolveResult:
    from stepopt.solvers import structured_target

    res = structured_target.solve(problem, cx, layers, started, time_limit, info, _decision)
    if res is None:
        return _refuse(problem, started, time_limit, info, "no candidate decision")
    return res


@register_solver(NAME, params=(TOLERANCE_PARAM,))
def _factory() -> StructuredSolver:
    return StructuredSolver()
