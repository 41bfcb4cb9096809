"""PuLP (MILP) encoding of a :class:`~stepopt.formulation.spec.Formulation`.

Piecewise terms use the disaggregated form: per piece ``k`` a selector ``s_k``, the argument's
offset ``t_k = x - x0`` on that piece (``(a_k - x0) s_k <= t_k <= (b_k - x0) s_k``,
``sum (t_k + x0 s_k) = x``) and an integer offset ``u_k``
with ``0 <= dy t_k - dx u_k <= (dx - 1) s_k``; then ``y = sum (y0 s_k + u_k)``.
Each piece's constraint is written relative to its own ``x0`` and ``y0`` and the offsets stay
small, which keeps coefficients far from the magnitudes (ns times dx) where floating-point
tolerances could round a floor the wrong way. Its LP relaxation is the convex hull of each
piece, which also makes it tighter than big-M. The rules come from :mod:`stepopt.constraints`
through :class:`MilpEncoder`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulp

from stepopt.constraints import FAMILIES
from stepopt.formulation.spec import Formulation, Term

Expr = pulp.LpAffineExpression


@dataclass
class MilpEncoding:
    prob: pulp.LpProblem
    form: Formulation
    c: list[pulp.LpVariable]
    z: list[pulp.LpVariable]
    latency: Expr
    weighted: Expr
    deviation: pulp.LpVariable | None = None
    terms: dict[str, Expr] = field(default_factory=dict)
    # For start values (:mod:`~stepopt.formulation.milp_start`): setters of the latency terms'
    # variables, run in order once c and z have theirs, and the families' variables.
    fills: list[Callable[[], None]] = field(default_factory=list)
    encoder: MilpEncoder | None = None


class _Names:
    """Short unique names: PuLP writes them into LP/MPS files."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"


def _term(
    prob: pulp.LpProblem,
    name: _Names,
    term: Term,
    x: Expr,
    active: pulp.LpVariable | None,
    fills: list[Callable[[], None]],
) -> Expr:
    const = term.constant
    if const is not None:
        return pulp.LpAffineExpression(const if active is None else {active: const})
    pieces = term.pieces
    if len(pieces) == 1 and active is None:
        p = pieces[0]
        ulo, uhi = sorted((p.value(p.a) - p.y0, p.value(p.b) - p.y0))
        u = prob.add_variable(name("u"), ulo, uhi, cat=pulp.LpInteger)
        e = p.dy * x - p.dx * u
        prob += e >= p.dy * p.x0
        prob += e <= p.dy * p.x0 + p.dx - 1
        fills.append(lambda: u.setInitialValue(p.value(round(x.value())) - p.y0))
        return u + p.y0
    sel = []
    xs = []
    trios = []
    y = pulp.LpAffineExpression()
    for p in pieces:
        s = active if len(pieces) == 1 else prob.add_variable(name("s"), cat=pulp.LpBinary)
        # t = x - x0 on the selected piece, 0 elsewhere: every row stays relative to x0.
        t = prob.add_variable(name("t"), min(0, p.a - p.x0), max(0, p.b - p.x0))
        ulo, uhi = sorted((p.value(p.a) - p.y0, p.value(p.b) - p.y0))
        u = prob.add_variable(name("u"), min(0, ulo), max(0, uhi), cat=pulp.LpInteger)
        prob += t >= (p.a - p.x0) * s
        prob += t <= (p.b - p.x0) * s
        e = p.dy * t - p.dx * u
        prob += e >= 0
        prob += e <= (p.dx - 1) * s
        y += p.y0 * s + u
        sel.append(s)
        xs.append(t + p.x0 * s)
        trios.append((p, s, t, u))
    if len(pieces) > 1:
        prob += pulp.lpSum(sel) == (1 if active is None else active)
    prob += pulp.lpSum(xs) == x
    fills.append(lambda: _start_pieces(trios, round(x.value()), active))
    return y


