"""Weighted mode's walk over the requests (a mixin of ``Planner``; attributes there).

In weighted mode neither Running > Waiting nor the waiting order binds, so a request that
does not fit (budget left under its smallest chunk, KV blocks or the gate short) is skipped
and the next ones are tried: the running prefills from the first without its full chunk, then
the waiting ones in the waiting order.
"""

from __future__ import annotations

from itertools import accumulate
from operator import attrgetter, sub

from stepopt.heuristics.candidate import StepCandidate
from stepopt.heuristics.three_stage.fill import UNLIMITED
from stepopt.model import new_blocks

_new = tuple.__new__
_COMPUTED = attrgetter("computed_tokens")
_PROMPT = attrgetter("prompt_tokens")


class Walk:
    __slots__ = ()

    def walk_entry(self, k: int) -> tuple:
        """The walk's k-th request (running prefills, then the waiting order), built lazily:
        (id, cached, remaining, hi, lo, weight, gate blocks, new)."""
        winfo, order, n_pre = self.winfo, self.order, self.n_pre
        thr, min_chunk, bs, gate, top = self.thr, self.min_chunk, self.bs, self.gate, self.top
        while len(winfo) <= k:
            r = order[len(winfo) - n_pre]
            c, rem = r.computed_tokens, r.prompt_tokens - r.computed_tokens
            hi = rem if thr <= 0 or rem < thr else thr
            full = new_blocks(c, rem, bs) if gate else 0
            lo = min_chunk if min_chunk < hi else hi
            winfo.append((r.id, c, rem, hi, lo, 1 + top - r.priority, full, True))
        return winfo[k]

    def _walk_start(self) -> None:
        """First walk: the running prefills' entries, the suffix minima of the waiting
        order's remaining prompts."""
        p_hi, p_lo, top, winfo = self.p_hi, self.p_lo, self.top, self.winfo
        for k, r in enumerate(self.prefills):
            c = r.computed_tokens
            hi = p_hi[k + 1] - p_hi[k]
            winfo.append(
                (r.id, c, r.prompt_tokens - c, hi, p_lo[k], 1 + top - r.priority, 0, False)
            )
        order = self.order
        rems = list(map(sub, map(_PROMPT, order), map(_COMPUTED, order)))
        rem_suffix = self.rem_suffix  # rem_suffix[i]: the least remaining prompt of order[i:]
        rem_suffix.extend(accumulate(reversed(rems), min))
        rem_suffix.reverse()
        rem_suffix.append(UNLIMITED)

    def _least_chunk(self, k: int) -> int:
        """The smallest lo of the walk from ``k`` on: min(min chunk, threshold, least
        remaining prompt, the running prefills' lo)."""
        n_pre, thr = self.n_pre, self.thr
        m = min(self.min_chunk, self.rem_suffix[max(k - n_pre, 0)])
        if thr > 0 and thr < m:
            m = thr
        if k < n_pre:
            m = min(m, *self.p_lo[k:])
        return m

    def weighted_walk(
        self, budget: int, slots: int, j: int, left: int, kv_left: int
    ) -> StepCandidate:
        """The walk from running prefill ``j`` with ``left`` tokens and ``kv_left`` blocks, at
        most ``slots`` admissions. ``more`` is the smallest extra budget that changes some
        share along this walk (exact: below it every share stays the same)."""
        if not self.rem_suffix:
            self._walk_start()
        n_pre, n_wait, kv_on, gate = self.n_pre, self.n_wait, self.kv_on, self.gate
        winfo, walk_entry, kv_fit, attn, bs = (
            self.winfo, self.walk_entry, self.kv_fit, self.attn, self.bs
        )  # fmt: skip
        limit = slots if slots < n_wait else n_wait
        # Without KV limits, once the budget is spent the rest of the walk only sets ``more``.
        early = not kv_on and limit
        taken, toks, att, w, more, admitted = [], 0, 0, 0, UNLIMITED, 0
        for k in range(j, n_pre + (limit and n_wait)):
            if left == 0 and early and admitted < limit:
                m = self._least_chunk(k)
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
            kv_left -= new_blocks(c, n, bs)
            toks += n
            att += attn(n, c, rem)
            w += wt * n
            admitted += new
        toks += self.n_dec + self.p_hi[j]
        grow = None if more == UNLIMITED else budget + more
        batch = self.n_dec + j + len(taken)
        weight = self.dec_w + self.p_w[j] + w
        return _new(
            StepCandidate,
            (toks, batch, self.dec_ctx, self.p_att[j] + att, weight, admitted, ("x", j, taken),
             grow, toks),
        )  # fmt: skip
