"""Stage 1: the token budget per batch size, by inverting the latency model at the target
(a mixin of ``Planner``; attributes there).

For each number of admission slots the budget is estimated, then re-inverted with the
candidate's own non-token latency; the prefill fallback bisects when the re-inversions jump
over the target. Every candidate is scored by :meth:`Search.consider`, which keeps the best by
the active objective. An overloaded step (not every decode fits) gets its decode sets last.
"""

from __future__ import annotations

from fractions import Fraction

from stepopt.heuristics.candidate import StepCandidate
from stepopt.heuristics.decode_choice import DecodeChoice, overloaded_results
from stepopt.heuristics.prefill_fallback import bisect_boundary
from stepopt.heuristics.three_stage.fill import UNLIMITED

_REFINEMENTS = 2  # re-inversions per batch size with the measured non-token latency


class Search:
    __slots__ = ()

    def consider(self, budget: int, slots: int, given: StepCandidate | None = None) -> tuple:
        """(candidate, latency, non-token latency, reused from slots - 1), memoised; ranks the
        candidate against the best so far. ``given``: a candidate built elsewhere (an
        overloaded step's decode sets), ranked but not memoised."""
        seen = self.seen
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
            self.sims += 1
            res = self.simulate(budget, slots)
        else:
            res = given
        other = self.seq_curve(res.batch) + self.dec_ns(res.context) + res.attention
        lat_ns = self.tok_curve(res.tokens) + other
        hit = (res, lat_ns, other, False)
        if given is None:
            seen[key] = hit
        target = self.target
        if lat_ns <= target and res.tokens >= self.n_dec:
            self.all_fit = True
        # stepopt.evaluate.rank_key of a hard-feasible decision: target |L - T|, most
        # scheduled requests (the batch size), most weighted tokens
        if self.goodput:
            rk = (0 if lat_ns <= target else 1, -res.weighted, lat_ns)
        else:
            rk = (0, abs(lat_ns - target), -res.batch, -res.weighted)
        best = self.best
        if best is None or rk < best[0]:
            self.best = (rk, budget, slots, res, lat_ns)
        return hit

    def search(self) -> None:
        """Every batch size that can matter, then an overloaded step's decode sets."""
        full_scan = self.knobs.full_scan
        # Beyond running + waiting requests a larger batch size admits nobody more.
        max_slots = min(max(self.max_run - self.n_run, 0), self.n_wait)
        for slots in range(max_slots + 1):
            if not self.try_slots(slots) and not full_scan:
                break
        if self.knobs.decode_order == "cheapest":
            self.overloaded()
        else:
            self.seed_overloaded()

    def try_slots(self, slots: int) -> bool:
        """The candidates of batch size ``running + slots``; False when larger ones cannot
        admit more (the slots no longer bind)."""
        target = self.target
        # Estimate: every running decode and b = running + slots requests, no prefill attention.
        estimate = self.seq_curve(self.n_run + slots) + self.dec_attention
        s = self.inverse(target - estimate)
        s = s if s > 0 else 0
        res, lat_s, other, reused = self.consider(s, slots)
        if reused:
            # Same candidate as with one slot less (the extra slot went unused): the rest would
            # repeat the previous iteration, and larger b admit nobody more.
            return False
        # For the prefill fallback: the largest budget under the target, the smallest over it
        # (as the least budget giving its decision), their latencies.
        if lat_s <= target:
            bounds = [s, lat_s, UNLIMITED, UNLIMITED]
        else:
            bounds = [-1, -1, res.least_budget, lat_s]
        res, admitted, mixed = self.refine(res, other, estimate, slots, bounds)
        under, under_lat, over, over_lat = bounds
        if (
            over < UNLIMITED
            and self.knobs.prefill_fallback
            and (mixed or under < 0 or _far(under_lat, over_lat, target, self.goodput))
        ):
            floor = self.floor
            admitted = max(
                admitted, bisect_boundary(self.consider, under, over, slots, target, floor)
            )
        grow = res.grow_at
        if not self.goodput and grow is not None and grow <= self.budget_cap:
            # |L - T| may be smaller just above the target than just below it: try the
            # smallest budget that schedules more than this candidate.
            res_up = self.consider(grow, slots)[0]
            if res_up.admitted > admitted:
                admitted = res_up.admitted
        return admitted >= slots

    def refine(
        self, res: StepCandidate, other: int, estimate: int, slots: int, bounds: list[int]
    ) -> tuple[StepCandidate, int, bool]:
        """Re-invert with the candidate's own non-token latency (its real batch size, decode
        contexts and prefill attention); updates ``bounds`` (under, its latency, over, its
        latency). Returns the last candidate, the most admissions seen, whether the batch size
        changed."""
        target, inverse, consider = self.target, self.inverse, self.consider
        admitted, batch, mixed = res.admitted, res.batch, False
        for _ in range(_REFINEMENTS if other != estimate else 0):
            s = inverse(target - other)
            if s < 0:
                s = 0
            if res.least_budget <= s and (res.grow_at is None or s < res.grow_at):
                break  # same decision
            res, lat_s, other, _ = consider(s, slots)
            if lat_s <= target:
                if s > bounds[0]:
                    bounds[0], bounds[1] = s, lat_s
            elif res.least_budget < bounds[2]:
                bounds[2], bounds[3] = res.least_budget, lat_s
            if res.batch != batch:
                mixed = True
            if res.admitted > admitted:
                admitted = res.admitted
        return res, admitted, mixed

    def overloaded(self) -> None:
        """``decode_order="cheapest"``: when not every decode fits, the decode sets of an
        overloaded step (docs/heuristics.md, choice 6)."""
        n_dec, kv_on = self.n_dec, self.kv_on
        if not n_dec:
            return
        if not (
            self.budget_cap < n_dec
            or self.dec_kv > self.kv_free
            or (
                not self.all_fit
                and self.tok_curve(n_dec) + self.seq_curve(n_dec) + self.dec_attention > self.target
            )
        ):
            return
        choices = [self.decode_choice()]
        if self.weighted:  # the weights may matter more than the costs (a budget cap binds)
            kv_arg = self.kv_free if kv_on else None
            choices.append(
                DecodeChoice(
                    self.decodes, "queue", Fraction(0), self.top, kv_arg, self.bs, 0, self.dps
                )
            )
        for res in overloaded_results(
            choices, self.lat, self.tok_curve, self.seq_curve, self.target, self.goodput,
            self.budget_cap, kv_on, self.bs,
        ):  # fmt: skip
            self.consider(res.tokens, 0, res)

    def seed_overloaded(self) -> None:
        """The seed's (``decode_order="queue"``): below the running count (not every decode
        fits under the target), the batch is the first k decodes by priority and b = S = k:
        bisect on k for the largest k whose exact latency meets the target, treating it as
        monotone."""
        best = self.best
        if best is None or best[3].tokens >= self.n_dec or self.kv_on:
            return
        target, total = self.target, self.fast.total
        ctx = self.decode_choice().ctx
        lo_k, hi_k = 0, min(self.n_dec, self.budget_cap)
        if self.tok_curve(0) + self.seq_curve(0) > target:
            hi_k = -1
        while lo_k < hi_k:
            mid = (lo_k + hi_k + 1) // 2
            if total(mid, mid, ctx[mid], 0) <= target:
                lo_k = mid
            else:
                hi_k = mid - 1
        if hi_k >= 0:
            self.consider(hi_k, 0)
        if not self.goodput and hi_k + 1 <= min(self.n_dec, self.budget_cap):
            self.consider(hi_k + 1, 0)


def _far(under_lat: int, over_lat: int, target: int, goodput: bool) -> bool:
    """Whether the re-inversions stopped more than 1 % of the target away from it: the best
    under it (goodput), or both the best under and the best over (target)."""
    slack = target // 100
    return target - under_lat > slack and (goodput or over_lat - target > slack)
