"""PuLP (MILP) encoding of a :class:`~stepopt.formulation.spec.Formulation`.

Piecewise terms use the disaggregated form: per piece ``k`` a selector ``s_k``, the argument's
offset ``t_k = x - x0`` on that piece (``(a_k - x0) s_k <= t_k <= (b_k - x0) s_k``,
``sum (t_k + x0 s_k) = x``) and an integer offset ``u_k``
with ``0 <= dy t_k - dx u_k <= (dx - 1) s_k``; then ``y = sum (y0 s_k + u_k)``.
Each piece's constraint is written relative to its own ``x0`` and ``y0`` and the offsets stay
small, which keeps coefficients far from the magnitudes (ns times dx) where floating-point
tolerances could round a floor the wrong way. Its LP relaxation is the convex hull of each
piece, which also makes it tighter than big-M.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pulp

from stepopt.formulation.priority import Node
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
    # Setters of the auxiliary variables' start values, run in order once c and z have theirs.
    fills: list[Callable[[], None]] = field(default_factory=list)


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


def encode(form: Formulation, name: str = "step") -> MilpEncoding:
    """Variables and constraints of ``form`` (the objective is set by the solver)."""
    prob = pulp.LpProblem(name, pulp.LpMinimize)
    nm = _Names()
    fills: list[Callable[[], None]] = []
    items = form.items
    c: list = []
    z: list = []
    for it in items:
        zi = prob.add_variable(f"z{it.index}", cat=pulp.LpBinary)
        z.append(zi)
        if it.decode:
            c.append(zi)
        else:
            ci = prob.add_variable(f"c{it.index}", 0, it.hi, cat=pulp.LpInteger)
            prob += ci >= it.lo * zi
            prob += ci <= it.hi * zi
            c.append(ci)
    s_expr = pulp.lpSum(c)
    prob += s_expr <= form.s_max, "budget"  # s_max = min(budget, sum of hi)
    waiting = [z[it.index] for it in items if not it.running]
    if len(waiting) > form.free_slots:
        prob += pulp.lpSum(waiting) <= form.free_slots, "concurrency"

    if form.kv_limit is not None:
        bs = form.block_size
        blocks: list = []
        most = 0
        for it in items:
            top = it.blocks(it.hi, bs)
            if top == 0:
                continue
            most += top
            if it.decode:
                blocks.append(z[it.index])
            else:
                k = prob.add_variable(f"kv{it.index}", 0, top, cat=pulp.LpInteger)
                prob += bs * k >= c[it.index] - it.kv_slack
                fills.append(lambda k=k, it=it: k.setInitialValue(it.blocks(_int(c[it.index]), bs)))
                blocks.append(k)
        if most > form.kv_limit:
            prob += pulp.lpSum(blocks) <= form.kv_limit, "kv_capacity"

    _priority(prob, form, c, z, fills)

    b_expr = pulp.lpSum(z)
    terms: dict[str, Expr] = {
        "tokens": _term(prob, nm, form.tokens, s_expr, None, fills),
        "batch": _term(prob, nm, form.batch, b_expr, None, fills),
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
    latency = pulp.lpSum(terms.values())
    weighted = pulp.lpSum(it.weight * c[it.index] for it in items)
    enc = MilpEncoding(prob, form, c, z, latency, weighted, terms=terms, fills=fills)
    lo, hi = form.latency_range()
    if form.objective == "goodput":
        prob += latency <= form.target_ns, "latency_cap"
    else:
        dmax = max(abs(hi - form.target_ns), abs(lo - form.target_ns))
        dev = prob.add_variable("dev", 0, dmax)
        prob += dev >= latency - form.target_ns
        prob += dev >= form.target_ns - latency
        enc.deviation = dev
        fills.append(lambda: dev.setInitialValue(abs(round(latency.value()) - form.target_ns)))
    return enc


def _int(v: pulp.LpVariable | Expr) -> int:
    return round(v.value())


def set_start(enc: MilpEncoding, tokens: dict[str, int]) -> None:
    """Give every variable its value at the decision ``tokens`` (request id -> tokens), a
    start for the backends (warm start). A decision that breaks a rule gives a start that
    breaks a constraint, which the backends then ignore."""
    for it, ci, zi in zip(enc.form.items, enc.c, enc.z, strict=True):
        n = tokens.get(it.id, 0)
        zi.setInitialValue(int(n > 0))
        if ci is not zi:
            ci.setInitialValue(n)
    for fill in enc.fills:
        fill()


def _priority(
    prob: pulp.LpProblem, form: Formulation, c: list, z: list, fills: list[Callable[[], None]]
) -> None:
    lits: dict[Node, pulp.LpVariable] = {}

    def lit(node: Node) -> pulp.LpVariable:
        kind, ref = node
        if kind == "sched":
            return z[ref]
        if node not in lits:
            v = prob.add_variable(f"{kind}_{ref}", cat=pulp.LpBinary)
            if kind == "full":
                prob.addConstraint(c[ref] >= form.items[ref].hi * v)
            lits[node] = v
        return lits[node]

    for u, v in form.edges:
        prob.addConstraint(lit(v) <= lit(u))
    fills.append(lambda: _start_lits(form, c, lits))


def _start_lits(form: Formulation, c: list, lits: dict[Node, pulp.LpVariable]) -> None:
    """A ``full`` literal is true when its request gets all of ``hi``; an ``all`` one when
    every prerequisite is true (in topological order: the edges may chain them)."""
    for (kind, ref), v in lits.items():
        if kind == "full":
            v.setInitialValue(int(round(c[ref].value()) >= form.items[ref].hi))
    preds: dict[Node, list[Node]] = {}
    for u, v in form.edges:
        preds.setdefault(v, []).append(u)

    def val(node: Node) -> int:
        kind, ref = node
        if kind == "sched":
            return int(round(c[ref].value()) > 0)
        if kind == "all" and lits[node].varValue is None:
            lits[node].setInitialValue(min((val(u) for u in preds.get(node, [])), default=1))
        return round(lits[node].varValue)

    for node, v in lits.items():
        v.varValue = None if node[0] == "all" else v.varValue
    for node in lits:
        val(node)
