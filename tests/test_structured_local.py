"""The exact program's quick incumbent (``structured_local``): the same least latencies as the
min-plus program alone, positions closed without the program when the incumbent meets the
integer Lagrangian bound, and a brute-force check of that closing on a small group of equal
prefills."""

from __future__ import annotations

import random

import numpy as np
import pytest

from stepopt.latency.presets import load_preset, preset_names
from stepopt.model import EngineConfig, Request, StepProblem
from stepopt.solvers import SolveStatus, solve
from stepopt.solvers import structured_exact as exact
from stepopt.testing.factories import linear_latency, make_problem, prefill

NS_PER_MS = 1_000_000


def _goodput_state(rng: random.Random, n: int, kv: int | None) -> StepProblem:
    """The benchmark's shape: mostly decodes, several running prefills with the same cached
    lengths (so chunks share curve segments), a waiting queue; a target that trades."""
    name = "a100/llama-2-7b/tp1"
    lat = load_preset(name if name in preset_names() else "demo")
    n_pre, n_wait = 7, n // 10
    running = [
        Request(f"d{k}", p, p + rng.randint(1, 400), 0, k * 0.01)
        for k, p in enumerate(rng.randint(50, 4000) for _ in range(n - n_pre - n_wait))
    ]
    running += [
        Request(f"p{k}", p, rng.choice([0, 0, 512, 1024]), 0, 10.0 + k)
        for k, p in enumerate(rng.randint(700, 3000) for _ in range(n_pre))
    ]
    queue = [Request(f"w{k}", rng.randint(100, 3000), 0, 0, 20.0 + k) for k in range(n_wait)]
    cfg = EngineConfig(2048, n + 8, 0, 64, 16, kv)
    p = StepProblem(tuple(running), tuple(queue), cfg, lat, 1.0, "goodput", "strict")
    base = lat.predict_ns(p, {r.id: 1 for r in p.running_decodes})
    return p.with_changes(target_latency_ms=rng.randint(base, base + 80_000_000) / NS_PER_MS)


def _answer(res):
    ev = res.evaluation
    return str(res.status), res.bound, None if ev is None else (ev.latency_ns, ev.scheduled_tokens)


@pytest.mark.parametrize("kv", [None, 40, 200])
def test_same_answers_as_the_program_alone(kv, monkeypatch):
    """With and without the incumbent: the same statuses, latencies and tokens on every state,
    and on most states the incumbent closes its position without the program."""
    rng = random.Random(kv or 0)
    states = [_goodput_state(rng, 160, kv) for _ in range(12)]
    closed = []
    deepen = exact._deepen
    monkeypatch.setattr(exact, "_deepen", lambda *a: closed.append(False) or deepen(*a))
    with_inc = [solve(p, "structured") for p in states]
    runs_with = len(closed)
    monkeypatch.setattr(exact, "incumbent", lambda *a: None)
    closed.clear()
    alone = [solve(p, "structured") for p in states]
    for a, b in zip(with_inc, alone, strict=True):
        assert _answer(a) == _answer(b)
        assert a.status == SolveStatus.OPTIMAL
    assert runs_with < len(closed)  # fewer programs run


def _equal_prefills_problem(target_ms: float):
    """Three prefills with the same cached length: their chunks share curve segments, so the
    floors decide the least latency among the splits of a total."""
    lat = linear_latency(per_token_ns=20_000, alpha_ns=0.05, beta_ns=0.3)
    running = [prefill(f"p{k}", 2000 + k, 512) for k in range(3)]
    return make_problem(
        running,
        [],
        latency=lat,
        target_ms=target_ms,
        objective="goodput",
        max_num_scheduled_tokens=BUDGET,
        min_prefill_chunk=64,
    )


BUDGET = 400


@pytest.mark.parametrize("target_ms", [9.0, 10.5, 12.0, 14.0])
def test_equal_prefills_against_every_split(target_ms):
    """Brute force over every split of the three chunks (each 0 or 64..400, at most 400 in
    all): the solver's tokens and latency are the best (most tokens within T, then least
    latency)."""
    p = _equal_prefills_problem(target_ms)
    res = solve(p, "structured")
    assert res.status == SolveStatus.OPTIMAL
    lat = p.latency
    c = np.asarray([0, *range(64, BUDGET + 1)], dtype=np.int64)
    att = [
        np.asarray([lat.prefill(int(x), r.computed_tokens, r.remaining_prompt) for x in c])
        for r in p.running
    ]
    tok = np.asarray([lat.tokens(s) for s in range(3 * BUDGET + 1)], dtype=np.int64)
    best = None
    for a0, c0 in zip(att[0], c, strict=True):
        total = c0 + c[:, None] + c[None, :]
        ns = a0 + att[1][:, None] + att[2][None, :] + tok[total]
        good = (total <= BUDGET) & (ns <= p.target_ns)
        if good.any():
            top = int(total[good].max())
            cand = (top, int(ns[good & (total == top)].min()))
            if best is None or (-cand[0], cand[1]) < (-best[0], best[1]):
                best = cand
    assert (res.evaluation.scheduled_tokens, res.evaluation.latency_ns) == best
    # the table arithmetic above is the model's: its answer agrees with predict_ns
    assert lat.predict_ns(p, res.decision.tokens) == res.evaluation.latency_ns


def test_least_reduced_costs_read_every_chunk_that_matters():
    """``structured_reduced.least`` against every chunk: the least reduced cost of each item
    and its chunks within ``FLAT`` of it, on random curves (non-convex, one-point, extended
    end pieces) and slopes."""
    from stepopt.latency.pwl import PiecewiseLinear
    from stepopt.solvers.structured_curves import _values_at, item_curve
    from stepopt.solvers.structured_reduced import FLAT, least, pieces

    rng = np.random.default_rng(3)
    for _ in range(60):
        items = []
        for _ in range(int(rng.integers(1, 6))):
            k = int(rng.integers(1, 7))
            xs = np.unique(rng.integers(0, 900, k)).tolist()
            ys = rng.integers(0, 3_000_000, len(xs)).tolist()
            lo = int(rng.integers(1, 300))
            hi = lo + int(rng.integers(0, 700))
            items.append(item_curve(PiecewiseLinear(tuple(xs), tuple(ys)), lo, hi, False))
        most, total = int(rng.integers(200, 1200)), int(rng.integers(100, 1200))
        lam = float(rng.uniform(-500, 6000))
        m, flat = least(pieces(items, most), lam, total)
        for i, it in enumerate(items):
            c = np.arange(it.lo, min(it.hi, most, total) + 1, dtype=np.int64)
            if c.size == 0:
                assert m[i] == np.inf and flat[i][0].size == 0
                continue
            g = _values_at(items, np.full(c.size, i), c)
            h = g - lam * c
            assert m[i] == h.min()
            near = h - h.min() <= FLAT
            assert (flat[i][0] == c[near]).all() and (flat[i][1] == g[near]).all()
