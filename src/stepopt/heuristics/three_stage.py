"""The three-stage greedy of the original design (``three-stage``).

Stage 1 chooses a token budget ``S`` per batch size ``b`` by inverting the latency model at the
target; stages 2 and 3 fill that budget greedily (running requests, then waiting ones); the
best candidate by the active objective wins. docs/heuristics.md lists every choice the design
left open. The hot path works on plain integers: one pass over the running queue, a sort of
the waiting queue, prefix sums that stage 3 extends lazily (only as far as some budget can
reach), and bisection instead of scans; it never calls ``evaluate()``.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate, compress
from operator import attrgetter, ge, sub

from stepopt.errors import InputError
from stepopt.heuristics.base import register_heuristic
from stepopt.heuristics.candidate import StepCandidate
from stepopt.heuristics.decode_choice import (
    DecodeChoice,
    check_decode_params,
    decode_ids,
    overloaded_results,
)
from stepopt.heuristics.prefill_fallback import bisect_boundary, cheap_prefill_key
from stepopt.latency.step import step_latency, token_inverse
from stepopt.model import NS_PER_MS, Decision, StepProblem

# StepCandidate(...) without the Python-level __new__ (candidates are built in the hot loop).
_new = tuple.__new__

_WAITING_KEY = attrgetter("priority", "arrival_time", "id")  # == StepProblem.waiting_order
_PRIORITY = attrgetter("priority")
_COMPUTED = attrgetter("computed_tokens")
_ID = attrgetter("id")
_PROMPT = attrgetter("prompt_tokens")
_UNLIMITED = 1 << 62
_REFINEMENTS = 2  # re-inversions per batch size with the measured non-token latency
FAIR_SHARE = 0.0  # default age guard of the decode choice (docs/heuristics.md, choice 6)


@dataclass(frozen=True, slots=True)
class Knobs:
    """The keyword parameters (docs/heuristics.md); ``fair_share`` as an exact fraction."""

    full_scan: bool = False
    reserve_full_prompt: bool = False
    decode_order: str = "cheapest"
    fair_share: Fraction = Fraction(FAIR_SHARE)
    prefill_fallback: bool = True


_DEFAULT = Knobs()


@dataclass(frozen=True, slots=True)
class ThreeStagePlan:
    """The chosen decision and how stage 1 reached it."""

    decision: Decision
    latency_ns: int  # predicted latency of ``decision`` (equals evaluate()'s)
    budget: int  # the token budget S of the winning candidate
    slots: int  # waiting requests the winning candidate could admit (b - running)
    candidates: int  # distinct (S, slots) simulations run


def plan(
    problem: StepProblem,
    *,
    full_scan: bool = False,
    reserve_full_prompt: bool = False,
    decode_order: str = "cheapest",
    fair_share: float = FAIR_SHARE,
    prefill_fallback: bool = True,
) -> ThreeStagePlan:
    """Run the three stages on ``problem``.

    ``full_scan`` tries every batch size up to ``min(max_num_running_reqs, running + waiting)``
    instead of stopping once the slots no longer bind. ``reserve_full_prompt`` admits a waiting
    request only if the blocks of its whole remaining prompt are free, not just those of this
    step's chunk (for online use under KV pressure). ``decode_order`` (``cheapest`` or the
    seed's ``queue``) and ``fair_share`` choose the decodes of an overloaded step;
    ``prefill_fallback`` retries the running prefills cheapest first when the first choice
    left prefill tokens out. See docs/heuristics.md.
    """
    knobs = _knobs(full_scan, reserve_full_prompt, decode_order, fair_share, prefill_fallback)
    return ThreeStagePlan(*_run(problem, knobs)[:5])


def _knobs(
    full_scan: object,
    reserve_full_prompt: object,
    decode_order: object,
    fair_share: object,
    prefill_fallback: object,
) -> Knobs:
    _check_flags(
        full_scan=full_scan,
        reserve_full_prompt=reserve_full_prompt,
        prefill_fallback=prefill_fallback,
    )
    share = check_decode_params(decode_order, fair_share)
    return Knobs(full_scan, reserve_full_prompt, decode_order, share, prefill_fallback)  # type: ignore[arg-type]


def _run(problem: StepProblem, knobs: Knobs) -> tuple:
    """The plan (a tuple as :func:`_plan` returns it), and with ``prefill_fallback`` a second
    one with the running prefills cheapest first when the first left some of them short: the
    better of the two by rank, with the candidates of both."""
    first = _plan(problem, knobs, False)
    if not first[6]:
        return first
    second = _plan(problem, knobs, True)
    win = second if second[5] < first[5] else first
    return (*win[:4], first[4] + second[4], win[5], False)


def _plan(problem: StepProblem, knobs: Knobs, cheap_prefills: bool) -> tuple:
    """(decision, latency, budget, slots, candidates, rank, retry): ``retry`` when the
    prefill fallback is on, this was the first pass, and it left a running prefill short
    (stage 2's order put an expensive chunk first: the cheapest-first order may do better)."""
    full_scan, reserve = knobs.full_scan, knobs.reserve_full_prompt
    cfg = problem.config
    lat = problem.latency
    budget_cap = cfg.max_num_scheduled_tokens
    thr = cfg.long_prefill_token_threshold
    min_chunk = cfg.min_prefill_chunk
    bs = cfg.block_size
    kv_free = _UNLIMITED if cfg.num_free_blocks is None else cfg.num_free_blocks
    target = round(problem.target_latency_ms * NS_PER_MS)  # == problem.target_ns, uncached
    goodput = problem.objective == "goodput"
    fast = step_latency(lat)
    attn, tok_curve, seq_curve, dec_ns = fast.attention, fast.tokens, fast.batch, fast.decode
    dps = fast.dps
    running = problem.running
    waiting = problem.waiting
    n_run = len(running)

    weighted = problem.priority_mode == "weighted"
    top = 0
    if weighted and (running or waiting):
        top = max(max(map(_PRIORITY, running), default=0), max(map(_PRIORITY, waiting), default=0))

    # ---- stage 2 inputs: decodes (aggregates) and running prefills (prefix sums) ----------
    # One pass, in C where possible: this is most of the work at a few hundred requests.
    computed = list(map(_COMPUTED, running))
    n_dec = sum(map(ge, computed, map(_PROMPT, running)))
    if n_dec == n_run:
        decodes, prefills, dec_comp = running, [], computed
    else:
        is_decode = list(map(ge, computed, map(_PROMPT, running)))
        decodes = list(compress(running, is_decode))
        prefills = [r for r, d in zip(running, is_decode, strict=True) if not d]
        dec_comp = list(compress(computed, is_decode))
    dec_ctx = sum(dec_comp)
    # KV blocks cannot bind when every decode, and every prefill chunk the token budget allows
    # (each at most budget/bs + 1 blocks), fit: then skip the block arithmetic altogether.
    kv_on = kv_free < n_dec + budget_cap // bs + n_run + len(waiting) + 1
    # The admission gate (reserve_full_prompt) can bind only if some waiting request's whole
    # remaining prompt needs more blocks than are free.
    gate = reserve and cfg.num_free_blocks is not None and bool(waiting)
    if gate:
        need = max(
            (r.prompt_tokens + bs - 1) // bs - (r.computed_tokens + bs - 1) // bs for r in waiting
        )
        gate = kv_free < n_dec + budget_cap // bs + n_run + len(waiting) + 1 + need
        kv_on = kv_on or gate
    if not kv_on:
        kv_free = _UNLIMITED
    dec_kv = n_dec - sum(map(bool, map(bs.__rmod__, dec_comp))) if kv_on else 0
    dec_w = sum(1 + top - r.priority for r in decodes) if weighted else n_dec

    if len(prefills) > 1:
        prefills.sort(key=lambda r: (r.priority, r.computed_tokens - r.prompt_tokens))
        if cheap_prefills:
            unit = (tok_curve(budget_cap) - tok_curve(0)) / budget_cap if weighted else 0.0
            prefills.sort(
                key=cheap_prefill_key(attn, thr, min_chunk, unit, top if weighted else None)
            )
    p_hi, p_lo, p_kv, p_att, p_w = [0], [], [0], [0], [0]
    for r in prefills:
        c, rem = r.computed_tokens, r.prompt_tokens - r.computed_tokens
        hi = rem if thr <= 0 or rem < thr else thr
        p_lo.append(min_chunk if min_chunk < hi else hi)
        p_hi.append(p_hi[-1] + hi)
        p_kv.append(p_kv[-1] + ((c + hi + bs - 1) // bs - (c + bs - 1) // bs))
        p_att.append(p_att[-1] + attn(hi, c, rem))
        p_w.append(p_w[-1] + (1 + top - r.priority if weighted else 1) * hi)
    n_pre = len(prefills)

    # ---- stage 3 inputs: the waiting order, prefix sums extended on demand --------------
    order = problem.__dict__.get("waiting_order")  # reuse it if someone computed it already
    if order is None:
        order = sorted(waiting, key=_WAITING_KEY) if len(waiting) > 1 else waiting
    n_wait = len(order)
    w_hi, w_kv, w_att, w_w, w_lo = [0], [0], [0], [0], []
    # w_gate[k]: the most free blocks any of the first k admissions needs to pass the gate
    # (blocks of the chunks before it plus its whole prompt); without the gate, w_kv.
    w_gate = [0] if gate else w_kv

    def extend_waiting(left: int, kv_left: int, limit: int) -> None:
        # Add waiting requests until one would not fit fully (or ``limit`` are in).
        n = len(w_lo)
        while n < limit and w_hi[-1] <= left and w_gate[-1] <= kv_left:
            r = order[n]
            c, rem = r.computed_tokens, r.prompt_tokens - r.computed_tokens
            hi = rem if thr <= 0 or rem < thr else thr
            w_lo.append(min_chunk if min_chunk < hi else hi)
            w_hi.append(w_hi[-1] + hi)
            if gate:
                full = w_kv[-1] + (c + rem + bs - 1) // bs - (c + bs - 1) // bs
                w_gate.append(full if full > w_gate[-1] else w_gate[-1])
            w_kv.append(w_kv[-1] + ((c + hi + bs - 1) // bs - (c + bs - 1) // bs))
            w_att.append(w_att[-1] + attn(hi, c, rem))
            w_w.append(w_w[-1] + (1 + top - r.priority if weighted else 1) * hi)
            n += 1

    def kv_fit(c: int, kv_left: int) -> int:
        """Most tokens a request with ``c`` cached tokens can take in ``kv_left`` new blocks."""
        return ((c + bs - 1) // bs + kv_left) * bs - c if kv_on else _UNLIMITED

    # ---- stages 2 and 3 for one (budget, slots) -----------------------------------------
    # A result: (tokens, batch, decode ctx, attention, weighted tokens, admitted, detail,
    # grow, same). ``detail`` is what _materialize() needs to rebuild the decision; every
    # budget in [same, grow) gives the same decision (grow None: no larger budget changes it).
    partial_cache: dict[int, tuple] = {}
    seed_grow = not knobs.prefill_fallback  # the seed's running_tail grows budgets by 1
    chosen: list[DecodeChoice] = []  # built on first use: only overloaded steps need it

    def decode_choice() -> DecodeChoice:
        if not chosen:
            kv_arg = kv_free if kv_on else None
            args = (knobs.decode_order, knobs.fair_share, top if weighted else None, kv_arg, bs)
            chosen.append(DecodeChoice.for_step(decodes, *args, lat, tok_curve, seq_curve))
        return chosen[0]

    def decodes_only(budget: int) -> StepCandidate:
        # Not every decode fits (budget below the decode count, or KV blocks short): the
        # first decodes of the decode choice's sequence and nothing else (a prefill would
        # break Decode > Prefill).
        ch = decode_choice()
        n = budget if budget < len(ch) else len(ch)
        return _new(StepCandidate, (n, n, ch.ctx[n], 0, ch.w[n], 0, ("d", n), budget + 1, budget))

    def running_tail(budget: int, j: int) -> StepCandidate:
        # Prefill ``j`` (in stage-2 order) is the first that does not get its full chunk: the
        # rest of the running prefills share what is left (skipping chunks below their lo);
        # no waiting request may be admitted after a short running one. ``more``: the smallest
        # extra budget that changes a share (with the prefill fallback; the seed's is 1).
        left = budget - n_dec - p_hi[j]
        kv_left = kv_free - dec_kv - p_kv[j]
        tail, toks, att, w, more = [], 0, 0, 0, 1 if seed_grow else _UNLIMITED
        for i in range(j, n_pre):
            if left <= 0:
                more = min(more, *p_lo[i:])  # the rest start at their smallest chunk
                break
            r = prefills[i]
            c, rem = r.computed_tokens, r.prompt_tokens - r.computed_tokens
            hi = p_hi[i + 1] - p_hi[i]
            fit = kv_fit(c, kv_left)
            n = min(hi, left, fit)
            if n < p_lo[i]:
                if left < p_lo[i] <= fit and p_lo[i] - left < more:
                    more = p_lo[i] - left  # short of budget: that much more starts it
                continue
            if n == left < hi and n < fit:
                more = 1  # cut by the budget
            tail.append((r.id, n))
            left -= n
            kv_left -= (c + n + bs - 1) // bs - (c + bs - 1) // bs
            toks += n
            att += attn(n, c, rem)
            w += (1 + top - r.priority if weighted else 1) * n
        return _new(
            StepCandidate,
            (
                n_dec + p_hi[j] + toks,
                n_dec + j + len(tail),
                dec_ctx,
                p_att[j] + att,
                dec_w + p_w[j] + w,
                0,
                ("r", j, tail),
                None if more == _UNLIMITED else budget + more,
                budget,
            ),
        )

    if weighted:  # (defined only where used: this is the hot path)
        winfo: list[tuple] = []  # weighted mode: (id, cached, remaining, hi, lo, weight, gate, new)
        rem_suffix: list[int] = []  # rem_suffix[i]: the least remaining prompt of order[i:]

        def walk_entry(k: int) -> tuple:
            # The walk's k-th request (running prefills, then the waiting order), built lazily.
            while len(winfo) <= k:
                r = order[len(winfo) - n_pre]
                c, rem = r.computed_tokens, r.prompt_tokens - r.computed_tokens
                hi = rem if thr <= 0 or rem < thr else thr
                full = (c + rem + bs - 1) // bs - (c + bs - 1) // bs if gate else 0
                lo = min_chunk if min_chunk < hi else hi
                winfo.append((r.id, c, rem, hi, lo, 1 + top - r.priority, full, True))
            return winfo[k]

        def weighted_walk(
            budget: int, slots: int, j: int, left: int, kv_left: int
        ) -> StepCandidate:
            # Weighted mode: neither Running > Waiting nor the waiting order binds, so a request
            # that does not fit (budget left under its smallest chunk, KV blocks or the gate
            # short) is skipped and the next ones are tried: the running prefills from ``j`` (the
            # first without its full chunk), then the waiting ones, in the waiting order, at most
            # ``slots`` of them. ``more`` is the smallest extra budget that changes some share
            # along this walk (exact: below it every share stays the same).
            if not rem_suffix:  # first walk: the running prefills, the suffix minima
                for k, r in enumerate(prefills):
                    c = r.computed_tokens
                    hi = p_hi[k + 1] - p_hi[k]
                    wt = 1 + top - r.priority
                    winfo.append((r.id, c, r.prompt_tokens - c, hi, p_lo[k], wt, 0, False))
                rems = list(map(sub, map(_PROMPT, order), map(_COMPUTED, order)))
                rem_suffix.extend(accumulate(reversed(rems), min))
                rem_suffix.reverse()
                rem_suffix.append(_UNLIMITED)
            limit = slots if slots < n_wait else n_wait
            # Without KV limits, once the budget is spent the rest of the walk only sets ``more``:
            # the smallest lo left, min(min chunk, threshold, least remaining prompt).
            early = not kv_on and limit
            taken, toks, att, w, more, admitted = [], 0, 0, 0, _UNLIMITED, 0
            for k in range(j, n_pre + (limit and n_wait)):
                if left == 0 and early and admitted < limit:
                    m = min(min_chunk, rem_suffix[max(k - n_pre, 0)])
                    if thr > 0 and thr < m:
                        m = thr
                    if k < n_pre:
                        m = min(m, *p_lo[k:])
                    if m < more:
                        more = m
                    break
                rid, c, rem, hi, lo, wt, full, new = winfo[k] if k < len(winfo) else walk_entry(k)
                if new:
                    if admitted >= limit:
                        break
                    if gate and full > kv_left:
                        continue
                fit = kv_fit(c, kv_left)
                if fit < lo:
                    continue  # KV blocks short: more budget would not help
                n = hi if hi < left else left
                if fit < n:
                    n = fit
                elif n < hi and n < fit:  # cut by the budget: a larger budget gives it more
                    d = 1 if n >= lo else lo - n
                    if d < more:
                        more = d
                    if n < lo:
                        continue
                taken.append((rid, n))
                left -= n
                kv_left -= (c + n + bs - 1) // bs - (c + bs - 1) // bs
                toks += n
                att += attn(n, c, rem)
                w += wt * n
                admitted += new
            toks += n_dec + p_hi[j]
            return _new(
                StepCandidate,
                (
                    toks,
                    n_dec + j + len(taken),
                    dec_ctx,
                    p_att[j] + att,
                    dec_w + p_w[j] + w,
                    admitted,
                    ("x", j, taken),
                    None if more == _UNLIMITED else budget + more,
                    toks,
                ),
            )

    def simulate(budget: int, slots: int) -> StepCandidate:
        if budget < n_dec or dec_kv > kv_free:
            res = partial_cache.get(budget)
            if res is None:
                res = partial_cache[budget] = decodes_only(budget)
            return res
        left = budget - n_dec
        kv_left = kv_free - dec_kv
        if p_hi[-1] > left or p_kv[-1] > kv_left:
            if weighted:
                j = min(bisect_right(p_hi, left), bisect_right(p_kv, kv_left)) - 1
                return weighted_walk(budget, slots, j, left - p_hi[j], kv_left - p_kv[j])
            res = partial_cache.get(budget)
            if res is None:
                j = min(bisect_right(p_hi, left), bisect_right(p_kv, kv_left)) - 1
                res = partial_cache[budget] = running_tail(budget, j)
            return res
        left -= p_hi[-1]
        kv_left -= p_kv[-1]
        # Stage 3: a prefix of the waiting order, full chunks, then at most one partial chunk.
        limit = slots if slots < n_wait else n_wait
        if len(w_lo) < limit:
            extend_waiting(left, kv_left, limit)
        j = min(bisect_right(w_hi, left), bisect_right(w_gate, kv_left)) - 1
        if j > limit:
            j = limit
        toks = n_dec + p_hi[-1] + w_hi[j]
        att = p_att[-1] + w_att[j]
        w = dec_w + p_w[-1] + w_w[j]
        part = 0
        if j < limit and (not gate or w_gate[j + 1] <= kv_left):
            r = order[j]
            c = r.computed_tokens
            n = min(w_hi[j + 1] - w_hi[j], left - w_hi[j])
            if kv_on:
                n = min(n, kv_fit(c, kv_left - w_kv[j]))
            if n >= w_lo[j]:
                part = n
                toks += n
                att += attn(n, c, r.prompt_tokens - c)
                w += (1 + top - r.priority if weighted else 1) * n
        if weighted and j < limit and (not part or toks < budget):
            # A request did not fit (or got a chunk cut by KV blocks) with budget left: later
            # ones might. Otherwise the walk would give this very result.
            return weighted_walk(budget, slots, n_pre, left, kv_left)
        if part:
            grow, same = budget + 1, budget
        elif j < limit:  # the next waiting request starts at its smallest chunk
            grow, same = toks + w_lo[j], toks
        else:
            grow, same = None, toks
        admitted = j + (1 if part else 0)
        batch = n_dec + n_pre + admitted
        return _new(
            StepCandidate, (toks, batch, dec_ctx, att, w, admitted, ("w", j, part), grow, same)
        )

    # ---- stage 1 --------------------------------------------------------------------------
    inverse = token_inverse(lat.tokens, budget_cap).largest_at_most
    dec_attention = dec_ns(dec_ctx)
    free_slots = max(cfg.max_num_running_reqs - n_run, 0)
    # Beyond running + waiting requests a larger batch size admits nobody more: stop there.
    max_slots = min(free_slots, n_wait)
    floor = min(n_dec, budget_cap)  # every decode and nothing more (the fallback's bisection)
    seen: dict[tuple[int, int], tuple] = {}
    best: tuple | None = None  # (rank, budget, slots, res, latency)
    all_fit = False  # some candidate schedules every decode under the target
    sims = 0

    def consider(budget: int, slots: int, given: StepCandidate | None = None) -> tuple:
        """(result, latency, non-token latency, reused from slots - 1). ``given``: a result
        built elsewhere (an overloaded step's decode sets), ranked but not memoised."""
        nonlocal best, sims, all_fit
        if given is None:
            key = (budget, slots)
            hit = seen.get(key)
            if hit is not None:
                return hit
            if slots:
                # More slots change nothing when the last ones went unused or the budget is
                # spent.
                hit = seen.get((budget, slots - 1))
                if hit is not None and (hit[0].admitted < slots - 1 or hit[0].tokens == budget):
                    hit = seen[key] = (hit[0], hit[1], hit[2], True)
                    return hit
            sims += 1
            res = simulate(budget, slots)
        else:
            res = given
        other = seq_curve(res.batch) + dec_ns(res.context) + res.attention
        lat_ns = tok_curve(res.tokens) + other
        hit = (res, lat_ns, other, False)
        if given is None:
            seen[key] = hit
        if lat_ns <= target and res.tokens >= n_dec:
            all_fit = True
        # stepopt.evaluate.rank_key of a hard-feasible decision: target |L - T|, most
        # scheduled requests (the batch size), most weighted tokens
        if goodput:
            rk = (0 if lat_ns <= target else 1, -res.weighted, lat_ns)
        else:
            rk = (0, abs(lat_ns - target), -res.batch, -res.weighted)
        if best is None or rk < best[0]:
            best = (rk, budget, slots, res, lat_ns)
        return hit

    for slots in range(max_slots + 1):
        # Estimate: every running decode and b = running + slots requests in the batch, no
        # prefill attention.
        estimate = seq_curve(n_run + slots) + dec_attention
        s = inverse(target - estimate)
        s = s if s > 0 else 0
        res, lat_s, other, reused = consider(s, slots)
        if reused:
            # Same candidate as with one slot less (the extra slot went unused): the rest of
            # this iteration would repeat the previous one, and larger b admit nobody more.
            if full_scan:
                continue
            break
        admitted = res.admitted
        # For the prefill fallback: the largest budget under the target, the smallest over it
        # (as the least budget giving its decision), their latencies, whether the batch
        # changed.
        if lat_s <= target:
            under, under_lat, over, over_lat = s, lat_s, _UNLIMITED, _UNLIMITED
        else:
            under, under_lat, over, over_lat = -1, -1, res.least_budget, lat_s
        batch, mixed = res.batch, False
        for _ in range(_REFINEMENTS if other != estimate else 0):
            # Re-invert with the candidate's own non-token latency (its real batch size,
            # decode contexts and prefill attention).
            s = inverse(target - other)
            if s < 0:
                s = 0
            if res.least_budget <= s and (res.grow_at is None or s < res.grow_at):
                break  # same decision
            res, lat_s, other, _ = consider(s, slots)
            if lat_s <= target:
                if s > under:
                    under, under_lat = s, lat_s
            elif res.least_budget < over:
                over, over_lat = res.least_budget, lat_s
            if res.batch != batch:
                mixed = True
            if res.admitted > admitted:
                admitted = res.admitted
        if (
            over < _UNLIMITED
            and knobs.prefill_fallback
            and (mixed or under < 0 or _far(under_lat, over_lat, target, goodput))
        ):
            admitted = max(admitted, bisect_boundary(consider, under, over, slots, target, floor))
        grow = res.grow_at
        if not goodput and grow is not None and grow <= budget_cap:
            # |L - T| may be smaller just above the target than just below it: try the
            # smallest budget that schedules more than this candidate.
            res_up = consider(grow, slots)[0]
            if res_up.admitted > admitted:
                admitted = res_up.admitted
        if admitted < slots and not full_scan:
            # The slots no longer bind: larger b only lowers the estimated budget.
            break

    cheapest = knobs.decode_order == "cheapest"
    if (
        cheapest
        and n_dec
        and (
            budget_cap < n_dec
            or dec_kv > kv_free
            or (not all_fit and tok_curve(n_dec) + seq_curve(n_dec) + dec_attention > target)
        )
    ):
        # Not every decode fits: an overloaded step (docs/heuristics.md, choice 6).
        choices = [decode_choice()]
        if weighted:  # the weights may matter more than the costs (a budget cap binds)
            kv_arg = kv_free if kv_on else None
            choices.append(DecodeChoice(decodes, "queue", Fraction(0), top, kv_arg, bs, 0, dps))
        for res in overloaded_results(
            choices, lat, tok_curve, seq_curve, target, goodput, budget_cap, kv_on, bs
        ):
            consider(res.tokens, 0, res)
    elif not cheapest and best is not None and best[3].tokens < n_dec and not kv_on:
        # The seed's (decode_order="queue"): below the running count (not every decode fits
        # under the target: an overloaded engine), the batch is the first k decodes by
        # priority and b = S = k: bisect on k for the largest k whose exact latency meets the
        # target, treating it as monotone.
        ctx = decode_choice().ctx
        lo_k, hi_k = 0, min(n_dec, budget_cap)
        if tok_curve(0) + seq_curve(0) > target:
            hi_k = -1
        while lo_k < hi_k:
            mid = (lo_k + hi_k + 1) // 2
            if fast.total(mid, mid, ctx[mid], 0) <= target:
                lo_k = mid
            else:
                hi_k = mid - 1
        if hi_k >= 0:
            consider(hi_k, 0)
        if not goodput and hi_k + 1 <= min(n_dec, budget_cap):
            consider(hi_k + 1, 0)

    assert best is not None
    if goodput and best[4] > target:
        # Nothing found under the cap: the empty step is the last resort if it fits.
        empty = StepCandidate(0, 0, 0, 0, 0, 0, ("d", 0), None, 0)
        lat0 = tok_curve(0) + seq_curve(0)
        if lat0 <= target:
            best = ((0, 0, lat0), 0, 0, empty, lat0)
    rank, budget, slots, res, lat_ns = best
    choice = chosen[0] if chosen else None
    decision = Decision(
        tokens=_materialize(res.detail, choice, decodes, prefills, p_hi, order, w_hi)
    )
    # The prefill fallback: the winner gave a running prefill less than its full chunk.
    retry = (
        knobs.prefill_fallback
        and not cheap_prefills
        and n_pre > 1
        and (res.detail[0] == "r" or (res.detail[0] == "x" and res.detail[1] < n_pre))
    )
    return decision, lat_ns, budget, slots, sims, rank, retry


def _far(under_lat: int, over_lat: int, target: int, goodput: bool) -> bool:
    """Whether the re-inversions stopped more than 1 % of the target away from it: the best
    under it (goodput), or both the best under and the best over (target)."""
    slack = target // 100
    return target - under_lat > slack and (goodput or over_lat - target > slack)


def _materialize(detail, choice, decodes, prefills, p_hi, order, w_hi) -> dict[str, int]:
    kind = detail[0]
    if kind == "d":  # the first decodes of the decode choice's sequence (or none)
        return dict.fromkeys([r.id for r in choice.seq[: detail[1]]], 1) if detail[1] else {}
    if kind == "S":  # an overloaded step's set of decodes
        return dict.fromkeys(decode_ids(detail), 1)
    out = dict.fromkeys(map(_ID, decodes), 1)
    if kind != "w":  # "r" (strict) or "x" (weighted): the first j prefills in full, then a list
        _, j, tail = detail
        for i in range(j):
            out[prefills[i].id] = p_hi[i + 1] - p_hi[i]
        out.update(tail)
        return out
    for i, r in enumerate(prefills):
        out[r.id] = p_hi[i + 1] - p_hi[i]
    _, j, part = detail
    for i in range(j):
        out[order[i].id] = w_hi[i + 1] - w_hi[i]
    if part:
        out[order[j].id] = part
    return out


@register_heuristic("three-stage")
def three_stage(
    problem: StepProblem,
    full_scan: bool = False,
    reserve_full_prompt: bool = False,
    decode_order: str = "cheapest",
    fair_share: float = FAIR_SHARE,
    prefill_fallback: bool = True,
) -> Decision:
    """The three-stage greedy: budget by latency inversion, running first, then waiting."""
    if (
        full_scan is False
        and reserve_full_prompt is False
        and decode_order == "cheapest"
        and type(fair_share) is float
        and fair_share == FAIR_SHARE
        and prefill_fallback is True
    ):
        knobs = _DEFAULT  # (the default path skips the checks)
    else:
        knobs = _knobs(full_scan, reserve_full_prompt, decode_order, fair_share, prefill_fallback)
    return _run(problem, knobs)[0]


def _check_flags(**flags: object) -> None:
    for name, value in flags.items():
        if value.__class__ is not bool:
            raise InputError(name, "expected true or false", value)
