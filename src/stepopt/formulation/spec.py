"""The integer program of one step, described once, solver-free.

Both encoders (CP-SAT and PuLP) read a :class:`Formulation`; nothing here imports a solver.

Variables: ``c_i`` tokens and ``z_i`` "scheduled" per request (a decode has ``c_i = z_i``);
``k_i`` new KV blocks per prefill; one segment-selection boolean per piece of every
piecewise-linear latency term with more than one piece; one integer per latency term.

Every latency term is an integer ``y = y0 + floor(dy * (x - x0) / dx)`` on the selected piece,
encoded exactly as ``0 <= dy*(x - x0) - dx*(y - y0) <= dx - 1`` so that solvers reproduce the
evaluator to the nanosecond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from stepopt.formulation.priority import Node, priority_edges
from stepopt.latency.pwl import PiecewiseLinear
from stepopt.model import StepProblem


@dataclass(frozen=True, slots=True)
class Piece:
    """``y = y0 + floor(dy * (x - x0) / dx)`` for integer ``x`` in ``[a, b]`` (``dx > 0``)."""

    x0: int
    y0: int
    dx: int
    dy: int
    a: int
    b: int

    def value(self, x: int) -> int:
        return self.y0 + (self.dy * (x - self.x0)) // self.dx

    @property
    def y_range(self) -> tuple[int, int]:
        # Floor of a linear function is monotone: the extremes are at the ends.
        va, vb = self.value(self.a), self.value(self.b)
        return min(va, vb), max(va, vb)


@dataclass(frozen=True, slots=True)
class Term:
    """One piecewise-linear latency term over an integer ``x`` in ``[lo, hi]``; ``ylo`` and
    ``yhi`` are its exact extremes there."""

    name: str
    pieces: tuple[Piece, ...]
    ylo: int
    yhi: int

    @classmethod
    def of(cls, name: str, pieces: tuple[Piece, ...]) -> Term:
        ranges = [p.y_range for p in pieces]
        return cls(name, pieces, min(r[0] for r in ranges), max(r[1] for r in ranges))

    @property
    def lo(self) -> int:
        return self.pieces[0].a

    @property
    def hi(self) -> int:
        return self.pieces[-1].b

    @property
    def y_range(self) -> tuple[int, int]:
        return self.ylo, self.yhi

    def value(self, x: int) -> int:
        for p in self.pieces:
            if p.a <= x <= p.b:
                return p.value(x)
        raise ValueError(f"{self.name}: x={x} outside [{self.lo}, {self.hi}]")

    @property
    def constant(self) -> int | None:
        """The value if the term does not depend on ``x`` over its domain."""
        return self.ylo if self.ylo == self.yhi else None


def curve_term(name: str, curve: PiecewiseLinear, lo: int, hi: int) -> Term:
    """The pieces of ``curve`` that evaluate ``x`` in ``[lo, hi]``; collinear neighbours merged
    only when they are the same line (so the floor stays the same)."""
    pieces, ylo, yhi = _pieces(curve, lo, hi)
    return Term(name, pieces, ylo, yhi)


@lru_cache(maxsize=16384)
def _pieces(curve: PiecewiseLinear, lo: int, hi: int) -> tuple[tuple[Piece, ...], int, int]:
    # Cached: a preset's token curve recurs in every problem, attention curves per (C, R).
    pieces: list[Piece] = []
    for seg, a, b in curve.pieces(lo, hi):
        g = math.gcd(seg.dx, seg.dy)  # smaller coefficients, same floor
        p = Piece(seg.x0, seg.y0, seg.dx // g, seg.dy // g, a, b)
        if pieces and _same_line(pieces[-1], p):
            q = pieces[-1]
            pieces[-1] = Piece(q.x0, q.y0, q.dx, q.dy, q.a, b)
        else:
            pieces.append(p)
    ranges = [p.y_range for p in pieces]
    return tuple(pieces), min(r[0] for r in ranges), max(r[1] for r in ranges)


def _same_line(p: Piece, q: Piece) -> bool:
    # Same floor everywhere iff same slope (as a fraction) and q's start lies on p's line
    # exactly; then p's floor formula gives q's values too.
    return p.dy * q.dx == q.dy * p.dx and (q.y0 - p.y0) * p.dx == p.dy * (q.x0 - p.x0)


@dataclass(frozen=True, slots=True)
class Item:
    """One request in the program."""

    index: int
    id: str
    decode: bool  # c in {0, 1}
    running: bool
    lo: int  # fewest tokens when scheduled (>= 1)
    hi: int
    weight: int
    context: int  # computed tokens (decode attention reads them)
    kv_slack: int  # token slots left in the request's last KV block
    attention: Term | None  # prefill attention over [lo, hi]; None when identically 0

    def blocks(self, c: int, block_size: int) -> int:
        """New KV blocks for ``c`` tokens (the evaluator's ``ceil((C+c)/bs) - ceil(C/bs)``)."""
        return 0 if c <= self.kv_slack else -(-(c - self.kv_slack) // block_size)


@dataclass(frozen=True)
class Formulation:
    """Everything an encoder needs; built by :func:`build` from a :class:`StepProblem`."""

    items: tuple[Item, ...]
    budget: int
    free_slots: int  # may be negative: then even the empty decision is infeasible
    kv_limit: int | None
    block_size: int
    objective: str
    target_ns: int
    tokens: Term  # F_tok over S in [0, s_max]
    batch: Term  # F_seq over b in [0, len(items)]
    decode_num: int  # decode attention = floor(decode_num * sum C_i z_i / decode_den)
    decode_den: int
    edges: tuple[tuple[Node, Node], ...]  # priority: (u, v) means v only if u

    @property
    def s_max(self) -> int:
        return self.tokens.hi

    @property
    def weighted_max(self) -> int:
        """An upper bound on the weighted tokens of any decision."""
        return sum(it.weight * it.hi for it in self.items)

    @property
    def decode_context_max(self) -> int:
        return sum(it.context for it in self.items if it.decode)

    def decode_value(self, context: int) -> int:
        return (self.decode_num * context) // self.decode_den

    def latency_range(self) -> tuple[int, int]:
        """Bounds on the step latency over all decisions (for big-M and domains)."""
        lo, hi = self.tokens.y_range
        blo, bhi = self.batch.y_range
        d = sorted((0, self.decode_value(self.decode_context_max)))
        alo = ahi = 0
        for it in self.items:
            if it.attention is not None:
                a, b = it.attention.y_range
                alo += min(a, 0)
                ahi += max(b, 0)
        return lo + blo + d[0] + alo, hi + bhi + d[1] + ahi


def build(problem: StepProblem) -> Formulation:
    """The integer program of ``problem``. Raises ``InputError`` if the priority rules are
    contradictory (a cycle)."""
    cfg = problem.config
    lat = problem.latency
    weights = problem.weights
    bs = cfg.block_size
    waiting = problem.waiting_ids
    items: list[Item] = []
    pre = lat.prefill
    zero_attention = pre.is_zero
    for k, r in enumerate(problem.requests):
        lo, hi = max(problem.lo(r), 1), problem.hi(r)
        att = None
        if not r.is_decode and not zero_attention:
            curve = pre.curve(r.computed_tokens, r.remaining_prompt)
            att = curve_term(f"attention[{r.id}]", curve, lo, hi)
            if att.constant == 0:
                att = None
        items.append(
            Item(
                index=k,
                id=r.id,
                decode=r.is_decode,
                running=r.id not in waiting,
                lo=lo,
                hi=hi,
                weight=weights[r.id],
                context=r.computed_tokens,
                kv_slack=(-r.computed_tokens) % bs,
                attention=att,
            )
        )
    s_max = min(cfg.max_num_scheduled_tokens, sum(it.hi for it in items))
    g = math.gcd(lat.decode_context_ps, 1000) or 1
    return Formulation(
        items=tuple(items),
        budget=cfg.max_num_scheduled_tokens,
        free_slots=cfg.max_num_running_reqs - len(problem.running),
        kv_limit=cfg.num_free_blocks,
        block_size=bs,
        objective=problem.objective,
        target_ns=problem.target_ns,
        tokens=curve_term("tokens", lat.tokens, 0, max(s_max, 0)),
        batch=curve_term("batch", lat.batch, 0, len(items)),
        decode_num=lat.decode_context_ps // g,
        decode_den=1000 // g,
        edges=tuple(priority_edges(problem)),
    )
