"""Exact solver: OR-Tools CP-SAT on the integer program.

Tuned for many small models: one worker (deterministic), presolve off and
``linearization_level=2``. ``lexicographic="two_phase"`` (default) solves the primary
objective (up to 80 % of the time limit), fixes it and optimizes the tie-break in the time
left (a tenth of it when phase 1 stopped on the tolerance);
``"weighted"`` folds both levels into one exact integer objective ``K * primary + secondary``.
On realistic states two phases had the steadier worst case. ``hint=True`` (default) starts
from a strict-priority greedy decision: it barely changes proof times but, under a time
limit on large states, it turns "no solution" or a poor incumbent into a near-optimal one.
``hull=True`` (default) encodes multi-piece latency terms in the disaggregated form (plain
linear rows whose LP relaxation is each piece's convex hull) instead of enforced constraints:
on goodput states with 384 requests it turned mostly-unproven 3 s runs into proofs in ~0.4 s.
``target_tolerance_ns=N`` (default 0) lets the primary phase of ``target`` stop once its
incumbent |L - T| is within N ns of the proven bound (CP-SAT's ``absolute_gap_limit``); CP-SAT
then says OPTIMAL, but the result is FEASIBLE unless the bound met the incumbent exactly.
``start=<Decision>`` replaces the greedy hint (the ``auto`` portfolio passes the structured
solver's best decision). Extra keyword parameters are CP-SAT parameters
(``num_workers=2``, ``random_seed=...``)."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

from ortools.sat import sat_parameters_pb2
from ortools.sat.python import cp_model

from stepopt.errors import InputError
from stepopt.formulation import build
from stepopt.formulation.cpsat import CpsatEncoding, encode
from stepopt.model import NS_PER_MS, Decision, StepProblem
from stepopt.solvers import isolate
from stepopt.solvers.base import SolveResult, SolveStatus, finish, register_solver
from stepopt.solvers.common import (
    admissible,
    cross_checked,
    pop_tolerance,
    tolerance_message,
    trivial_result,
)
from stepopt.solvers.hint import greedy_hint

DEFAULT_PARAMS: dict[str, Any] = {
    "num_workers": 1,
    "cp_model_presolve": False,
    "linearization_level": 2,
    "random_seed": 0,
}
LEXICOGRAPHIC = ("weighted", "two_phase")
# Our own options, then every field of CP-SAT's SatParameters (passed through to the solver).
_PARAMS = frozenset(
    {"lexicographic", "hint", "start", "hull", "target_tolerance_ns"}
    | set(sat_parameters_pb2.SatParameters.DESCRIPTOR.fields_by_name)
)


# Requests from which a time-limited solve runs in a killable child (below, the fork's ~5 ms
# would double a small solve, and building the model takes a small share of any limit).
ISOLATE_FROM = 1000


class CpsatSolver:
    name = "cpsat"

    def solve(
        self, problem: StepProblem, time_limit: float | None = None, **params: Any
    ) -> SolveResult:
        started = time.perf_counter()
        lex = params.pop("lexicographic", "two_phase")
        use_hint = bool(params.pop("hint", True))
        start = params.pop("start", None)  # a Decision to warm-start from (auto portfolio)
        hull = bool(params.pop("hull", True))
        tolerance = pop_tolerance(params)
        if lex not in LEXICOGRAPHIC:
            raise InputError("lexicographic", f"must be one of {', '.join(LEXICOGRAPHIC)}", lex)
        sat_params = {**DEFAULT_PARAMS, **params}
        args = (problem, started, time_limit, lex, (use_hint, start), hull, tolerance, sat_params)
        pruned = admissible(problem)
        big = len(pruned.running) + len(pruned.waiting) >= ISOLATE_FROM
        if time_limit is None or not big or not isolate.supported():
            return self._solve(pruned, *args)
        # CP-SAT keeps its own limit, but building a model of thousands of requests in Python
        # does not (1.6 s at 7,000 requests): a child killed at the deadline, as for the MILP
        # backends; then the greedy decision.
        res, finished = isolate.run_until(
            lambda _: self._solve(pruned, *args), started + time_limit
        )
        if not finished:
            res = finish(problem, "cpsat", SolveStatus.NO_SOLUTION, None, started)
            res = cross_checked(problem, res, started, time_limit)
        return replace(res, wall_ms=(time.perf_counter() - started) * 1000.0)

    def _solve(
        self, pruned, problem, started, time_limit, lex, hints, hull, tolerance, sat_params
    ) -> SolveResult:
        use_hint, start = hints
        form = build(pruned)  # model building counts against the limit
        early = trivial_result(problem, form, "cpsat", started, time_limit)
        if early is not None:
            return early
        if _left(started, time_limit) == 1e-3:  # building used the limit: the greedy decision
            res = finish(problem, "cpsat", SolveStatus.NO_SOLUTION, None, started)
            return cross_checked(problem, res, started, time_limit)
        enc = encode(form, hull=hull)
        built_ms = (time.perf_counter() - started) * 1000.0
        info: dict[str, Any] = {
            **sat_params,
            "lexicographic": lex,
            "hint": use_hint,
            "hull": hull,
            "target_tolerance_ns": tolerance,
            "build_ms": built_ms,
        }
        # (the greedy decision on the admissible requests: the same one, sooner)
        hint = start if start is not None else (greedy_hint(pruned) if use_hint else None)
        _add_hint(enc, hint)
        run = _two_phase if lex == "two_phase" else _weighted
        res = run(problem, enc, started, time_limit, sat_params, info, tolerance)
        return cross_checked(problem, res, started, time_limit)


def _add_hint(enc: CpsatEncoding, hint: Decision | None) -> None:
    if hint is None:
        return
    for it, c, z in zip(enc.form.items, enc.c, enc.z, strict=True):
        n = hint.get(it.id)
        if not it.decode:
            enc.model.add_hint(c, n)
        enc.model.add_hint(z, n > 0)


# Phase 1 (the primary objective) decides the gap a study reports, so it gets most of the
# time; phase 2 starts from phase 1's decision as a complete hint and keeps it if time runs out.
PHASE1_SHARE = 0.8
TIEBREAK_SHARE_INEXACT = 0.1


def _left(started: float, time_limit: float | None, share: float = 1.0) -> float | None:
    """This phase's share of the time left (model building counts against the limit)."""
    if time_limit is None:
        return None
    return max((time_limit - (time.perf_counter() - started)) * share, 1e-3)


