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

    for v in e.made:
        if v.name in e.bools and v.varValue is None and v.name not in e.only_if:
            v.setInitialValue(1)  # a literal only ever required

    def lit(v: Any) -> int:
        if v.varValue is None and v.name in e.only_if:
            v.setInitialValue(min((lit(u) for u in e.only_if[v.name]), default=1))
        return round(v.varValue)

    for v in e.made:
        if v.name in e.only_if:
            lit(v)
    ints = {v.name: v for v in e.made if v.varValue is None}
    for name, lo in _least(ints, enc.prob.constraints()).items():
        ints[name].setInitialValue(lo)


def _least(pending: dict[str, pulp.LpVariable], rows: list) -> dict[str, int]:
    """The least integer value of each pending variable (the KV block counts) that its bounds
    and its rows allow, every other variable set (one pass over the rows)."""
    least = {n: math.ceil(v.lowBound) if v.lowBound is not None else 0 for n, v in pending.items()}
    if not pending:
        return least
    for row in rows:
        mine = [(u, a) for u, a in row.items() if u.name in pending]
        if len(mine) != 1:
            continue
        v, a = mine[0]
        rest = row.constant + sum(c * (u.varValue or 0) for u, c in row.items() if u is not v)
        # a * v + rest (sense) 0
        if (row.sense == pulp.LpConstraintGE and a > 0) or (
            row.sense == pulp.LpConstraintLE and a < 0
        ):
            least[v.name] = max(least[v.name], math.ceil(-rest / a - 1e-9))
    return least
