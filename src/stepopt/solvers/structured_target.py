"""``target`` (least |L - T|, then most requests, then most tokens) for the structured solver.

The proof is the layers' bounds (:mod:`stepopt.solvers.structured_layers`): a position's
distance bound is ``max(0, lb - T, T - ub)`` and the least over all positions bounds |L - T|
from below. It is made exact where that is cheap: a layer with one free chunk has one decision
per position, and positions with few chunks have their every split enumerated
(:func:`structured_split.exact_split`) when they keep the bound below the best decision.

The greedy candidates sit on the lower envelope and rarely land near ``T``, so the positions
whose bound is near the least are searched, in tie-break order (most requests, then most
tokens), until a decision is within the tolerance of the bound:

- ``A_k`` (k decodes): the latency depends on the subset only through its summed context. The
  subsets met by sliding one member at a time from the k smallest contexts to the k largest
  have non-decreasing sums that step by one gap of the sorted contexts, so binary searches
  find the sums around the one ``T`` asks for (:func:`_slide`).
- ``B`` layers: :func:`structured_split.search` (the path from the cheapest split to the
  dearest, then pair moves). ``B0`` through its candidate layers ``B0/m`` and, with few
  running prefills, every set of started prefills.

Every latency is the model's exact integer (the evaluator's floor interpolation), and the
evaluator re-judges the answer (:func:`stepopt.solvers.base.finish`). The search only finds
decisions; the claim comes from the bounds: OPTIMAL when |L - T| meets the bound and no
position that could tie has more requests or tokens; otherwise FEASIBLE with the bound
(``proven_within_ns``, compared with ``target_tolerance_ns`` by ``auto``), saying that the
tie-break is not proven.
"""

from __future__ import annotations

import itertools

import numpy as np

from stepopt.model import NS_PER_MS, Decision, StepProblem
from stepopt.solvers import structured_split
from stepopt.solvers.base import SolveResult, SolveStatus, finish
from stepopt.solvers.common import TOLERANCE_PARAM
from stepopt.solvers.structured_curves import greedy_fill
from stepopt.solvers.structured_flat import Flat
from stepopt.solvers.structured_layers import BIG, Ctx, Layer, b_layer, fill_candidates
from stepopt.solvers.structured_split import Found

NAME = "structured"
MAX_TRIES = 48  # positions searched, in tie-break order
MIN_WINDOW_NS = 1000  # positions this close to T are searched even with no tolerance
MAX_SUBSET_ITEMS = 4  # B0 with at most this many prefills: every started set is searched
MAX_SPLIT_ITEMS = 6  # active chunks of a position whose splits may be enumerated
MAX_EXACT_POSITIONS = 512  # positions whose splits are enumerated
MAX_ENUMERATED = 3_000_000  # chunk values (splits x chunks) enumerated: 0.1 s at most


def solve(
    problem: StepProblem, cx: Ctx, layers: list[Layer], started, time_limit, info, decision
) -> SolveResult | None:
    """The ``target`` answer from the layers (built on ``cx``, the problem's context); None
    when there is no decision and no proof (the caller refuses). ``decision(problem, layer,
    pos)`` builds a layer's candidate."""
    t = problem.target_ns
    tol = int(info.get(TOLERANCE_PARAM, 0))
    fl = Flat(layers, problem.config.max_num_scheduled_tokens)
    tok, bmax, cand, cand_b, ok = (fl.get(a) for a in ("tok", "bmax", "cand", "cand_b", "ok"))
    lb, ub = _exact_bounds(fl)
    reach = lb < BIG
    dev_lb = np.where(reach, np.maximum(np.maximum(lb - t, t - ub), 0), BIG)
    best = _greedy_best(problem, fl, tok, cand, cand_b, ok, decision)
    window = int(dev_lb.min()) + max(tol, MIN_WINDOW_NS)
    if _fill_borrowed(cx, fl, dev_lb, window if best is None else max(window, best.dev)):
        cand, ok = fl.get("cand"), fl.get("ok")
        best = _greedy_best(problem, fl, tok, cand, cand_b, ok, decision)
    if best is None and not reach.any():
        return finish(
            problem, NAME, SolveStatus.INFEASIBLE, None, started, time_limit=time_limit, params=info
        )
    bound_ns = int(dev_lb.min())
    found = _search(cx, fl, dev_lb, bound_ns, tol, best)
    if found is not None and (best is None or found.key() < best.key()):
        best = found
    exact = Exact(cx, fl, dev_lb)
    if best is not None and best.dev - bound_ns > tol:
        best = exact.run(np.flatnonzero(dev_lb < best.dev - tol), best)
        bound_ns = int(dev_lb.min())
    if best is None:
        return None  # not proven infeasible, no decision: the caller refuses
    rivals = _rivals(dev_lb, bmax, tok, best) & ~exact.cleared
    if best.dev == bound_ns and rivals.any():  # the tie-break: enumerate the rivals too
        best = exact.run(np.flatnonzero(rivals), best)
        bound_ns = int(dev_lb.min())
        rivals = _rivals(dev_lb, bmax, tok, best) & ~exact.cleared
    dec = Decision.of(best.token_map())
    info.update(model_latency_ns=best.latency, layer=best.layer)
    if best.dev == bound_ns and not rivals.any():
        return finish(
            problem, NAME, SolveStatus.OPTIMAL, dec, started, time_limit=time_limit, params=info
        )
    gap = best.dev - bound_ns
    msg = (
        "|L - T| proven optimal; the tie-break not proven"
        if gap == 0
        else f"|L - T| proven within {gap} ns of the optimum; the tie-break not proven"
    )
    return finish(
        problem,
        NAME,
        SolveStatus.FEASIBLE,
        dec,
        started,
        bound=bound_ns / NS_PER_MS,
        time_limit=time_limit,
        params=info,
        message=msg,
    )


