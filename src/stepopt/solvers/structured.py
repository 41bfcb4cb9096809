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

import math
import time
from typing import Any

import numpy as np

from stepopt.errors import InputError
from stepopt.evaluate import evaluate
from stepopt.model import Decision, StepProblem
from stepopt.solvers.base import SolveResult, SolveStatus, finish, register_solver
from stepopt.solvers.common import TOLERANCE_PARAM, pop_tolerance
from stepopt.solvers.hint import greedy_hint
from stepopt.solvers.structured_curves import allocation, lagrangian_terms, refine
from stepopt.solvers.structured_layers import BIG, EPS, Ctx, Layer, a_layer, b_layer

NAME = "structured"
MAX_WAITING_LAYERS = 4096
MAX_SCAN = 400_000  # chunk values scanned by the tie-break bound
MAX_PREFIX_LAYERS = 24  # candidate layers of started running prefills
REFINE_WINDOW = 16  # tokens each chunk may move when the tie-break split is refined


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
        layers = build_layers(Ctx(problem))
        info["layers"] = len(layers)
        if problem.objective == "goodput":
            return _goodput(problem, layers, started, time_limit, info)
        return _target(problem, layers, started, time_limit, info)


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
    p = cx.problem
    layers = [a_layer(cx)]
    running_pre = list(p.running_prefills)
    if running_pre:
        b0 = b_layer(cx, "B0", {}, [], running_pre, optional=True)
        if b0 is not None:
            layers.append(b0)
            layers.extend(_started_prefixes(cx, b0))
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
        ly = b_layer(cx, f"B0/{m}", {}, [], order[:m], optional=False)
        if ly is not None:
            a = ly.arrays
            a.lb = np.full(a.lb.size, BIG)
            a.ub = np.full(a.ub.size, -BIG)
            out.append(ly)
    return out


def _decision(problem: StepProblem, layer: Layer, pos: int) -> Decision:
    """The concrete decision behind position ``pos`` of ``layer``."""
    if layer.decode_pick is not None:
        need_up, free_up, a_lo, _ = layer.decode_pick
        a = int(a_lo[pos])
        idx = [*need_up[:a], *free_up[: pos - a]]
        return Decision.of({problem.running_decodes[int(i)].id: 1 for i in idx})
    tokens = dict(layer.fixed)
    chunks = allocation(layer.items, layer.fill, pos)
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


def _goodput(problem, layers, started, time_limit, info) -> SolveResult:
    t = problem.target_ns
    tok, lb, cand, ok = (_all(layers, a) for a in ("tok", "lb", "cand", "ok"))
    good = ok & (cand <= t)
    if not good.any():
        proof = bool((lb > t).all())
        return _none_found(problem, started, time_limit, info, proof, "the bounds do not close")
    # Most tokens, then least latency.
    idx = np.flatnonzero(good)
    best = idx[np.lexsort((cand[idx], -tok[idx]))[0]]
    b_tok, b_lat = int(tok[best]), int(cand[best])
    layer, pos = _locate(layers, int(best))
    dec = _decision(problem, layer, pos)
    info.update(model_latency_ns=b_lat, layer=layer.name)
    open_more = (tok > b_tok) & (lb <= t)
    open_tie = (tok == b_tok) & (lb < b_lat)
    if open_tie.any() and not open_more.any():
        better = _better_split(problem, layer, pos, int(cand[best]))
        if better is not None:
            dec, b_lat = better
            info.update(model_latency_ns=b_lat, refined=True)
            open_tie = (tok == b_tok) & (lb < b_lat)
        open_tie = _refine_ties(layers, open_tie, b_lat)
    if not open_more.any() and not open_tie.any():
        return finish(
            problem, NAME, SolveStatus.OPTIMAL, dec, started, time_limit=time_limit, params=info
        )
    if not open_more.any():
        msg = "tokens proven optimal; the latency tie-break not proven"
        bound = float(b_tok)
    else:
        msg = "bounds do not close: not proven"
        bound = float(tok[open_more].max())
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


def _better_split(
    problem: StepProblem, layer: Layer, pos: int, latency: int
) -> tuple[Decision, int] | None:
    """The same tokens split with less exact attention (floors), if there is such a split near
    the greedy one."""
    if layer.fill is None or not layer.items:
        return None
    chunks = allocation(layer.items, layer.fill, pos)
    now = sum(it.value(c) for it, c in zip(layer.items, chunks, strict=True))
    new, att = refine(layer.items, chunks, REFINE_WINDOW)
    if att >= now:
        return None
    tokens = dict(layer.fixed)
    tokens.update({r.id: c for r, c in zip(layer.reqs, new, strict=True)})
    dec = Decision.of(tokens)
    if not evaluate(problem, dec).feasible:
        return None  # the KV limit can forbid the other split
    return dec, latency - (now - att)


def _refine_ties(layers: list[Layer], open_tie: np.ndarray, b_lat: int) -> np.ndarray:
    """Re-check the positions that might tie on tokens with a tighter (Lagrangian) bound."""
    out = open_tie.copy()
    at = 0
    for ly in layers:
        n = ly.arrays.tok.size
        for pos in np.flatnonzero(open_tie[at : at + n]):
            if ly.fill is not None:
                out[at + pos] = _lagrangian_lb(ly, int(pos)) < b_lat
        at += n
    return out


def _lagrangian_lb(ly: Layer, pos: int) -> float:
    """Lower bound of the latency at ``pos`` of a B layer: the fixed part, then the least
    ``F_seq(b) + attention`` over the feasible numbers of non-zero items."""
    a = ly.arrays
    terms = lagrangian_terms(ly.items, ly.fill, pos, MAX_SCAN) if ly.items else None
    if terms is None:
        return float(a.lb[pos]) if ly.items else float(a.cand[pos])
    mins, lam_tokens = terms
    fixed_part = int(a.fixed_part[pos])
    if not ly.optional:
        return fixed_part + int(ly.fseq_window[-1]) + math.ceil(mins.sum() + lam_tokens - EPS)
    sums = np.concatenate([[0.0], np.cumsum(np.sort(mins))])
    qmin, qmax = int(a.bmin[pos] - ly.b_fixed), int(a.bmax[pos] - ly.b_fixed)
    q = np.arange(qmin, qmax + 1)
    vals = ly.fseq_window[q] + np.ceil(sums[q] + lam_tokens - EPS)
    return fixed_part + float(vals.min())


def _target(problem, layers, started, time_limit, info) -> SolveResult:
    from stepopt.solvers import structured_target

    res = structured_target.solve(problem, layers, started, time_limit, info, _decision)
    if res is None:
        return _refuse(problem, started, time_limit, info, "no candidate decision")
    return res


@register_solver(NAME, params=(TOLERANCE_PARAM,))
def _factory() -> StructuredSolver:
    return StructuredSolver()
