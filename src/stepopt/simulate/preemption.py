"""The simulator's preemptions: KV room before a step, and the ones a policy asks for.

A mixin of :class:`stepopt.simulate.engine._Engine` (its attributes live there). Preemption is
vLLM's recompute preemption: the request frees every block, forgets its KV cache and goes
back to the waiting queue (docs/simulate.md).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from stepopt.simulate.state import RUNNING, WAITING, _key, _Req, _request


class Preemption:
    __slots__ = ()

    def _make_room(self) -> None:
        """KV: preempt (lowest priority, latest admitted first) until every running request's
        minimum share fits."""
        running, bs, min_blocks = self.running, self.bs, self.min_blocks
        need = 0
        for s in running:  # min_blocks(s), inlined for the decodes (most of them)
            c = s.computed
            if c >= s.target:
                if c % bs == 0:
                    need += 1
            else:
                need += min_blocks(s)
        needs = [min_blocks(s) for s in running] if need > self.free else []
        while need > self.free:
            k = max(range(len(running)), key=lambda i: (running[i].priority, running[i].seq))
            need -= needs.pop(k)
            self._preempt(running[k])

    def _preempt(self, s: _Req) -> None:
        # vLLM's recompute preemption: free every block, forget the KV cache, back to waiting
        # (its (priority, arrival) key puts it ahead of later arrivals, as vLLM's appendleft).
        self.free += s.blocks
        s.blocks = 0
        s.computed = 0
        s.target = s.prompt + s.emitted
        s.where = WAITING
        s.preemptions += 1
        r = s.req = _request(s)
        self.n_preemptions += 1
        self.running.remove(s)
        k = bisect.bisect_right(self.waiting, s.key, key=_key)
        self.waiting.insert(k, s)
        if not self.waiting_dirty:
            wt = self.waiting_tuple
            self.waiting_tuple = (*wt[:k], r, *wt[k:])

    def _policy_preemptions(self, tokens: dict[str, int], gone: Any) -> None:
        """Apply the preemptions a policy listed (each must be running and get no tokens)."""
        for rid in gone:
            s = self.by_id.get(rid)
            if s is None or s.where != RUNNING:
                raise self._fail("preemption", f"{rid!r} is preempted but not running")
            if tokens.get(rid, 0):
                raise self._fail("preemption", f"{rid!r} is preempted and scheduled")
            self._preempt(s)


def min_blocks_rule(bs: int, thr: int, min_chunk: int) -> Callable[[_Req], int]:
    """The new KV blocks of a request's minimum share (a closure: it runs per running request
    whenever the cache is short)."""

    def min_blocks(s: _Req) -> int:
        c = s.computed
        if c >= s.target:
            return 1 if c % bs == 0 else 0
        rem = s.target - c
        hi = rem if thr <= 0 or rem < thr else thr
        lo = min_chunk if min_chunk < hi else hi
        return (c + lo + bs - 1) // bs - (c + bs - 1) // bs  # model.new_blocks, inlined

    return min_blocks
