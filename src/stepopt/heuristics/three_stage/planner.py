"""The planner of one three-stage pass: its inputs (stages 2 and 3, as prefix sums) and result.

:class:`Planner` is one state object (slots) whose stage methods live in the mixins of
:mod:`.fill` (stages 2 and 3 for one budget), :mod:`.walk` (weighted mode's walk) and
:mod:`.search` (stage 1); every attribute is set here. The hot methods copy the attributes
they read into locals first: attribute reads in the per-request loops cost more than the
method calls do.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from itertools import compress
from operator import attrgetter, ge

from stepopt.heuristics.candidate import StepCandidate
from stepopt.heuristics.decode_choice import DecodeChoice, decode_ids
from stepopt.heuristics.prefill_fallback import cheap_prefill_key
from stepopt.heuristics.three_stage.fill import UNLIMITED, Fill
from stepopt.heuristics.three_stage.search import Search
from stepopt.heuristics.three_stage.walk import Walk
from stepopt.latency.step import step_latency
from stepopt.model import NS_PER_MS, Decision, Request, StepProblem, new_blocks

_WAITING_KEY = attrgetter("priority", "arrival_time", "id")  # == StepProblem.waiting_order
_PRIORITY = attrgetter("priority")
_COMPUTED = attrgetter("computed_tokens")
_ID = attrgetter("id")
_PROMPT = attrgetter("prompt_tokens")

FAIR_SHARE = 0.0  # default age guard of the decode choice (docs/heuristics.md, choice 6)


@dataclass(frozen=True, slots=True)
class Knobs:
    """The keyword parameters (docs/heuristics.md); ``fair_share`` as an exact fraction."""

    full_scan: bool = False
    reserve_full_prompt: bool = False
    decode_order: str = "cheapest"
    fair_share: Fraction = Fraction(FAIR_SHARE)
    prefill_fallback: bool = True


class Planner(Search, Fill, Walk):
    """One pass of the three stages over a problem (``cheap``: the prefill fallback's second
    pass, running prefills cheapest first); :meth:`plan` runs it.

    Attributes: the knobs and the problem's limits; KV (``kv_free``, UNLIMITED when blocks
    cannot bind, ``kv_on``, the admission ``gate``); stage 2's running decodes as aggregates
    (``n_dec``, ``dec_*``) and running prefills as prefix sums (``p_*``); stage 3's waiting
    order and its prefix sums, extended on demand (``w_*``, :meth:`Fill.extend_waiting`); the
    memos of the candidate simulations; stage 1's candidates seen and the best so far.
    """

    __slots__ = (
        "all_fit",
        "attn",
        "best",
        "bs",
        "budget_cap",
        "cheap",
        "choice",
        "dec_attention",
        "dec_ctx",
        "dec_kv",
        "dec_ns",
        "dec_w",
        "decodes",
        "dps",
        "fast",
        "floor",
        "gate",
        "goodput",
        "inverse",
        "knobs",
        "kv_free",
        "kv_on",
        "lat",
        "max_run",
        "min_chunk",
        "n_dec",
        "n_pre",
        "n_run",
        "n_wait",
        "order",
        "p_att",
        "p_hi",
        "p_kv",
        "p_lo",
        "p_w",
        "partial_cache",
        "prefills",
        "rem_suffix",
        "seed_grow",
        "seen",
        "seq_curve",
        "sims",
        "target",
        "thr",
        "tok_curve",
        "top",
        "w_att",
        "w_gate",
        "w_hi",
        "w_kv",
        "w_lo",
        "w_w",
        "weighted",
        "winfo",
    )

    def __init__(self, problem: StepProblem, knobs: Knobs, cheap: bool) -> None:
        self.knobs, self.cheap = knobs, cheap
        cfg = problem.config
        lat = self.lat = problem.latency
        self.budget_cap = cfg.max_num_scheduled_tokens
        self.max_run = cfg.max_num_running_reqs
        self.thr = cfg.long_prefill_token_threshold
        self.min_chunk = cfg.min_prefill_chunk
        self.bs = cfg.block_size
        self.kv_free = UNLIMITED if cfg.num_free_blocks is None else cfg.num_free_blocks
        self.target = round(problem.target_latency_ms * NS_PER_MS)  # == target_ns, uncached
        self.goodput = problem.objective == "goodput"
        fast = self.fast = step_latency(lat)
        self.attn, self.tok_curve, self.seq_curve = fast.attention, fast.tokens, fast.batch
        self.dec_ns, self.dps = fast.decode, fast.dps
        running, waiting = problem.running, problem.waiting
        self.n_run = len(running)
        self.weighted = problem.priority_mode == "weighted"
        self.top = 0
        if self.weighted and (running or waiting):
            self.top = max(
                max(map(_PRIORITY, running), default=0), max(map(_PRIORITY, waiting), default=0)
            )
        dec_comp = self._split_running(running)
        self._kv_switches(waiting, cfg.num_free_blocks is not None, dec_comp)
        self._prefill_sums()
        self._waiting_inputs(problem)
        self.partial_cache: dict[int, StepCandidate] = {}
        self.seed_grow = not knobs.prefill_fallback
        self.choice: DecodeChoice | None = None  # built on first use (overloaded steps)
        self.winfo: list[tuple] = []  # weighted mode: walk.walk_entry
        self.rem_suffix: list[int] = []
        self.seen: dict[tuple[int, int], tuple] = {}
        self.best: tuple | None = None  # (rank, budget, slots, candidate, latency)
        self.all_fit = False  # some candidate schedules every decode under the target
        self.sims = 0
        self.inverse = fast.inverse(self.budget_cap).largest_at_most
        self.dec_attention = self.dec_ns(self.dec_ctx)
        self.floor = min(self.n_dec, self.budget_cap)  # every decode and nothing more

    def _split_running(self, running: tuple[Request, ...]) -> list[int]:
        """Decodes and prefills in one pass, in C where possible (most of the work at a few
        hundred requests); returns the decodes' cached tokens."""
        computed = list(map(_COMPUTED, running))
        n_dec = self.n_dec = sum(map(ge, computed, map(_PROMPT, running)))
        if n_dec == len(running):
            self.decodes, self.prefills, dec_comp = running, [], computed
        else:
            is_decode = list(map(ge, computed, map(_PROMPT, running)))
            self.decodes = list(compress(running, is_decode))
            self.prefills = [r for r, d in zip(running, is_decode, strict=True) if not d]
            dec_comp = list(compress(computed, is_decode))
        self.dec_ctx = sum(dec_comp)
        return dec_comp

    def _kv_switches(self, waiting: tuple[Request, ...], limited: bool, dec_comp: list) -> None:
        """Whether KV blocks can bind at all, and the admission gate (reserve_full_prompt)."""
        bs, kv_free, n_dec = self.bs, self.kv_free, self.n_dec
        # KV blocks cannot bind when every decode, and every prefill chunk the token budget
        # allows (each at most budget/bs + 1 blocks), fit: then skip the block arithmetic.
        bound = n_dec + self.budget_cap // bs + self.n_run + len(waiting) + 1
        kv_on = kv_free < bound
        # The gate can bind only if some waiting request's whole remaining prompt needs more
        # blocks than are free.
        gate = self.knobs.reserve_full_prompt and limited and bool(waiting)
        if gate:
            c_of, p_of = _COMPUTED, _PROMPT
            need = max(new_blocks(c_of(r), p_of(r) - c_of(r), bs) for r in waiting)
            gate = kv_free < bound + need
            kv_on = kv_on or gate
        self.kv_on, self.gate = kv_on, gate
        if not kv_on:
            self.kv_free = UNLIMITED
        # new_blocks(c, 1, bs) summed over the decodes, in C: a decode needs a block when its
        # context fills its last one (tests/test_heuristics_kv.py checks it)
        self.dec_kv = n_dec - sum(map(bool, map(bs.__rmod__, dec_comp))) if kv_on else 0
        top = self.top
        self.dec_w = sum(1 + top - r.priority for r in self.decodes) if self.weighted else n_dec

    def _prefill_sums(self) -> None:
        """Stage 2's running prefills in order (priority, most left first; the fallback's
        second pass: cheapest first) and their prefix sums at full chunks."""
        prefills, thr, min_chunk, bs = self.prefills, self.thr, self.min_chunk, self.bs
        attn, weighted, top = self.attn, self.weighted, self.top
        if len(prefills) > 1:
            prefills.sort(key=lambda r: (r.priority, r.computed_tokens - r.prompt_tokens))
            if self.cheap:
                cap, tok_curve = self.budget_cap, self.tok_curve
                unit = (tok_curve(cap) - tok_curve(0)) / cap if weighted else 0.0
                prefills.sort(
                    key=cheap_prefill_key(attn, thr, min_chunk, unit, top if weighted else None)
                )
        p_hi, p_lo, p_kv, p_att, p_w = [0], [], [0], [0], [0]
        for r in prefills:
            c, rem = r.computed_tokens, r.prompt_tokens - r.computed_tokens
            hi = rem if thr <= 0 or rem < thr else thr
            p_lo.append(min_chunk if min_chunk < hi else hi)
            p_hi.append(p_hi[-1] + hi)
            p_kv.append(p_kv[-1] + new_blocks(c, hi, bs))
            p_att.append(p_att[-1] + attn(hi, c, rem))
            p_w.append(p_w[-1] + (1 + top - r.priority if weighted else 1) * hi)
        self.p_hi, self.p_lo, self.p_kv, self.p_att, self.p_w = p_hi, p_lo, p_kv, p_att, p_w
        self.n_pre = len(prefills)

    def _waiting_inputs(self, problem: StepProblem) -> None:
        """Stage 3's waiting order; its prefix sums start empty (extended on demand)."""
        order = problem.__dict__.get("waiting_order")  # reuse it if someone computed it already
        if order is None:
            waiting = problem.waiting
            order = sorted(waiting, key=_WAITING_KEY) if len(waiting) > 1 else waiting
        self.order, self.n_wait = order, len(order)
        self.w_hi, self.w_kv, self.w_att, self.w_w, self.w_lo = [0], [0], [0], [0], []
        # w_gate[k]: the most free blocks any of the first k admissions needs to pass the gate
        # (blocks of the chunks before it plus its whole prompt); without the gate, w_kv.
        self.w_gate = [0] if self.gate else self.w_kv

    def plan(self) -> tuple:
        """(decision, latency, budget, slots, candidates, rank, retry): ``retry`` when the
        prefill fallback is on, this was the first pass, and it left a running prefill short
        (stage 2's order put an expensive chunk first: the cheapest-first order may do better)."""
        self.search()
        best = self.best
        assert best is not None
        target = self.target
        if self.goodput and best[4] > target:
            # Nothing found under the cap: the empty step is the last resort if it fits.
            empty = StepCandidate(0, 0, 0, 0, 0, 0, ("d", 0), None, 0)
            lat0 = self.tok_curve(0) + self.seq_curve(0)
            if lat0 <= target:
                best = ((0, 0, lat0), 0, 0, empty, lat0)
        rank, budget, slots, res, lat_ns = best
        decision = Decision(tokens=self._materialize(res.detail))
        # The prefill fallback: the winner gave a running prefill less than its full chunk.
        detail = res.detail
        retry = (
            self.knobs.prefill_fallback
            and not self.cheap
            and self.n_pre > 1
            and (detail[0] == "r" or (detail[0] == "x" and detail[1] < self.n_pre))
        )
        return decision, lat_ns, budget, slots, self.sims, rank, retry

    def _materialize(self, detail: tuple) -> dict[str, int]:
        """The decision a candidate's ``detail`` describes (StepCandidate's docstring)."""
        kind = detail[0]
        if kind == "d":  # the first decodes of the decode choice's sequence (or none)
            if not detail[1]:
                return {}
            return dict.fromkeys([r.id for r in self.choice.seq[: detail[1]]], 1)  # type: ignore[union-attr]
        if kind == "S":  # an overloaded step's set of decodes
            return dict.fromkeys(decode_ids(detail), 1)
        prefills, p_hi = self.prefills, self.p_hi
        out = dict.fromkeys(map(_ID, self.decodes), 1)
        if kind != "w":  # "r" (strict) or "x" (weighted): the first j prefills in full, a list
            _, j, tail = detail
            for i in range(j):
                out[prefills[i].id] = p_hi[i + 1] - p_hi[i]
            out.update(tail)
            return out
        for i, r in enumerate(prefills):
            out[r.id] = p_hi[i + 1] - p_hi[i]
        _, j, part = detail
        order, w_hi = self.order, self.w_hi
        for i in range(j):
            out[order[i].id] = w_hi[i + 1] - w_hi[i]
        if part:
            out[order[j].id] = part
        return out