class MilpEncoder:
    """The :class:`~stepopt.constraints.Encoder` of PuLP: the constraint families add their
    rows through it (named rows keep their names in LP/MPS files)."""

    def __init__(self, prob: pulp.LpProblem, c: list, z: list, tokens: Expr) -> None:
        self.prob, self.c, self.z, self.tokens = prob, c, z, tokens
        self.latency: Expr = pulp.LpAffineExpression()
        # what start values need to know of the families' variables
        self.made: list[pulp.LpVariable] = []
        self.at_least: dict[str, tuple[Any, int]] = {}
        self.only_if: dict[str, list[Any]] = {}
        self.bools: set[str] = set()

    def add(self, constraint: Any, name: str = "") -> None:
        if name:
            self.prob += constraint, name
        else:
            self.prob += constraint

    def int_var(self, lo: int, hi: int, name: str) -> pulp.LpVariable:
        self.made.append(self.prob.add_variable(name, lo, hi, cat=pulp.LpInteger))
        return self.made[-1]

    def bool_var(self, name: str) -> pulp.LpVariable:
        self.made.append(self.prob.add_variable(name, cat=pulp.LpBinary))
        self.bools.add(name)
        return self.made[-1]

    def total(self, exprs: Sequence[Any]) -> Expr:
        return pulp.lpSum(exprs)

    def at_least_if(self, expr: Any, bound: int, literal: Any) -> None:
        self.prob.addConstraint(expr >= bound * literal)  # expr >= 0, so off when literal = 0
        self.at_least[literal.name] = (expr, bound)

    def only_if_all(self, literal: Any, prerequisites: Sequence[Any]) -> None:
        for u in prerequisites:
            self.prob.addConstraint(literal <= u)
        self.only_if[literal.name] = list(prerequisites)


def encode(form: Formulation, name: str = "step") -> MilpEncoding:
    """Variables and constraints of ``form`` (the objective is set by the solver)."""
    prob = pulp.LpProblem(name, pulp.LpMinimize)
    items = form.items
    c: list = []
    z: list = []
    for it in items:
        zi = prob.add_variable(f"z{it.index}", cat=pulp.LpBinary)
        z.append(zi)
        if it.decode:
            c.append(zi)
        else:  # the phase family links c and z
            c.append(prob.add_variable(f"c{it.index}", 0, it.hi, cat=pulp.LpInteger))
    s_expr = pulp.lpSum(c)
    enc = MilpEncoder(prob, c, z, s_expr)
    fills: list[Callable[[], None]] = []
    terms = _latency_terms(prob, _Names(), form, s_expr, c, z, fills)
    enc.latency = latency = pulp.lpSum(terms.values())
    for family in FAMILIES:
        family.encode(enc, form)
    weighted = pulp.lpSum(it.weight * c[it.index] for it in items)
    out = MilpEncoding(prob, form, c, z, latency, weighted, terms=terms, fills=fills, encoder=enc)
    if form.objective == "target":
        lo, hi = form.latency_range()
        dmax = max(abs(hi - form.target_ns), abs(lo - form.target_ns))
        dev = prob.add_variable("dev", 0, dmax)
        prob += dev >= latency - form.target_ns
        prob += dev >= form.target_ns - latency
        out.deviation = dev
        fills.append(lambda: dev.setInitialValue(abs(round(latency.value()) - form.target_ns)))
    return out


def _latency_terms(
    prob: pulp.LpProblem, nm: _Names, form: Formulation, s_expr, c, z, fills
) -> dict:
    """One expression per latency term (the model's formula, exactly)."""
    items = form.items
    terms: dict[str, Expr] = {
        "tokens": _term(prob, nm, form.tokens, s_expr, None, fills),
        "batch": _term(prob, nm, form.batch, pulp.lpSum(z), None, fills),
    }
    decodes = [it for it in items if it.decode and it.context]
    if decodes and form.decode_num:
        q = pulp.lpSum(it.context * z[it.index] for it in decodes)
        if form.decode_den == 1:
            terms["decode_attention"] = form.decode_num * q
        else:
            top = form.decode_value(form.decode_context_max)
            y = prob.add_variable("ydec", min(0, top), max(0, top), cat=pulp.LpInteger)
            e = form.decode_num * q - form.decode_den * y
            prob += e >= 0
            prob += e <= form.decode_den - 1
            fills.append(lambda: y.setInitialValue(form.decode_value(round(q.value()))))
            terms["decode_attention"] = pulp.LpAffineExpression(y)
    att = [
        _term(prob, nm, it.attention, c[it.index], z[it.index], fills)
        for it in items
        if it.attention
    ]
    if att:
        terms["prefill_attention"] = pulp.lpSum(att)
    return terms


def _start_pieces(trios: list, x: int, active: pulp.LpVariable | None) -> None:
    """Start values of a piecewise term at ``x``: the first piece holding it selected."""
    on = active is None or round(active.value()) == 1
    for p, s, t, u in trios:
        sel = on and p.a <= x <= p.b
        on = on and not sel
        if s is not active:
            s.setInitialValue(int(sel))
        t.setInitialValue(x - p.x0 if sel else 0)
        u.setInitialValue(p.value(x) - p.y0 if sel else 0)
