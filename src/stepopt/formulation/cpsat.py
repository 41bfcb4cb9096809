"""CP-SAT encoding of a :class:`~stepopt.formulation.spec.Formulation`.

Exact integers throughout: the floor of every latency piece is two enforced linear
inequalities, so ``latency`` equals the evaluator's value for the same decision. The rules
come from :mod:`stepopt.constraints` through :class:`CpsatEncoder`.
The objective is left to the solver (single weighted objective or two phases).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ortools.sat.python import cp_model

from stepopt.constraints import FAMILIES
from stepopt.formulation.spec import Formulation, Term

LinearExpr = cp_model.LinearExprT


@dataclass
class CpsatEncoding:
    model: cp_model.CpModel
    form: Formulation
    c: list[cp_model.IntVar]  # tokens per item (the z literal itself for a decode)
    z: list[cp_model.IntVar]  # scheduled per item
    latency: LinearExpr
    weighted: LinearExpr
    deviation: cp_model.IntVar | None = None  # |L - T| for the target objective
    terms: dict[str, LinearExpr] = field(default_factory=dict)


def _term(
    m: cp_model.CpModel, term: Term, x: LinearExpr, active: cp_model.IntVar | None
) -> LinearExpr:
    """``y = term(x)`` when ``active`` (always if None), else ``y = 0``; returns ``y``."""
    const = term.constant
    if const is not None:
        return const if active is None else const * active
    lo, hi = term.y_range
    if active is not None:
        lo, hi = min(lo, 0), max(hi, 0)
    y = m.new_int_var(lo, hi, "")
    if active is not None:
        m.add(y == 0).only_enforce_if(~active)
    pieces = term.pieces
    if len(pieces) == 1:
        sel = [active]
    else:
        sel = [m.new_bool_var("") for _ in pieces]
        if active is None:
            m.add_exactly_one(sel)
        else:
            m.add(cp_model.LinearExpr.sum(sel) == active)
    for p, s in zip(pieces, sel, strict=True):
        # 0 <= dy*(x - x0) - dx*(y - y0) <= dx - 1  and  a <= x <= b on the selected piece.
        base = p.dy * p.x0 - p.dx * p.y0
        floor_ct = m.add_linear_constraint(p.dy * x - p.dx * y, base, base + p.dx - 1)
        if s is not None:
            floor_ct.only_enforce_if(s)
            if len(pieces) > 1:
                m.add_linear_constraint(x, p.a, p.b).only_enforce_if(s)
    return y


def _term_hull(
    m: cp_model.CpModel, term: Term, x: LinearExpr, active: cp_model.IntVar | None
) -> LinearExpr:
    """Like :func:`_term` with the disaggregated (convex hull per piece) form of the MILP
    encoding: plain linear rows, so the LP relaxation sees each piece exactly."""
    const = term.constant
    if const is not None:
        return const if active is None else const * active
    pieces = term.pieces
    if len(pieces) == 1:
        return _term(m, term, x, active)
    sel = [m.new_bool_var("") for _ in pieces]
    m.add(cp_model.LinearExpr.sum(sel) == (1 if active is None else active))
    xs: list = []
    ys: list = []
    for p, sp in zip(pieces, sel, strict=True):
        t = m.new_int_var(min(0, p.a - p.x0), max(0, p.b - p.x0), "")
        ulo, uhi = sorted((p.value(p.a) - p.y0, p.value(p.b) - p.y0))
        u = m.new_int_var(min(0, ulo), max(0, uhi), "")
        m.add(t >= (p.a - p.x0) * sp)
        m.add(t <= (p.b - p.x0) * sp)
        m.add(p.dy * t - p.dx * u >= 0)
        m.add(p.dy * t - p.dx * u <= (p.dx - 1) * sp)
        xs.append(t + p.x0 * sp)
        ys.append(u + p.y0 * sp)
    m.add(cp_model.LinearExpr.sum(xs) == x)
    return cp_model.LinearExpr.sum(ys)


class CpsatEncoder:
    """The :class:`~stepopt.constraints.Encoder` of CP-SAT: the constraint families add their
    rows through it."""

    def __init__(self, m: cp_model.CpModel, c: list, z: list, tokens: LinearExpr) -> None:
        self.m, self.c, self.z, self.tokens = m, c, z, tokens
        self.latency: LinearExpr = 0

    def add(self, constraint: Any, name: str = "") -> None:
        self.m.add(constraint)

    def int_var(self, lo: int, hi: int, name: str) -> cp_model.IntVar:
        return self.m.new_int_var(lo, hi, "")

    def bool_var(self, name: str) -> cp_model.IntVar:
        return self.m.new_bool_var("")

    def total(self, exprs: Sequence[Any]) -> LinearExpr:
        return cp_model.LinearExpr.sum(list(exprs))

    def at_least_if(self, expr: Any, bound: int, literal: Any) -> None:
        self.m.add(expr >= bound).only_enforce_if(literal)

    def only_if_all(self, literal: Any, prerequisites: Sequence[Any]) -> None:
        if len(prerequisites) == 1:
            self.m.add_implication(literal, prerequisites[0])
        else:
            self.m.add_bool_and(list(prerequisites)).only_enforce_if(literal)


def encode(form: Formulation, hull: bool = False) -> CpsatEncoding:
    """Variables and constraints of ``form`` (no objective). ``hull`` selects the
    disaggregated piece encoding instead of enforced constraints."""
    m = cp_model.CpModel()
    items = form.items
    c: list = []
    z: list = []
    for it in items:
        zi = m.new_bool_var("")
        z.append(zi)
        if it.decode:
            c.append(zi)
        else:  # the phase family links c and z; the domain already says {0} or [lo, hi]
            domain = cp_model.Domain.from_intervals([[0, 0], [it.lo, it.hi]])
            c.append(m.new_int_var_from_domain(domain, ""))
    s = m.new_int_var(0, form.s_max, "S")
    m.add(s == cp_model.LinearExpr.sum(c))
    enc = CpsatEncoder(m, c, z, s)
    terms = _latency_terms(m, form, s, c, z, _term_hull if hull else _term)
    enc.latency = latency = cp_model.LinearExpr.sum(list(terms.values()))
    for family in FAMILIES:
        family.encode(enc, form)
    weighted = cp_model.LinearExpr.weighted_sum(c, [it.weight for it in items])
    out = CpsatEncoding(m, form, c, z, latency, weighted, terms=terms)
    if form.objective == "target":
        lo, hi = form.latency_range()
        dmax = max(abs(hi - form.target_ns), abs(lo - form.target_ns))
        dev = m.new_int_var(0, dmax, "deviation")
        m.add(dev >= latency - form.target_ns)
        m.add(dev >= form.target_ns - latency)
        out.deviation = dev
    return out


def _latency_terms(m: cp_model.CpModel, form: Formulation, s, c, z, term_fn) -> dict:
    """One integer expression per latency term (the model's formula, exactly)."""
    items = form.items
    b = m.new_int_var(0, len(items), "b")
    m.add(b == cp_model.LinearExpr.sum(z))
    terms: dict[str, LinearExpr] = {
        "tokens": term_fn(m, form.tokens, s, None),
        "batch": term_fn(m, form.batch, b, None),
    }
    decodes = [it for it in items if it.decode and it.context]
    if decodes and form.decode_num:
        q = cp_model.LinearExpr.weighted_sum(
            [z[it.index] for it in decodes], [it.context for it in decodes]
        )
        if form.decode_den == 1:
            terms["decode_attention"] = form.decode_num * q
        else:
            top = form.decode_value(form.decode_context_max)
            y = m.new_int_var(min(0, top), max(0, top), "decode_attention")
            m.add_linear_constraint(
                form.decode_num * q - form.decode_den * y, 0, form.decode_den - 1
            )
            terms["decode_attention"] = y
    att = [term_fn(m, it.attention, c[it.index], z[it.index]) for it in items if it.attention]
    if att:
        terms["prefill_attention"] = cp_model.LinearExpr.sum(att)
    return terms