def _rivals(dev_lb, bmax, tok, best: Found) -> np.ndarray:
    """Positions that might hold a decision as close to T with more requests, or as many and
    more tokens."""
    return (dev_lb <= best.dev) & ((bmax > best.b) | ((bmax == best.b) & (tok > best.tok)))


def _exact_bounds(fl: Flat) -> tuple[np.ndarray, np.ndarray]:
    """The layers' latency bounds, exact where a layer has one free chunk: its position fixes
    the chunk, so the candidate is the only decision there (``ok`` checks budget, chunk rules
    and KV exactly). The envelopes are loose there (a convex chunk cost under its chord)."""
    lbs, ubs = [], []
    for ly in fl.layers:
        a = ly.arrays
        if len(ly.items) == 1 and not _borrowed(ly):
            lbs.append(np.where(a.ok, a.cand, BIG))
            ubs.append(np.where(a.ok, a.cand, -BIG))
        else:
            lbs.append(a.lb)
            ubs.append(a.ub)
    return fl.cat(lbs), fl.cat(ubs)


def _borrowed(ly: Layer) -> bool:
    """A candidate layer (``B0/m``) whose positions B0's bounds cover: none of its own."""
    return ly.name.startswith("B0/")


def _fill_borrowed(cx, fl: Flat, dev_lb, limit: int) -> bool:
    """The candidate layers' greedy decisions where B0's distance bound is at most ``limit``
    (the greedy best's distance, or the search window, if larger): a decision elsewhere is
    farther from T than either, so neither the greedy best nor the search can use it. True
    when one is valid."""
    found = False
    for li, ly in enumerate(fl.layers):
        if ly.room is not None and _borrowed(ly):
            at = np.flatnonzero(fl.parent_dev(dev_lb, li) <= limit)
            fill_candidates(cx, ly, at)
            found |= bool(ly.arrays.ok[at].any())
    return found


def _greedy_best(problem, fl: Flat, tok, cand, cand_b, ok, decision) -> Found | None:
    """The best of the layers' own candidates (greedy fills and the A layer's cheapest
    subsets)."""
    if not ok.any():
        return None
    t = problem.target_ns
    dev = np.where(ok, np.abs(cand - t), BIG)
    idx = np.flatnonzero(dev == dev.min())
    i = int(idx[np.lexsort((-tok[idx], -cand_b[idx]))[0]])
    li, pos = fl.locate(i)
    layer = fl.layers[li]
    tokens = lambda: dict(decision(problem, layer, pos).tokens)  # noqa: E731 (non-zero only)
    return Found(int(dev[i]), int(cand_b[i]), int(tok[i]), int(cand[i]), tokens, layer.name)


