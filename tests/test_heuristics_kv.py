"""The KV block arithmetic the heuristics' hot loops inline, checked against its one
definition (:func:`stepopt.model.new_blocks`) at every block boundary: with exactly the blocks
the definition asks for a request gets its tokens, with one block fewer it does not (or gets
the most tokens the definition says fit)."""

from __future__ import annotations

import pytest

from stepopt.heuristics.sarathi import sarathi
from stepopt.heuristics.three_stage import three_stage
from stepopt.heuristics.vllm_v1 import vllm_v1
from stepopt.model import Request, StepProblem, new_blocks
from stepopt.simulate.preemption import min_blocks_rule
from stepopt.simulate.state import _Req
from stepopt.testing.factories import linear_latency, make_problem

BLOCK_SIZES = (1, 3, 16)
LAT = linear_latency(per_token_ns=1, base_ns=1)


def _cases(bs: int) -> list[tuple[int, int]]:
    """(cached, tokens) pairs around the block boundaries."""
    return [(c, n) for c in range(0, 2 * bs + 2) for n in range(1, 2 * bs + 2)]


def _most_tokens(c: int, free: int, bs: int, cap: int) -> int:
    """The definition's answer: the most tokens (at most ``cap``) that fit in ``free`` blocks."""
    return max((m for m in range(cap + 1) if new_blocks(c, m, bs) <= free), default=0)


def _problem(running, waiting=(), *, free: int, bs: int, **cfg) -> StepProblem:
    cfg = {"max_num_scheduled_tokens": 10_000, "min_prefill_chunk": 1, **cfg}
    return make_problem(
        running,
        waiting,
        latency=LAT,
        target_ms=1e6,  # the latency never binds: only the KV blocks do
        objective="goodput",
        block_size=bs,
        num_free_blocks=free,
        **cfg,
    )


def _three_stage(p: StepProblem) -> dict[str, int]:
    return three_stage(p, prefill_fallback=False).tokens


HEURISTICS = {
    "three-stage": _three_stage,
    "three-stage-weighted": lambda p: _three_stage(p.with_changes(priority_mode="weighted")),
    "sarathi": lambda p: sarathi(p).tokens,
    "vllm-v1": lambda p: vllm_v1(p, lone_request_rule=False).tokens,
}


def test_new_blocks_is_the_ceiling_difference():
    for bs in BLOCK_SIZES:
        for c, n in _cases(bs):
            assert new_blocks(c, n, bs) == -(-(c + n) // bs) - -(-c // bs)
            assert new_blocks(c, n, bs) == len(
                {t // bs for t in range(c, c + n)} - {t // bs for t in range(c)}
            )


@pytest.mark.parametrize("name", HEURISTICS)
@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_a_decode_needs_the_blocks_the_definition_says(name, bs):
    run = HEURISTICS[name]
    for c in range(1, 3 * bs + 2):
        d = Request("d", c, c)
        need = new_blocks(c, 1, bs)
        assert run(_problem([d], free=need, bs=bs)) == {"d": 1}
        if need:
            assert run(_problem([d], free=need - 1, bs=bs)).get("d", 0) == 0


@pytest.mark.parametrize("name", HEURISTICS)
@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_a_running_chunk_gets_what_its_blocks_hold(name, bs):
    run = HEURISTICS[name]
    for c, n in _cases(bs):
        r = Request("p", c + n, c)
        need = new_blocks(c, n, bs)
        assert run(_problem([r], free=need, bs=bs)) == {"p": n}
        if need:
            got = run(_problem([r], free=need - 1, bs=bs)).get("p", 0)
            # vLLM does not shrink a chunk to fit: it preempts the request
            want = 0 if name == "vllm-v1" else _most_tokens(c, need - 1, bs, n)
            assert got == want, (c, n)


@pytest.mark.parametrize("name", HEURISTICS)
@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_the_blocks_a_first_chunk_takes_are_gone_for_the_next(name, bs):
    # Two running prefills, the first with more tokens left (first in every heuristic's
    # order), one block short of both: the second gets what the rest holds.
    run = HEURISTICS[name]
    for c, n in _cases(bs)[:: max(bs // 2, 1)]:
        a = Request("a", 4 * bs + 40 + c, c, 0, 0.0)
        b = Request("b", c + n, c, 0, 1.0)
        need_a = new_blocks(c, a.prompt_tokens - c, bs)
        need_b = new_blocks(c, n, bs)
        if not need_b:
            continue  # one block short of both would be short for the first
        got = run(_problem([a, b], free=need_a + need_b - 1, bs=bs))
        assert got.get("a") == a.prompt_tokens - c
        want = 0 if name == "vllm-v1" else _most_tokens(c, need_b - 1, bs, n)
        assert got.get("b", 0) == want, (c, n)


@pytest.mark.parametrize("name", ["sarathi", "vllm-v1", "three-stage-reserve"])
@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_the_admission_gate_reserves_the_whole_prompt(name, bs):
    # A waiting request with a prefix-cache hit, its chunk capped by the threshold: the gate
    # needs the blocks of its whole remaining prompt, not just the chunk's.
    if name == "three-stage-reserve":
        run = lambda p: three_stage(p, reserve_full_prompt=True, prefill_fallback=False).tokens  # noqa: E731
    else:
        run = HEURISTICS[name]
    thr = 2
    for c, n in _cases(bs):
        w = Request("w", c + n + thr, c)
        gate = new_blocks(c, n + thr, bs)
        got = run(_problem([], [w], free=gate, bs=bs, long_prefill_token_threshold=thr))
        assert got == {"w": thr}, (c, n)
        if gate > new_blocks(c, thr, bs):
            got = run(_problem([], [w], free=gate - 1, bs=bs, long_prefill_token_threshold=thr))
            assert got == {}, (c, n)


@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_the_simulators_minimum_share_blocks(bs):
    thr, min_chunk = 5, 3
    rule = min_blocks_rule(bs, thr, min_chunk)
    for c, n in _cases(bs):
        s = _Req(0, "r", 0, c + n, 4, 0)
        s.computed, s.target = c, c + n
        lo = min(min_chunk, n, thr)
        assert rule(s) == new_blocks(c, lo, bs)
        s.target = c  # a decode
        assert rule(s) == new_blocks(c, 1, bs)