def _solver(params: dict[str, Any], time_limit: float | None) -> cp_model.CpSolver:
    s = cp_model.CpSolver()
    for k, v in params.items():
        try:
            setattr(s.parameters, k, v)
        except (AttributeError, TypeError, ValueError) as exc:
            raise InputError(f"cpsat parameter {k}", str(exc), v) from exc
    if time_limit is not None:
        s.parameters.max_time_in_seconds = max(time_limit, 1e-3)
    return s


def _decision(enc: CpsatEncoding, s: cp_model.CpSolver) -> tuple[Decision, int]:
    values = s.values(enc.c) if enc.c else []
    dec = Decision.of((it.id, int(v)) for it, v in zip(enc.form.items, values, strict=True))
    return dec, int(s.value(enc.latency))


def _keys(enc: CpsatEncoding) -> tuple[Any, Any, int]:
    """(primary, secondary, weight K), both minimized: ``K * primary + secondary`` with
    ``0 <= secondary < K`` orders decisions lexicographically in exact integers."""
    form = enc.form
    if form.objective == "target":
        # Tie-break levels: most scheduled requests, then most weighted tokens, as one exact
        # integer: secondary = (wmax + 1) * (n - b) + (wmax - weighted) in [0, (wmax+1)(n+1))
        wmax, n = form.weighted_max, len(form.items)
        secondary = (wmax + 1) * (n - sum(enc.z)) + (wmax - enc.weighted)
        return enc.deviation, secondary, (wmax + 1) * (n + 1)
    lo, _ = form.latency_range()
    span = max(form.target_ns - lo, 0) + 1
    return -enc.weighted, enc.latency - lo, span


def _primary_bound(enc: CpsatEncoding, value: float) -> float:
    """A bound on the primary objective in its reporting units (ms or weighted tokens)."""
    if enc.form.objective == "target":
        return value / NS_PER_MS
    return -value


def _proved(s: cp_model.CpSolver) -> bool:
    """Whether an OPTIMAL answer is a proof: CP-SAT also says OPTIMAL when it stopped on
    ``absolute_gap_limit`` with the bound still below the incumbent (minimization)."""
    return math.ceil(s.best_objective_bound - 1e-6) >= round(s.objective_value)


def _gap_params(
    enc: CpsatEncoding, params: dict[str, Any], tolerance: int, k: int = 1
) -> dict[str, Any]:
    """Phase parameters with the ``target`` tolerance as CP-SAT's absolute gap limit (``k``
    scales it to a weighted objective ``k * primary + secondary``)."""
    if tolerance <= 0 or enc.form.objective != "target":
        return params
    return {**params, "absolute_gap_limit": float(tolerance * k)}


def _status_of(code: int) -> SolveStatus | None:
    return {
        cp_model.OPTIMAL: SolveStatus.OPTIMAL,
        cp_model.FEASIBLE: SolveStatus.FEASIBLE,
        cp_model.INFEASIBLE: SolveStatus.INFEASIBLE,
        cp_model.MODEL_INVALID: SolveStatus.ERROR,
    }.get(code)


