"""Per-request relaxations of a window: the SLOs no plan can meet, whatever the others do.

A request's prefill steps each take at least the latency of a step holding only its chunk
(the token curve's minimum over ``[chunk, budget]`` -- the curve need not be monotone -- plus
the batch curve's minimum over ``[1, n]``; the decode-context term is never negative), and its
first step starts no earlier than its arrival and the window start. The cheapest way to cut its
remaining prompt into chunks (a small dynamic programme over token counts, chunk bounds relaxed
to ``[1, cap]``) gives the earliest time its first token can come; past its TTFT deadline, or
with more chunks than steps, its SLOs cannot be met. A request whose last token before the
window is already more than the TBT bound before the window start cannot meet them either.

The model fixes these requests' ``met`` to false, and the SLO level's bound drops by their
weight before any search: a hint that meets every other SLO is proven optimal at once.
"""

from __future__ import annotations

import itertools

import numpy as np

from stepopt.formulation.spec import curve_term
from stepopt.horizon.problem import WindowProblem, WindowRequest


def prefill_cap(w: WindowProblem) -> int:
    """The most prompt tokens one request can compute in a step."""
    cfg = w.config
    B, thr = cfg.max_num_scheduled_tokens, cfg.long_prefill_token_threshold
    return min(B, thr) if thr > 0 else B


def chunk_floor_ns(w: WindowProblem) -> np.ndarray:
    """``f[c]``: a lower bound on any step's latency in which one request computes ``c``
    tokens (``c = 1..cap``; ``f[0] = 0``)."""
    lat, B = w.latency, w.config.max_num_scheduled_tokens
    cap = prefill_cap(w)
    tok = np.array([lat.tokens(x) for x in range(B + 1)], dtype=np.int64)
    suffix_min = np.minimum.accumulate(tok[::-1])[::-1]
    bat = min(lat.batch(b) for b in range(1, max(len(w.requests), 1) + 1))
    f = suffix_min[: cap + 1] + bat
    f[0] = 0
    return f


def prefill_floor_ns(f: np.ndarray, top: int) -> np.ndarray:
    """``dp[x]``: the least total latency of steps computing ``x`` prompt tokens in chunks of
    ``1..cap`` (``f`` from :func:`chunk_floor_ns`), for ``x = 0..top``."""
    cap = len(f) - 1
    dp = np.zeros(top + 1, dtype=np.int64)
    costs = f[1:]  # costs[c - 1] = f[c]
    for x in range(1, top + 1):
        c = min(cap, x)
        # dp[x - 1], dp[x - 2], ..., dp[x - c] with chunk 1, 2, ..., c
        dp[x] = int(np.min(dp[x - c : x][::-1] + costs[:c]))
    return dp


def hopeless(w: WindowProblem) -> dict[str, str]:
    """The requests whose SLOs no plan of ``w`` can meet, each with the reason."""
    out: dict[str, str] = {}
    pending = [
        r for r in w.requests if r.emitted_tokens == 0 and r.computed_tokens < r.prompt_tokens
    ]
    cap = prefill_cap(w)
    dp = None
    if pending and cap > 0:
        top = max(r.prompt_tokens - r.computed_tokens for r in pending)
        dp = prefill_floor_ns(chunk_floor_ns(w), top)
    for r in w.requests:
        why = _why(w, r, cap, dp)
        if why:
            out[r.id] = why
    return out


