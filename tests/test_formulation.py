"""The integer program's building blocks: priority DAG, latency pieces, KV blocks."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepopt.errors import InputError
from stepopt.formulation import build
from stepopt.formulation.priority import (
    ALL_DECODES,
    RUNNING_FULL,
    check_acyclic,
    priority_edges,
    priority_graph,
)
from stepopt.formulation.spec import curve_term
from stepopt.testing.factories import decode, decodes, make_problem, prefill, waiting, waitings
from stepopt.testing.strategies import curves, problems


def _strict_problem(n_dec=3, n_wait=4):
    return make_problem(
        [*decodes(n_dec), prefill("p0"), prefill("p1")], waitings([100 + k for k in range(n_wait)])
    )


def test_strict_rules_reduce_to_a_chain_over_the_waiting_queue():
    p = _strict_problem(n_dec=3, n_wait=4)
    edges = set(priority_edges(p))
    order = [p.requests.index(r) for r in p.waiting_order]
    # Only the queue head depends on "all running full"; the others depend on their
    # predecessor: 1 + 3 edges, not 4 + 6.
    assert (RUNNING_FULL, ("sched", order[0])) in edges
    assert not any(u == RUNNING_FULL and v[1] in order[1:] for u, v in edges)
    assert {(("sched", a), ("sched", b)) for a, b in itertools.pairwise(order)} <= edges
    # Decode > Prefill needs no edge into the waiting queue: admitting the head already
    # requires the running prefills at full, hence scheduled, hence every decode.
    assert not any(u == ALL_DECODES and v[1] in order for u, v in edges)
    # Without running prefills it reaches the queue through its head only.
    q = make_problem(decodes(3), waitings([100, 101, 102]))
    order = [q.requests.index(r) for r in q.waiting_order]
    targets = {v for u, v in priority_edges(q) if u == ALL_DECODES}
    assert targets == {("sched", order[0])}


@pytest.mark.parametrize("mode", ["strict", "weighted"])
@pytest.mark.parametrize("n_dec", [0, 1, 5])
def test_emitted_edges_are_the_transitive_reduction(mode, n_dec):
    p = _strict_problem(n_dec=n_dec, n_wait=3).with_changes(priority_mode=mode)
    g = priority_graph(p)
    reduced = nx.transitive_reduction(g)
    expected = {(u, v) for u, v in reduced.edges if g.edges[u, v].get("emit", True)}
    assert set(priority_edges(p)) == expected
    # And the emitted edges imply every rule: same reachability as the full graph.
    h = nx.DiGraph(list(priority_edges(p)))
    h.add_edges_from((u, v) for u, v in g.edges if not g.edges[u, v].get("emit", True))
    for u in g.nodes:
        assert nx.descendants(g, u) == (nx.descendants(h, u) if u in h else set())


def test_weighted_mode_keeps_only_decode_first():
    p = _strict_problem().with_changes(priority_mode="weighted")
    nodes = {n for e in priority_edges(p) for n in e}
    assert RUNNING_FULL not in nodes
    assert ALL_DECODES in nodes


def test_no_rules_without_decodes_and_waiting():
    assert priority_edges(make_problem([prefill("p0"), prefill("p1")])) == []


def test_a_cycle_is_a_user_error_naming_it():
    p = make_problem([decode("d0")], [waiting("w0")])
    g = nx.DiGraph([(("sched", 0), ("sched", 1)), (("sched", 1), ("sched", 0))])
    with pytest.raises(InputError, match=r"priority: .*cycle.*sched\(d0\).*sched\(w0\)"):
        check_acyclic(g, p)


@given(curves(max_x=300, max_y_ns=5_000_000), st.integers(0, 300), st.integers(0, 300))
def test_pieces_reproduce_the_curve_with_floor(curve, a, b):
    lo, hi = min(a, b), max(a, b)
    term = curve_term("t", curve, lo, hi)
    for x in range(lo, hi + 1):
        assert term.value(x) == curve(x)
    ylo, yhi = term.y_range
    assert ylo == min(curve(x) for x in range(lo, hi + 1))
    assert yhi == max(curve(x) for x in range(lo, hi + 1))


@given(problems(max_requests=5))
def test_items_match_the_problem(problem):
    form = build(problem)
    bs = problem.config.block_size
    for it, r in zip(form.items, problem.requests, strict=True):
        assert it.id == r.id
        assert it.hi == problem.hi(r)
        for c in range(it.lo, it.hi + 1):
            expected = -(-(r.computed_tokens + c) // bs) - -(-r.computed_tokens // bs)
            assert it.blocks(c, bs) == expected
        if it.attention is not None:
            for c in range(it.lo, it.hi + 1):
                assert it.attention.value(c) == problem.latency.prefill(
                    c, r.computed_tokens, r.remaining_prompt
                )
    lo, hi = form.latency_range()
    assert lo <= problem.latency.predict_ns(problem, {}) <= hi


def test_priority_edges_turn_a_cycle_into_an_input_error(monkeypatch):
    import stepopt.formulation.priority as pr

    p = make_problem([decode("d0")], [waiting("w0")])
    g = nx.DiGraph([(("sched", 0), ("sched", 1)), (("sched", 1), ("sched", 0))])
    monkeypatch.setattr(pr, "priority_graph", lambda problem: g)
    with pytest.raises(InputError, match="cycle"):
        pr.priority_edges(p)