def _first_phase(problem, enc, started, time_limit, info, params, share):
    """Solve the model as it stands: (solver, status, decision, result) where ``result`` is
    the final answer when there is no decision (infeasible, nothing found, error)."""
    s = _solver(params, _left(started, time_limit, share))
    code = s.solve(enc.model)
    info["phases"] = 1
    status = _status_of(code) or SolveStatus.NO_SOLUTION
    if status in (SolveStatus.INFEASIBLE, SolveStatus.NO_SOLUTION, SolveStatus.ERROR):
        msg = "" if status != SolveStatus.ERROR else f"CP-SAT: {s.status_name(code)}"
        done = finish(
            problem, "cpsat", status, None, started, time_limit=time_limit, params=info, message=msg
        )
        return s, status, None, done
    dec, lat = _decision(enc, s)
    info["model_latency_ns"] = lat
    return s, status, dec, None


def _weighted(problem, enc, started, time_limit, params, info, tolerance) -> SolveResult:
    primary, secondary, k = _keys(enc)
    lo, hi = enc.form.latency_range()
    span = max(hi - lo, abs(hi - enc.form.target_ns), abs(lo - enc.form.target_ns)) + 1
    if k * span >= 2**62:  # K * primary would leave CP-SAT's 64-bit range
        info["lexicographic"] = "two_phase (weighted objective out of 64-bit range)"
        return _two_phase(problem, enc, started, time_limit, params, info, tolerance)
    enc.model.minimize(k * primary + secondary)
    s, status, dec, done = _first_phase(
        problem, enc, started, time_limit, info, _gap_params(enc, params, tolerance, k), 1.0
    )
    if done is not None:
        return done
    bound = None
    msg = "time limit reached: not proven optimal" if status == SolveStatus.FEASIBLE else ""
    if status == SolveStatus.OPTIMAL and not _proved(s):
        status, msg = SolveStatus.FEASIBLE, "stopped within the tolerance: not proven optimal"
    if status == SolveStatus.FEASIBLE:
        # K * primary + secondary >= B and 0 <= secondary < K  =>  primary >= ceil((B-K+1)/K)
        raw = s.best_objective_bound
        prim = -(-(int(raw) - k + 1) // k)
        bound = _primary_bound(enc, prim)
    return finish(
        problem,
        "cpsat",
        status,
        dec,
        started,
        bound=bound,
        time_limit=time_limit,
        params=info,
        message=msg,
    )


def _two_phase(problem, enc, started, time_limit, params, info, tolerance) -> SolveResult:
    # long: the two lexicographic phases top to bottom: phase 2 reads phase 1's value, bound and
    # hints
    primary, secondary, _ = _keys(enc)
    enc.model.minimize(primary)
    s, status, dec, done = _first_phase(
        problem, enc, started, time_limit, info, _gap_params(enc, params, tolerance), PHASE1_SHARE
    )
    if done is not None:
        return done
    if status == SolveStatus.FEASIBLE:
        bound = _primary_bound(enc, s.best_objective_bound)
        return finish(
            problem,
            "cpsat",
            status,
            dec,
            started,
            bound=bound,
            time_limit=time_limit,
            params=info,
            message="primary objective not proven",
        )
    best = round(s.objective_value)
    # Below ``best`` when phase 1 stopped on the tolerance (CP-SAT still says OPTIMAL).
    proven = min(math.ceil(s.best_objective_bound - 1e-6), best)
    enc.model.add(primary <= best)
    enc.model.clear_hints()
    for v, val in zip(enc.c, s.values(enc.c), strict=True):
        enc.model.add_hint(v, int(val))
    enc.model.minimize(secondary)
    # When phase 1 stopped on the tolerance the result is FEASIBLE whatever phase 2 proves,
    # so the tie-break gets a short search instead of the whole remaining time.
    share = 1.0 if proven == best else TIEBREAK_SHARE_INEXACT
    s2 = _solver(params, _left(started, time_limit, share))
    code2 = s2.solve(enc.model)
    info["phases"] = 2
    st2 = _status_of(code2)
    if st2 in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        dec, lat = _decision(enc, s2)
        info["model_latency_ns"] = lat
    exact = proven == best
    status = SolveStatus.OPTIMAL if st2 == SolveStatus.OPTIMAL and exact else SolveStatus.FEASIBLE
    notes = []
    if not exact:
        target = enc.form.objective == "target"
        notes.append(
            tolerance_message(tolerance)
            if target
            else "primary objective stopped on the gap limit, not proven"
        )
    if st2 != SolveStatus.OPTIMAL:
        notes.append("tie-break not proven")
    msg = "; ".join(notes)
    return finish(
        problem,
        "cpsat",
        status,
        dec,
        started,
        bound=_primary_bound(enc, proven),
        time_limit=time_limit,
        params=info,
        message=msg,
    )


@register_solver(
    "cpsat",
    params=lambda: _PARAMS,
    params_doc="lexicographic, hint, start, hull, target_tolerance_ns or a CP-SAT SatParameters "
    "field",
)
def _factory() -> CpsatSolver:
    return CpsatSolver()
