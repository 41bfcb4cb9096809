"""KV capacity: the new KV blocks of the step, ``ceil((C + c) / bs) - ceil(C / bs)`` summed
(``StepProblem.new_blocks``), fit ``num_free_blocks`` plus the blocks preemption frees."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stepopt.constraints.base import DecisionView, Encoder, Rule, Violation

if TYPE_CHECKING:
    from stepopt.formulation.spec import Formulation

RULES = (Rule.KV_CAPACITY,)
# What the rule asks of a decision, in the words of the problem's fields (test reports).
HINTS = {
    Rule.KV_CAPACITY: "new KV blocks (ceil((computed + c) / block_size) - ceil(computed / "
    "block_size), summed) fit in config.num_free_blocks",
}


def check(view: DecisionView) -> list[Violation]:
    free = view.problem.config.num_free_blocks
    if free is None or view.new_blocks <= free + view.freed_blocks:
        return []
    freed = view.freed_blocks
    extra = f" + {freed} freed by preemption" if freed else ""
    return [
        Violation(
            Rule.KV_CAPACITY,
            f"{view.new_blocks} new KV blocks needed, num_free_blocks={free}{extra}",
        )
    ]


def encode(enc: Encoder, form: Formulation) -> None:
    if form.kv_limit is None:
        return
    bs = form.block_size
    blocks = []
    most = 0
    for it in form.items:
        top = it.blocks(it.hi, bs)
        if top == 0:
            continue
        most += top
        if it.decode:  # one token: a new block exactly when the last one is full
            blocks.append(enc.z[it.index])
        else:
            k = enc.int_var(0, top, f"kv{it.index}")
            enc.add(bs * k >= enc.c[it.index] - it.kv_slack)
            blocks.append(k)
    if most > form.kv_limit:
        enc.add(enc.total(blocks) <= form.kv_limit, "kv_capacity")
