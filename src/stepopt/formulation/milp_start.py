"""Start values of every MILP variable at a decision (a warm start for CBC and HiGHS).

``c`` and ``z`` come from the decision; the latency terms' variables from the setters the
encoding recorded (the selected piece, its offsets, |L - T|); the constraint families'
variables from what the encoder recorded of them: a literal ``expr >= bound * v`` is true when
``expr`` reaches the bound, one that holds only if all its prerequisites hold is their
minimum, one only ever required is true, and an integer (the KV blocks) takes the least value
its rows allow. A decision that
breaks a rule gives a start that breaks a row: the backends then ignore it.
"""

from __future__ import annotations

import math
from typing import Any

import pulp

from stepopt.formulation.milp import MilpEncoding


def set_start(enc: MilpEncoding, tokens: dict[str, int]) -> None:
    """Give every variable of ``enc`` its value at the decision ``tokens`` (id -> tokens)."""
    for it, ci, zi in zip(enc.form.items, enc.c, enc.z, strict=True):
        n = tokens.get(it.id, 0)
        zi.setInitialValue(int(n > 0))
        if ci is not zi:
            ci.setInitialValue(n)
    made = enc.encoder.made if enc.encoder is not None else []
    for v in made:
        v.varValue = None
    for fill in enc.fills:
        fill()
    if enc.encoder is not None:
        _families(enc)


def _families(enc: MilpEncoding) -> None:
    e = enc.encoder
    assert e is not None
    for v in e.made:
        if v.name in e.at_least:
            expr, bound = e.at_least[v.name]
            v.setInitialValue(int(round(pulp.value(expr)) >= bound))

    def lit(v: Any) -> int:
        if v.varValue is None and v.name in e.only_if:
            v.setInitialValue(min((lit(u) for u in e.only_if[v.name]), default=1))
        return round(v.varValue)

    for v in e.made:
        if v.name in e.only_if:
            lit(v)
    rows = list(enc.prob.constraints.values())
    for v in e.made:
        if v.varValue is None:  # a literal only ever required (true), or a KV block count
            v.setInitialValue(1 if v.name in e.bools else _least(v, rows))


def _least(v: pulp.LpVariable, rows: list) -> int:
    """The least integer value of ``v`` its bound and its rows (every other variable set)
    allow."""
    lo = math.ceil(v.lowBound) if v.lowBound is not None else 0
    for row in rows:
        a = row.get(v, 0)
        if not a:
            continue
        rest = row.constant + sum(coef * (u.varValue or 0) for u, coef in row.items() if u is not v)
        # a * v + rest (sense) 0
        if (row.sense == pulp.LpConstraintGE and a > 0) or (
            row.sense == pulp.LpConstraintLE and a < 0
        ):
            lo = max(lo, math.ceil(-rest / a - 1e-9))
    return lo
