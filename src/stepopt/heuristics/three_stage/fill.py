"""Stages 2 and 3 for one (budget, slots): which tokens a candidate step schedules.

A mixin of :class:`~stepopt.heuristics.three_stage.planner.Planner` (attributes there).
:meth:`Fill.simulate` returns a :class:`StepCandidate`: its aggregates, the ``detail`` that
``Planner._materialize`` rebuilds the decision from, and the budget range ``[least_budget,
grow_at)`` that gives the same decision (``grow_at`` None: no larger budget changes it).
"""

from __future__ import annotations

from bisect import bisect_right

from stepopt.heuristics.candidate import StepCandidate
from stepopt.heuristics.decode_choice import DecodeChoice
from stepopt.model import new_blocks

UNLIMITED = 1 << 62

# StepCandidate(...) without the Python-level __new__ (candidates are built in the hot loop).
_new = tuple.__new__


class Fill:
    __slots__ = ()

    def kv_fit(self, c: int, kv_left: int) -> int:
        """Most tokens a request with ``c`` cached tokens can take in ``kv_left`` new blocks."""
        bs = self.bs
        return ((c + bs - 1) // bs + kv_left) * bs - c if self.kv_on else UNLIMITED

    def decode_choice(self) -> DecodeChoice:
        """The decode choice of an overloaded step (built on first use)."""
        if self.choice is None:
            kv_arg = self.kv_free if self.kv_on else None
            knobs, top = self.knobs, self.top if self.weighted else None
            args = (knobs.decode_order, knobs.fair_share, top, kv_arg, self.bs)
            self.choice = DecodeChoice.for_step(
                self.decodes, *args, self.lat, self.tok_curve, self.seq_curve
            )
        return self.choice

    def decodes_only(self, budget: int) -> StepCandidate:
        """Not every decode fits (budget below the decode count, or KV blocks short): the
        first decodes of the decode choice's sequence and nothing else (a prefill would break
        Decode > Prefill)."""
        ch = self.decode_choice()
        n = budget if budget < len(ch) else len(ch)
        return _new(StepCandidate, (n, n, ch.ctx[n], 0, ch.w[n], 0, ("d", n), budget + 1, budget))

    def simulate(self, budget: int, slots: int) -> StepCandidate:
        """Stages 2 and 3 at token budget ``budget`` with ``slots`` admissions allowed. Stage 3
        (every running request got its full chunk) is inline: this runs once per candidate,
        and a call more per candidate measurably slows the plan."""
        n_dec, dec_kv, kv_free = self.n_dec, self.dec_kv, self.kv_free
        if budget < n_dec or dec_kv > kv_free:
            res = self.partial_cache.get(budget)
            if res is None:
                res = self.partial_cache[budget] = self.decodes_only(budget)
            return res
        left = budget - n_dec
        kv_left = kv_free - dec_kv
        p_hi, p_kv, weighted = self.p_hi, self.p_kv, self.weighted
        if p_hi[-1] > left or p_kv[-1] > kv_left:
            j = min(bisect_right(p_hi, left), bisect_right(p_kv, kv_left)) - 1
            if weighted:
                return self.weighted_walk(budget, slots, j, left - p_hi[j], kv_left - p_kv[j])
            res = self.partial_cache.get(budget)
            if res is None:
                res = self.partial_cache[budget] = self.running_tail(budget, j)
            return res
        left -= p_hi[-1]
        kv_left -= p_kv[-1]
        # Stage 3: a prefix of the waiting order, full chunks, then at most one partial chunk.
        n_wait, w_hi, w_gate, w_lo, gate = self.n_wait, self.w_hi, self.w_gate, self.w_lo, self.gate
        limit = slots if slots < n_wait else n_wait
        if len(w_lo) < limit:
            self.extend_waiting(left, kv_left, limit)
        j = min(bisect_right(w_hi, left), bisect_right(w_gate, kv_left)) - 1
        if j > limit:
            j = limit
        toks = n_dec + p_hi[-1] + w_hi[j]
        att = self.p_att[-1] + self.w_att[j]
        w = self.dec_w + self.p_w[-1] + self.w_w[j]
        part = 0
        if j < limit and (not gate or w_gate[j + 1] <= kv_left):
            r = self.order[j]
            c = r.computed_tokens
            n = min(w_hi[j + 1] - w_hi[j], left - w_hi[j])
            if self.kv_on:
                n = min(n, self.kv_fit(c, kv_left - self.w_kv[j]))
            if n >= w_lo[j]:
                part = n
                toks += n
                att += self.attn(n, c, r.prompt_tokens - c)
                w += (1 + self.top - r.priority if weighted else 1) * n
        if weighted and j < limit and (not part or toks < budget):
            # A request did not fit (or got a chunk cut by KV blocks) with budget left: later
            # ones might. Otherwise the walk would give this very result.
            return self.weighted_walk(budget, slots, self.n_pre, left, kv_left)
        if part:
            grow, same = budget + 1, budget
        elif j < limit:  # the next waiting request starts at its smallest chunk
            grow, same = toks + w_lo[j], toks
        else:
            grow, same = None, toks
        admitted = j + (1 if part else 0)
        batch = n_dec + self.n_pre + admitted
        detail = ("w", j, part)
        return _new(
            StepCandidate, (toks, batch, self.dec_ctx, att, w, admitted, detail, grow, same)
        )

    def extend_waiting(self, left: int, kv_left: int, limit: int) -> None:
        """Add waiting requests to stage 3's prefix sums until one would not fit fully (or
        ``limit`` are in)."""
        w_hi, w_kv, w_att, w_w, w_lo, w_gate = (
            self.w_hi, self.w_kv, self.w_att, self.w_w, self.w_lo, self.w_gate
        )  # fmt: skip
        order, thr, min_chunk, bs, gate = self.order, self.thr, self.min_chunk, self.bs, self.gate
        attn, weighted, top = self.attn, self.weighted, self.top
        n = len(w_lo)
        while n < limit and w_hi[-1] <= left and w_gate[-1] <= kv_left:
            r = order[n]
            c, rem = r.computed_tokens, r.prompt_tokens - r.computed_tokens
            hi = rem if thr <= 0 or rem < thr else thr
            w_lo.append(min_chunk if min_chunk < hi else hi)
            w_hi.append(w_hi[-1] + hi)
            if gate:
                full = w_kv[-1] + new_blocks(c, rem, bs)
                w_gate.append(full if full > w_gate[-1] else w_gate[-1])
            w_kv.append(w_kv[-1] + new_blocks(c, hi, bs))
            w_att.append(w_att[-1] + attn(hi, c, rem))
            w_w.append(w_w[-1] + (1 + top - r.priority if weighted else 1) * hi)
            n += 1

    def running_tail(self, budget: int, j: int) -> StepCandidate:
        """Strict mode: prefill ``j`` (in stage-2 order) is the first that does not get its
        full chunk: the rest of the running prefills share what is left (skipping chunks below
        their lo); no waiting request may be admitted after a short running one. ``more``: the
        smallest extra budget that changes a share (with the prefill fallback; the seed's
        is 1)."""
        n_dec, p_hi, p_lo, prefills = self.n_dec, self.p_hi, self.p_lo, self.prefills
        bs, attn, kv_fit, weighted, top = self.bs, self.attn, self.kv_fit, self.weighted, self.top
        left = budget - n_dec - p_hi[j]
        kv_left = self.kv_free - self.dec_kv - self.p_kv[j]
        tail, toks, att, w, more = [], 0, 0, 0, 1 if self.seed_grow else UNLIMITED
        for i in range(j, self.n_pre):
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
            kv_left -= new_blocks(c, n, bs)
            toks += n
            att += attn(n, c, rem)
            w += (1 + top - r.priority if weighted else 1) * n
        grow = None if more == UNLIMITED else budget + more
        detail = ("r", j, tail)
        batch = n_dec + j + len(tail)
        weight = self.dec_w + self.p_w[j] + w
        toks += n_dec + p_hi[j]
        return _new(
            StepCandidate,
            (toks, batch, self.dec_ctx, self.p_att[j] + att, weight, 0, detail, grow, budget),
        )
