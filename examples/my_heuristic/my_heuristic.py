"""A team's own scheduling heuristic: decode first, then shortest prompt first.

Every running decode gets its token; then prefill chunks go to the requests with the fewest
prompt tokens left, as long as the predicted step latency stays within the target. Strict
priority mode keeps stepopt's rules (running requests before waiting ones, waiting ones in
``problem.waiting_order``); weighted mode lets short waiting prompts jump the queue.

Installed as a package, it would register itself by entry point (see pyproject.toml next to
this file) and be accepted by name: ``stepopt heuristic problem.json --name decode-first-spf``.
"""

from __future__ import annotations

from stepopt.model import Decision, Request, StepProblem


def _blocks(r: Request, c: int, block_size: int) -> int:
    """New KV blocks ``r`` needs for ``c`` more tokens."""
    return -(-(r.computed_tokens + c) // block_size) - -(-r.computed_tokens // block_size)


def decode_first_spf(problem: StepProblem) -> Decision:
    cfg = problem.config
    latency = problem.latency
    target = problem.target_ns
    tokens: dict[str, int] = {}
    budget = cfg.max_num_scheduled_tokens
    blocks = cfg.num_free_blocks if cfg.num_free_blocks is not None else 1 << 62

    def fits(r: Request, c: int) -> bool:
        if c > budget or _blocks(r, c, cfg.block_size) > blocks:
            return False
        return latency.predict_ns(problem, {**tokens, r.id: c}) <= target

    def take(r: Request, c: int) -> None:
        nonlocal budget, blocks
        tokens[r.id] = c
        budget -= c
        blocks -= _blocks(r, c, cfg.block_size)

    # 1. Decodes first: a prefill token is allowed only once every decode has its token.
    for r in problem.running_decodes:
        if fits(r, 1):
            take(r, 1)
    if len(tokens) < len(problem.running_decodes):
        return Decision.of(tokens)

    # 2. Prefill chunks, shortest remaining prompt first.
    def chunk(r: Request) -> int:
        """The largest chunk of ``r`` that fits (0 if not even its smallest one does)."""
        lo, hi = problem.lo(r), min(problem.hi(r), budget)
        if hi < lo or not fits(r, lo):
            return 0
        if fits(r, hi):
            return hi
        while hi - lo > 1:  # latency grows with the chunk: bisect for the largest that fits
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(r, mid) else (lo, mid)
        return lo

    def spf(reqs: tuple[Request, ...]) -> list[Request]:
        return sorted(reqs, key=lambda r: (r.remaining_prompt, r.priority, r.arrival_time, r.id))

    running = spf(problem.running_prefills)
    if problem.priority_mode == "strict":
        for r in running:
            if (c := chunk(r)) > 0:
                take(r, c)
        if any(tokens.get(r.id, 0) < problem.hi(r) for r in problem.running):
            return Decision.of(tokens)  # waiting requests only after every full chunk
        waiting = list(problem.waiting_order)
    else:
        waiting = spf(problem.waiting)
        for r in running:
            if (c := chunk(r)) > 0:
                take(r, c)

    # 3. Admissions, within the free slots.
    admitted = 0
    for r in waiting:
        if admitted == problem.free_slots:
            break
        c = chunk(r)
        if c == 0:
            if problem.priority_mode == "strict":
                break  # strict: waiting requests are admitted as a prefix of the order
            continue
        take(r, c)
        admitted += 1
    return Decision.of(tokens)