def _why(w: WindowProblem, r: WindowRequest, cap: int, dp: np.ndarray | None) -> str | None:
    if r.emitted_tokens > 0:
        if r.emitted_tokens < r.output_tokens and w.start_ns - r.last_token_ns > w.tbt_ns:
            return "its last token is already more than the TBT bound before the window start"
        return None
    rem = r.prompt_tokens - r.computed_tokens
    if rem <= 0:
        return None
    if cap <= 0 or -(-rem // cap) > w.steps:
        return f"its prompt needs more than {w.steps} steps"
    earliest = max(w.start_ns, r.arrival_ns) + int(dp[rem])
    deadline = r.arrival_ns + w.ttft_ns(r)
    if earliest > deadline:
        return f"its first token cannot come before {earliest} ns (deadline {deadline} ns)"
    return None


def latency_ceiling(w: WindowProblem) -> int:
    """No step of ``w`` takes longer: the curves' maxima and every context decoding."""
    lat, B = w.latency, w.config.max_num_scheduled_tokens
    tok = curve_term("tokens", lat.tokens, 0, B)
    bat = curve_term("batch", lat.batch, 0, max(len(w.requests), 1))
    ctx = sum(r.final_computed for r in w.requests)
    return tok.yhi + bat.yhi + max(0, lat.decode_context_ps * ctx // 1000)


def clock_ceiling(w: WindowProblem, lmax: int) -> list[int]:
    """``T[k]``: no plan's clock passes ``T[k]`` after ``k`` steps (``k = 0..K``). A busy step
    lasts at most ``lmax``; an empty one jumps to the next arrival after its start, which is
    at most the next arrival after ``T[k-1]`` when the start is at most ``T[k-1]``."""
    arrivals = sorted({r.arrival_ns for r in w.requests})
    T = [w.start_ns]
    for _ in range(w.steps):
        T.append(max(T[-1] + lmax, _next_arrival(arrivals, T[-1])))
    return T


def _next_arrival(arrivals: list[int], t: int) -> int:
    return next((u for u in arrivals if u > t), t)


def work_clock_ceiling(
    w: WindowProblem, rounds: int = 4, step_cap: int | None = None
) -> tuple[list[int], list[list[int]]]:
    """A tighter clock ceiling, with the progress ceilings it implies.

    The busy steps ``p+1..k`` after the last empty step ``p`` compute at most ``W[k]`` tokens
    (the progress ceilings, summed) and each lasts at most ``U(S) + batch max + context``,
    ``U`` the token curve's concave upper envelope, so together at most
    ``m * U(W / m) + ...`` (Jensen, ``m = k - p``); the empty step ``p`` ends by the next
    arrival after ``T[p-1]``. Progress ceilings depend on the clock (arrivals become visible)
    and the clock on them, so the two are refined in turn; each round is valid given the
    last. ``step_cap``: the clock of the plans whose every step lasts at most that long (a
    request that meets its TBT bound and is not finished allows no longer step)."""
    lat, B, K = w.latency, w.config.max_num_scheduled_tokens, w.steps
    env = _upper_envelope(lat.tokens, B)
    bat = max(lat.batch(b) for b in range(0, max(len(w.requests), 1) + 1))
    dps = max(0, lat.decode_context_ps)
    arrivals = sorted({r.arrival_ns for r in w.requests})
    clock = clock_ceiling(w, latency_ceiling(w))
    cap = step_cap
    if cap is not None:
        clock = [min(c, w.start_ns + k * cap) for k, c in enumerate(clock)]
    for _ in range(rounds):
        ub = [progress_ceiling(w, r, clock) for r in w.requests]
        done = [
            sum(u[k] - r.computed_tokens for u, r in zip(ub, w.requests, strict=True))
            for k in range(K + 1)
        ]
        # cum[k]: the decode-context terms of steps 1..k at most (step j reads X[j-1] of
        # the requests decoding then, which needs X[j-1] >= prompt)
        cum = [0]
        for k in range(1, K + 1):
            ctx = sum(
                u[k - 1] for u, r in zip(ub, w.requests, strict=True) if u[k - 1] >= r.prompt_tokens
            )
            cum.append(cum[-1] + dps * ctx // 1000)
        T = [w.start_ns]
        for k in range(1, K + 1):
            best = 0
            for p in range(0, k + 1):  # p = the last empty step (0: none)
                base = w.start_ns
                if p > 0:
                    # an empty step jumps to the first arrival after its start: past
                    # T[p-1] only to the first arrival after T[p-1], and only within the cap
                    base = max(T[p - 1], _next_arrival(arrivals, T[p - 1]))
                    if cap is not None and base - T[p - 1] > cap:
                        base = T[p - 1]
                m = k - p
                busy = 0
                if m > 0:
                    tokens = min(done[k], m * B)
                    busy = m * _envelope_at(env, tokens, m) + m * bat
                    busy += cum[k] - cum[p]
                    busy = busy if cap is None else min(busy, m * cap)
                best = max(best, base + busy)
            T.append(min(best, clock[k]))
        if clock == T:
            break
        clock = T
    return clock, [progress_ceiling(w, r, clock) for r in w.requests]


def _upper_envelope(curve, B: int) -> list[tuple[int, int]]:
    """The vertices of the concave upper envelope of ``curve`` on ``[0, B]``."""
    xs = sorted({0, B, *(x for x in curve.xs if 0 < x < B)})
    hull: list[tuple[int, int]] = []
    for x in xs:
        p = (x, curve(x))
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle point unless it lies strictly above the chord
            if (y2 - y1) * (p[0] - x1) <= (p[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(p)
    # nondecreasing (its running maximum, still concave): fewer tokens never take longer
    top = max(range(len(hull)), key=lambda j: hull[j][1])
    return hull[: top + 1] + ([(B, hull[top][1])] if top < len(hull) - 1 else [])


def _envelope_at(env: list[tuple[int, int]], tokens: int, m: int) -> int:
    """``ceil(U(tokens / m))`` for the envelope ``U`` (an upper bound, so rounded up)."""
    for (x1, y1), (x2, y2) in itertools.pairwise(env):
        if tokens <= x2 * m:
            # y1 + (y2 - y1) * (tokens / m - x1) / (x2 - x1), rounded up
            num = y1 * m * (x2 - x1) + (y2 - y1) * (tokens - x1 * m)
            return -(-num // (m * (x2 - x1)))
    return env[-1][1]


def progress_ceiling(w: WindowProblem, r: WindowRequest, clock: list[int]) -> list[int]:
    """The most computed tokens ``r`` can have after each step ``k = 0..K``: nothing before
    the first step whose start can reach its arrival, then at most ``cap`` prompt tokens a
    step and one token a step once the prompt is done."""
    cap, K = prefill_cap(w), w.steps
    C0, P, fin = r.computed_tokens, r.prompt_tokens, r.final_computed
    first = 1
    if not r.running and r.arrival_ns > w.start_ns:
        first = next((k for k in range(1, K + 1) if clock[k - 1] >= r.arrival_ns), K + 1)
    rem = max(0, P - C0)
    need = 0 if rem == 0 else -(-rem // max(cap, 1))
    out = [C0]
    for k in range(1, K + 1):
        j = k - first + 1  # steps in which r can be scheduled
        if j <= 0:
            out.append(C0)
        elif j < need:
            out.append(min(fin, C0 + j * cap))
        else:
            out.append(min(fin, max(C0, P) + (j - need)))
    return out


def tbt_conflicts(w: WindowProblem) -> tuple[list[tuple[int, int]], list[int], dict[int, int]]:
    """Pairs ``(i, j)`` of requests that no plan meets both: ``i`` has emitted and cannot
    finish before step ``h[i]``, so meeting its TBT bound caps every step up to ``h[i]`` at
    ``tbt`` and the clock at ``capped[k]``; ``j`` must be visible by step ``K - need + 1``
    to compute its prompt in time, and the capped clock does not reach its arrival by then.
    Returns the pairs, ``capped`` and ``h``."""
    K, cap = w.steps, prefill_cap(w)
    capped, _ = work_clock_ceiling(w, step_cap=w.tbt_ns)
    h = {
        i: min(K, r.final_computed - r.computed_tokens)
        for i, r in enumerate(w.requests)
        if r.emitted_tokens > 0 and r.emitted_tokens < r.output_tokens
    }
    pairs = []
    for j, r in enumerate(w.requests):
        rem = r.prompt_tokens - r.computed_tokens
        if r.emitted_tokens > 0 or rem <= 0 or cap <= 0 or r.arrival_ns <= w.start_ns:
            continue
        last = K - (-(-rem // cap))  # t[last] must reach the arrival
        if last < 0 or capped[last] >= r.arrival_ns:
            continue
        pairs.extend((i, j) for i, hi in h.items() if last <= hi)
    return pairs, capped, h