def _search(cx, fl: Flat, dev_lb, bound_ns, tol, best) -> Found | None:
    """Positions within the window of the bound, most requests then most tokens first; stop
    at the first decision within the tolerance of the bound."""
    goal = bound_ns + tol
    if best is not None and best.dev <= goal and tol > 0:
        return None
    window = bound_ns + max(tol, MIN_WINDOW_NS)
    out = None
    for li, pos, d, b, s in _candidates(cx, fl, dev_lb, window):
        top = out if out is not None else best
        if top is not None and (d, -b, -s) >= top.key():
            continue  # cannot beat what is in hand
        ly = fl.layers[li]
        a_layer = ly.decode_pick is not None
        f = _a_search(cx, ly, pos) if a_layer else structured_split.search(cx, ly, pos, _high(ly))
        if f is not None and (out is None or f.key() < out.key()):
            out = f
            if f.dev <= goal:
                return out
    top = out if out is not None else best
    if top is None or top.dev > goal:
        f = _subsets(cx, fl, dev_lb, window, top)
        out = f if f is not None and (out is None or f.key() < out.key()) else out
    return out


def _subsets(cx, fl: Flat, dev_lb, window, top: Found | None) -> Found | None:
    """``B0`` with few running prefills: search every set of started prefills that is not a
    candidate layer already, at B0's positions near T (the greedy moves keep the set)."""
    b0 = fl.b0
    if b0 is None or len(fl.layers[b0].items) > MAX_SUBSET_ITEMS:
        return None
    ly0 = fl.layers[b0]
    known = {frozenset(r.id for r in ly.reqs) for ly in fl.layers if _borrowed(ly)}
    dev = fl.part(dev_lb, b0)
    pos = np.flatnonzero(dev <= window)
    toks = ly0.arrays.tok[pos[np.lexsort((dev[pos], -ly0.arrays.tok[pos]))]][:MAX_TRIES]
    out, tries = None, 0
    for q in range(len(ly0.reqs), 0, -1):
        for reqs in itertools.combinations(ly0.reqs, q):
            if frozenset(r.id for r in reqs) in known:
                continue
            name = "B0/" + "+".join(r.id for r in reqs)
            ly = b_layer(cx, name, {}, [], list(reqs), False, bounds=False)
            if ly is None:
                continue
            at = toks - ly.arrays.tok[0]
            for p in at[(at >= 0) & (at < ly.arrays.tok.size)]:
                tries += 1
                f = structured_split.search(cx, ly, int(p), _high(ly))
                if f is not None and (out is None or f.key() < out.key()):
                    out = f
                if tries >= MAX_TRIES or (
                    out is not None
                    and top is not None
                    and out.key() < top.key()
                    and out.dev <= window
                ):
                    return out
    return out


class Exact:
    """Positions whose every split is enumerated (:func:`structured_split.exact_split`),
    within one budget per solve: their exact least distance replaces their bound in
    ``dev_lb``, and ``cleared`` marks those where no split beats the best decision on
    (|L - T|, requests) (tokens are the position's)."""

    def __init__(self, cx, fl: Flat, dev_lb: np.ndarray) -> None:
        self.cx, self.fl, self.dev_lb = cx, fl, dev_lb
        self.left = MAX_ENUMERATED
        self.cleared = np.zeros(dev_lb.size, dtype=bool)

    def run(self, todo: np.ndarray, best: Found) -> Found:
        """``todo`` (flat positions) nearest first; the best decision met on the way."""
        seen = []
        for flat in todo[np.argsort(self.dev_lb[todo], kind="stable")][:MAX_EXACT_POSITIONS]:
            li, pos = self.fl.locate(int(flat))
            ly = self.fl.layers[li]
            if not ly.items or _borrowed(ly):
                continue
            splits, active = structured_split.split_count(self.cx, ly, pos)
            cost = splits * max(active, 1)
            if active > MAX_SPLIT_ITEMS or cost > self.left:
                continue
            self.left -= cost
            self.dev_lb[flat], f = structured_split.exact_split(self.cx, ly, pos)
            if f is not None and f.key() < best.key():
                best = f
            seen.append((int(flat), f))
        for flat, f in seen:  # against the final best: it only got better
            self.cleared[flat] = f is None or f.key() >= best.key()
        return best


