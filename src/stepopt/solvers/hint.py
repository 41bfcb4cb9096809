"""A quick strict-priority greedy decision, used as a starting solution (hint) by CP-SAT.

Decodes first, then running prefills, then waiting requests in admission order, each as many
tokens as budget, KV and the objective allow; the last request's chunk is the one that brings
the latency closest to the target (``target``) or the largest under it (``goodput``). It
satisfies the strict rules, hence also the weighted ones; it is checked by the evaluator
before use. Incremental latency: O(requests + log chunk) model evaluations.
"""

from __future__ import annotations

from collections.abc import Callable

from stepopt.evaluate import evaluate
from stepopt.latency.step import step_latency
from stepopt.model import Decision, StepProblem


def greedy_hint(problem: StepProblem) -> Decision | None:
    cfg = problem.config
    lat = problem.latency
    bs = cfg.block_size
    target = problem.target_ns
    goodput = problem.objective == "goodput"
    budget = cfg.max_num_scheduled_tokens
    kv_left = cfg.num_free_blocks
    slots = cfg.max_num_running_reqs - len(problem.running)
    if slots < 0:
        return None
    tokens: dict[str, int] = {}
    s = b = ctx = att = 0

    fast = step_latency(lat)
    latency, attention = fast.total, fast.attention

    for r in problem.running_decodes:
        if budget - s < 1 or (kv_left is not None and r.computed_tokens % bs == 0 and kv_left < 1):
            return _checked(problem, tokens)
        tokens[r.id] = 1
        s, b, ctx = s + 1, b + 1, ctx + r.computed_tokens
        if kv_left is not None and r.computed_tokens % bs == 0:
            kv_left -= 1
    if goodput and latency(s, b, ctx, att) > target:
        return None
    queue = list(problem.running_prefills) + list(problem.waiting_order)
    n_run = len(problem.running_prefills)
    for k, r in enumerate(queue):
        if k >= n_run and slots <= 0:
            break
        lo, hi = problem.lo(r), problem.hi(r)
        slack = (-r.computed_tokens) % bs
        top = min(hi, budget - s)
        if kv_left is not None:
            top = min(top, slack + kv_left * bs)
        if top < lo:
            break

        def at(c: int, r=r, s=s, b=b, att=att) -> int:
            a = attention(c, r.computed_tokens, r.remaining_prompt)
            return latency(s + c, b + 1, ctx, att + a)

        if not (top == hi and at(top) <= target):
            c = _last_chunk(at, lo, top, latency(s, b, ctx, att), target, goodput)
            if c:
                tokens[r.id] = c
            break
        c = top
        tokens[r.id] = c
        s, b = s + c, b + 1
        att += attention(c, r.computed_tokens, r.remaining_prompt)
        if kv_left is not None:
            kv_left -= problem.new_blocks(r, c)
        if k >= n_run:
            slots -= 1
        elif c < hi:
            break  # strict: nobody is admitted while a running prefill is short
    return _checked(problem, tokens)


def _last_chunk(
    at: Callable[[int], int], lo: int, top: int, now: int, target: int, goodput: bool
) -> int:
    """The chunk of the request that does not fit in full: the largest ``c`` in [lo, top]
    with L(c) <= T (bisection; the curve is mostly rising), or with ``target`` the one just
    above when it lands closer; 0 when even ``lo`` busts the target and does not help."""
    if at(lo) > target:
        return lo if not goodput and abs(at(lo) - target) < abs(now - target) else 0
    a_, z_ = lo, top
    while a_ < z_:
        mid = (a_ + z_ + 1) // 2
        if at(mid) <= target:
            a_ = mid
        else:
            z_ = mid - 1
    c = a_
    if not goodput and c < top and abs(at(c + 1) - target) < abs(at(c) - target):
        c += 1
    return c


def _checked(problem: StepProblem, tokens: dict[str, int]) -> Decision | None:
    dec = Decision.of(tokens)
    return dec if evaluate(problem, dec).feasible else None
