"""The priority rules as a partial order (a DAG built with networkx).

A node is a predicate on the decision: ``("sched", i)`` request ``i`` gets tokens, ``("full", i)``
running prefill ``i`` gets its whole ``hi_i``, ``("all", "decodes")`` / ``("all", "running_full")``
auxiliary conjunctions. An edge ``u -> v`` reads "``v`` only if ``u``" (``u`` is a prerequisite).
The rules, as :func:`stepopt.evaluate.evaluate` judges them:

- both modes, Decode > Prefill: every running decode -> ``all decodes`` -> every prefill;
- strict mode, Running > Waiting: every running request at full (a decode at 1 token) ->
  ``all running full`` -> every waiting request;
- strict mode, waiting prefix: each waiting request -> every later one in
  ``(priority, arrival_time, id)`` order.

Edges that hold by construction of the encoding (``full`` implies ``sched``) are marked
``emit=False``: they shorten paths but never become constraints. Only the transitive reduction is
emitted, so a waiting queue of ``k`` requests costs ``k`` implications, not ``k**2``.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Hashable

import networkx as nx

from stepopt.errors import InputError
from stepopt.model import StepProblem

Node = tuple[str, Hashable]
ALL_DECODES: Node = ("all", "decodes")
RUNNING_FULL: Node = ("all", "running_full")


def priority_graph(problem: StepProblem) -> nx.DiGraph:
    """Every priority rule of ``problem`` as edges (not reduced); nodes carry no data."""
    g = nx.DiGraph()
    reqs = problem.requests
    index = {r.id: k for k, r in enumerate(reqs)}
    decodes = [index[r.id] for r in problem.running_decodes]
    prefills = [k for k, r in enumerate(reqs) if not r.is_decode]
    if decodes and prefills:
        g.add_edges_from((("sched", d), ALL_DECODES) for d in decodes)
        g.add_edges_from((ALL_DECODES, ("sched", p)) for p in prefills)
    if problem.priority_mode == "strict" and problem.waiting:
        n_run = len(problem.running)
        for k in range(n_run):
            if reqs[k].is_decode:
                g.add_edge(("sched", k), RUNNING_FULL)
            else:
                g.add_edge(("sched", k), ("full", k), emit=False)
                g.add_edge(("full", k), RUNNING_FULL)
        order = [index[r.id] for r in problem.waiting_order]
        g.add_edges_from((RUNNING_FULL, ("sched", w)) for w in order)
        for a, b in itertools.pairwise(order):
            g.add_edge(("sched", a), ("sched", b))
    return g


def check_acyclic(g: nx.DiGraph, problem: StepProblem) -> None:
    """A cycle means the priority rules contradict each other: a user error."""
    if nx.is_directed_acyclic_graph(g):
        return
    cycle = nx.find_cycle(g)
    reqs = problem.requests

    def name(node: Node) -> str:
        kind, ref = node
        return f"{kind}({reqs[ref].id})" if isinstance(ref, int) else f"{kind}({ref})"

    path = " -> ".join(name(u) for u, _ in cycle) + " -> " + name(cycle[0][0])
    raise InputError("priority", f"the priority rules form a cycle: {path}", show_value=False)


def reduced_edges(g: nx.DiGraph) -> list[tuple[Node, Node]]:
    """The edges of the transitive reduction of ``g`` that must become constraints.

    Same result as ``nx.transitive_reduction`` (the tests check it), computed with reachability
    bitsets in one pass over a topological order, and only once per group of sources with the
    same successors (the many running decodes): it stays in the millisecond range with
    hundreds of decodes and a long waiting queue, where networkx's DFS-based version took tens.
    """
    groups: dict[frozenset, list[Node]] = defaultdict(list)
    for n in g.nodes:
        if g.in_degree(n) == 0 and g.out_degree(n) > 0:
            groups[frozenset(g.successors(n))].append(n)
    rep = {m: members[0] for members in groups.values() for m in members[1:]}
    order = [n for n in nx.topological_sort(g) if n not in rep]
    pos = {n: k for k, n in enumerate(order)}
    reach: dict[Node, int] = {}  # bitset of the nodes reachable from n (n excluded)
    kept: dict[Node, list[Node]] = {}
    succ = g._succ  # plain dict access: this loop is the hot part
    for u in reversed(order):
        covered = 0
        mine = 0
        out: list[Node] = []
        for v in sorted(succ[u], key=pos.__getitem__):
            bit = 1 << pos[v]
            if not covered & bit:
                out.append(v)
            covered |= reach[v]
            mine |= bit | reach[v]
        reach[u] = mine
        kept[u] = out
    result: list[tuple[Node, Node]] = []
    for u in order:
        for v in kept[u]:
            if succ[u][v].get("emit", True):
                result.append((u, v))
    for m, r in rep.items():
        result.extend((m, v) for v in kept[r] if succ[m][v].get("emit", True))
    return result


def priority_edges(problem: StepProblem) -> list[tuple[Node, Node]]:
    """The implications to emit for ``problem``'s priority rules (``v`` only if ``u``)."""
    g = priority_graph(problem)
    if g.number_of_edges() == 0:
        return []
    try:
        return reduced_edges(g)  # its topological sort fails on a cycle
    except nx.NetworkXUnfeasible:
        check_acyclic(g, problem)  # raises InputError naming the cycle
        raise