def _candidates(cx, fl: Flat, dev_lb, window) -> list[tuple[int, int, int, int, int]]:
    """(layer, position, distance bound, batch size bound, tokens) to search, best first.

    Layers ``B0/m`` (``B0`` with its first ``m`` prefills started, see
    ``structured._started_prefixes``) have no bounds of their own: they take B0's at the same
    token count. B layers keep the positions where T lies near the exact latencies of their
    cheapest and dearest greedy splits (a filter on where to search, not a proof)."""
    rows = []
    for li, ly in enumerate(fl.layers):
        a = ly.arrays
        if _borrowed(ly):
            dev = fl.parent_dev(dev_lb, li)
        elif ly.decode_pick is None and not ly.items:
            continue  # nothing to split
        else:
            dev = fl.part(dev_lb, li)
        pos = np.flatnonzero(dev <= window)
        if ly.items and not ly.optional and pos.size:
            att = structured_split.fill_attention(cx, ly, _high(ly), pos)
            dear = a.fixed_part[pos] + cx.fseq[a.bmax[pos]] + att
            slack = len(ly.items) + window
            low, high = np.minimum(a.cand[pos], dear), np.maximum(a.cand[pos], dear)
            pos = pos[(low - slack <= cx.target) & (cx.target <= high + slack)]
        rows.append(np.stack([np.full(pos.size, li), pos, dev[pos], a.bmax[pos], a.tok[pos]]))
    if not rows:
        return []
    m = np.concatenate(rows, axis=1)
    order = np.lexsort((m[2], -m[4], -m[3]))[:MAX_TRIES]
    return [tuple(row) for row in m[:, order].T.tolist()]


def _high(ly: Layer):
    """The layer's upper-envelope fill (built with the layer for ``target``, on demand for a
    candidate layer), over the same free tokens as its lower one."""
    if ly.high is None:
        top = ly.arrays.tok.size - 1 if ly.items else None  # the lower fill's span
        ly.high = greedy_fill(ly.items, lower=False, top=top)
    return ly.high


def _a_search(cx: Ctx, ly: Layer, k: int) -> Found | None:
    """``k`` decodes whose summed context puts L nearest T. Without a binding KV limit, along
    the sliding path over every decode; with one, ``a`` decodes that need a block (the
    cheapest and the dearest layer's counts) and ``k - a`` that do not, one group fixed at its
    smallest or largest members while the other slides."""
    if k == 0 or cx.dps <= 0:
        return None
    base = int(cx.ftok[min(k, cx.budget)] + cx.fseq[k])
    want = (cx.target - base) * 1000 // cx.dps  # decode_ns(want) <= T - base < decode_ns(+1)
    need_up, free_up, a_lo, a_hi = ly.decode_pick
    picks: list[np.ndarray] = []
    if cx.kv is None or need_up.size <= cx.kv:
        order = np.argsort(cx.ctx, kind="stable")
        picks = [order[p] for p in _slide(cx.ctx[order], k, want)]
    else:
        for a in {int(a_lo[k]), int(a_hi[k])}:
            if a > need_up.size or k - a > free_up.size:
                continue
            groups = ((need_up, a), (free_up, k - a))
            for (fix, m), (move, q) in (groups, groups[::-1]):
                for part in (fix[:m], fix[fix.size - m :]):
                    rest = want - int(cx.ctx[part].sum())
                    vals = cx.ctx[move]
                    picks += [np.concatenate([part, move[p]]) for p in _slide(vals, q, rest)]
    # Every pick has k requests and k tokens: the first nearest T wins, and only its request
    # ids are read (a dict of thousands of decodes per pick would cost more than the search).
    best = None
    for pick in picks:
        lat = base + int(cx.decode_ns(np.int64(cx.ctx[pick].sum())))
        if best is None or abs(lat - cx.target) < abs(best[0] - cx.target):
            best = (lat, pick)
    if best is None:
        return None
    lat, pick = best
    tokens = dict.fromkeys([cx.decodes[i].id for i in pick.tolist()], 1)
    return Found(abs(lat - cx.target), k, k, lat, tokens, "A")


def _slide(a: np.ndarray, k: int, want: int) -> list[np.ndarray]:
    """Index sets of ``k`` members of the sorted ``a`` whose sums bracket ``want`` (and
    ``want + 1``): the path that slides the k smallest, top member first, one step at a time
    to the k largest has non-decreasing sums."""
    n = a.size
    if k == 0 or k > n:
        return [np.zeros(0, dtype=np.int64)] if k == 0 else []
    pre = np.concatenate([[0], np.cumsum(a)])
    m = np.arange(k)  # members parked at the top
    q = k - 1 - m  # the member that slides, from index q to n - 1 - m
    top = pre[n] - pre[n - m]
    first = pre[q] + a[q] + top
    out = []
    for goal in (want, want + 1):
        st = int(np.clip(np.searchsorted(first, goal, side="right") - 1, 0, k - 1))
        qq, mm = int(q[st]), int(m[st])
        rest = pre[qq] + top[st]
        hi_p = n - 1 - mm
        p = int(np.searchsorted(a[qq : hi_p + 1], goal - rest, side="right")) + qq - 1
        for pp in {max(p, qq), min(p + 1, hi_p)}:
            out.append(np.asarray([*range(qq), pp, *range(n - mm, n)], dtype=np.int64))
    return out
