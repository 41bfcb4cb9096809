"""The ``goodput`` side of the structured solver: what can be decided before and while the
layers are built.

- Every request at ``hi`` within budget, slots, KV and ``T`` is the one decision with the most
  tokens (each request at its most), so it is the optimum, its tie-break included: no layer
  is needed (light load, most steps of a replayed trace).
- The admission layers ``B_j`` (every running request in full and the first ``j`` waiting
  ones) are built from the most admissions down, and only while they could matter: a layer
  ``j`` whose fewest tokens already give a latency bound above ``T`` excludes every later one
  (the bound grows with ``j``), and once a valid candidate with ``S`` tokens is known, a
  layer with fewer than ``S`` tokens at most (and every earlier one) cannot beat it.
"""

from __future__ import annotations

import numpy as np

from stepopt.model import Decision, StepProblem
from stepopt.solvers.structured_layers import Ctx, Layer, a_layer, b_layer, first_layers

MAX_WAITING_LAYERS = 4096


def everything_fits(problem: StepProblem) -> tuple[Decision, int] | None:
    """Every request at ``hi`` when that is a valid decision within ``T``, with its latency;
    None otherwise (the layers decide)."""
    cfg = problem.config
    if len(problem.requests) > cfg.max_num_running_reqs:
        return None
    others = [*problem.running_prefills, *problem.waiting]
    most = len(problem.running_decodes) + sum(problem.hi(r) for r in others)
    if most > cfg.max_num_scheduled_tokens:  # the common case under load: cheap to see
        return None
    tokens = {r.id: problem.hi(r) for r in problem.requests}
    if cfg.num_free_blocks is not None:
        need = sum(problem.new_blocks(r, tokens[r.id]) for r in problem.requests)
        if need > cfg.num_free_blocks:
            return None
    latency = problem.latency.predict_ns(problem, tokens)
    if latency > problem.target_ns:
        return None
    return Decision.of(tokens), latency


def goodput_layers(cx: Ctx) -> list[Layer]:
    """The layers that can hold the ``goodput`` optimum (see the module docstring); the ones
    left out have every position either above ``T`` or below a valid candidate's tokens."""
    p = cx.problem
    layers = _b0_then_a(cx)
    if len(cx.decodes) >= cx.budget:
        return layers
    running_pre = list(p.running_prefills)
    best = max(_best_tokens(ly, cx.target) for ly in layers)
    full = {r.id: p.hi(r) for r in running_pre}
    order = p.waiting_order
    s0 = len(cx.decodes) + sum(full.values())
    j_max = min(len(order), p.free_slots, MAX_WAITING_LAYERS)
    if j_max == 0 or s0 >= cx.budget:
        return layers
    los = np.cumsum([p.lo(r) for r in order[:j_max]])
    his = np.cumsum([p.hi(r) for r in order[:j_max]])
    j_top = _top_layer(cx, full, running_pre, s0, los)
    for j in range(j_top, 0, -1):
        if min(cx.budget, s0 + int(his[j - 1])) < best:
            break  # this layer and every earlier one hold fewer tokens than a candidate
        layer = b_layer(cx, f"B{j}", full, running_pre, list(order[:j]), optional=False)
        if layer is not None:
            layers.append(layer)
            best = max(best, _best_tokens(layer, cx.target))
    return layers


def _b0_then_a(cx: Ctx) -> list[Layer]:
    """``first_layers`` without the decode layer ``A`` when ``B0`` has a candidate within
    ``T`` with more tokens than every decode: no position of ``A`` (at most that many tokens)
    can then be the optimum or tie with it."""
    running_pre = list(cx.problem.running_prefills)
    if not running_pre or len(cx.decodes) >= cx.budget:
        return first_layers(cx)
    b0 = b_layer(cx, "B0", {}, [], running_pre, optional=True)
    if b0 is None:
        return [a_layer(cx)]
    if _best_tokens(b0, cx.target) > len(cx.decodes):
        return [b0]
    return [a_layer(cx), b0]


def _top_layer(cx: Ctx, full: dict[str, int], running_pre: list, s0: int, los: np.ndarray) -> int:
    """The largest ``j`` whose layer may have a decision within ``T`` and the budget: a lower
    bound of every layer ``j' >= j`` is the fixed part (decodes, running prefills at ``hi``)
    plus the least ``F_tok`` from its fewest tokens on plus the least ``F_seq`` from its batch
    size on (attention is never negative); it grows with ``j``."""
    lat = cx.problem.latency
    const = cx.decode_const + sum(
        lat.prefill(full[r.id], r.computed_tokens, r.remaining_prompt) for r in running_pre
    )
    fits = int(np.searchsorted(los, cx.budget - s0, side="right"))
    if fits == 0:
        return 0
    suf_tok = np.minimum.accumulate(cx.ftok[::-1])[::-1]
    suf_seq = np.minimum.accumulate(cx.fseq[::-1])[::-1]
    j = np.arange(1, fits + 1)
    batch = np.minimum(len(cx.decodes) + len(running_pre) + j, cx.fseq.size - 1)
    bound = const + suf_tok[s0 + los[:fits]] + suf_seq[batch]
    return int(np.count_nonzero(bound <= cx.target))


def _best_tokens(layer: Layer, target: int) -> int:
    a = layer.arrays
    good = a.ok & (a.cand <= target)
    return int(a.tok[good].max()) if good.any() else -1
