"""One unit of work: every algorithm of a study on one problem, judged by the evaluator.

Runs in a worker process (or on a Dask worker), so it takes plain data (the problem document,
not a path: workers need no shared file system) and returns plain rows.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from stepopt.evaluate import Evaluation, evaluate
from stepopt.gap import relative_gap
from stepopt.heuristics.base import HEURISTIC_STATUS, checked_decision, get_heuristic

HEURISTIC, EXACT = "heuristic", "exact"
# gap_kind of a gap against a usable reference: proven optimal exactly, or (``target``) with
# |L - T| proven within the study's ``target_tolerance_ns`` of the optimum.
OPTIMAL_KIND, TOLERANCE_KIND = "optimal", "within_tolerance"
GAP_KINDS = (OPTIMAL_KIND, TOLERANCE_KIND)


@dataclass(frozen=True)
class Task:
    """Run ``algorithms`` (heuristic names and the exact solver) on one problem."""

    problem_doc: dict[str, Any]
    problem_hash: str
    dims: dict[str, Any]
    heuristics: tuple[str, ...]
    solver: str
    time_limit: float | None
    solver_params: dict[str, Any] = field(default_factory=dict)
    settings: str = ""
    version: str = ""
    target_tolerance_ns: int = 0


def reference_class(row: dict[str, Any]) -> str:
    """What a stored row's exact reference is: ``exact`` (proven optimal), ``within_tolerance``
    (``target``: |L - T| proven within the study's tolerance), ``unproven`` or ``missing``."""
    status = row.get("ref_status")
    if status == "OPTIMAL":
        return "exact"
    if status != "FEASIBLE":
        return "missing"
    within, tol = row.get("ref_proven_within_ns"), row.get("target_tolerance_ns")
    ok = row.get("objective") == "target" and within is not None and tol is not None
    return "within_tolerance" if ok and within <= tol else "unproven"


def _eval_cols(ev: Evaluation | None) -> dict[str, Any]:
    if ev is None:
        return {
            "feasible": None,
            "hard_feasible": None,
            "violations": None,
            "latency_ms": None,
            "objective_value": None,
            "tiebreak": None,
            "scheduled_tokens": None,
            "batch_size": None,
        }
    return {
        "feasible": ev.feasible,
        "hard_feasible": ev.hard_feasible,
        "violations": ",".join(sorted({str(v.rule) for v in ev.violations})),
        "latency_ms": ev.latency_ms,
        "objective_value": ev.objective,
        "tiebreak": ev.tiebreak,
        "scheduled_tokens": ev.scheduled_tokens,
        "batch_size": ev.batch_size,
    }


def run_task(task: Task) -> list[dict[str, Any]]:
    """Rows for every algorithm of ``task`` (one per algorithm, errors included)."""
    from stepopt.io import problem_from_dict
    from stepopt.solvers.base import SolveStatus, solve

    problem = problem_from_dict(task.problem_doc)
    target = problem.target_latency_ms
    worker = f"{socket.gethostname()}:{os.getpid()}"
    base = {
        "problem_hash": task.problem_hash,
        "objective": problem.objective,
        "target_ms": target,
        "settings": task.settings,
        "version": task.version,
        "worker": worker,
        "target_tolerance_ns": task.target_tolerance_ns,
        **task.dims,
    }
    tol = task.target_tolerance_ns
    extra = {"target_tolerance_ns": tol} if tol else {}

    # The exact reference first: every heuristic row carries its status and bound.
    t0 = time.perf_counter()
    try:
        res = solve(problem, task.solver, time_limit=task.time_limit, **extra, **task.solver_params)
        ref_status, ref_ev, bound, message = str(res.status), res.evaluation, res.bound, res.message
        if res.status == SolveStatus.INFEASIBLE and not message:
            from stepopt.diagnose import infeasibility_reason

            message = infeasibility_reason(problem)
        solve_ms = res.wall_ms
        ref_tokens = None if res.decision is None else res.decision.scheduled()
        solver_gap = res.gap
        within_ns = getattr(res, "proven_within_ns", None)  # a user's solver may lack it
        backend = res.params.get("answered_by", task.solver)
    except Exception as exc:  # a solver failure is a result, not a crash of the study
        ref_status, ref_ev, bound, message = "ERROR", None, None, f"{type(exc).__name__}: {exc}"
        solve_ms = (time.perf_counter() - t0) * 1000.0
        ref_tokens, solver_gap, within_ns, backend = None, None, None, None
    proven = ref_status == str(SolveStatus.OPTIMAL) and ref_ev is not None
    # FEASIBLE but |L - T| proven within the tolerance (a tolerance stop, or a primary proven
    # exactly with an unproven tie-break): its gaps are exact to within ``within_ns / T``.
    within = (
        not proven
        and ref_status == str(SolveStatus.FEASIBLE)
        and ref_ev is not None
        and problem.objective == "target"
        and within_ns is not None
        and within_ns <= tol
    )
    usable = proven or within
    kind = OPTIMAL_KIND if proven else TOLERANCE_KIND
    base["ref_proven_within_ns"] = 0 if proven else within_ns
    base["ref_backend"] = backend
    ref_obj = None if ref_ev is None else ref_ev.objective
    rows = []

    exact = {
        **base,
        "algorithm": task.solver,
        "kind": EXACT,
        "status": ref_status,
        "message": message,
        **_eval_cols(ref_ev),
        "bound": bound,
        "solver_gap": solver_gap,
        "ref_status": ref_status,
        "ref_objective": ref_obj,
        "gap": 0.0 if usable else None,
        "gap_abs": 0.0 if usable else None,
        "gap_bound": None,
        "gap_incumbent": None,
        "gap_kind": kind if usable else _no_gap_kind(ref_status, ref_ev),
        "n_preempted": None if ref_tokens is None else 0,
        "decision_ms": solve_ms,
        "solve_ms": solve_ms,
        "decision": None if ref_tokens is None else json.dumps(ref_tokens, sort_keys=True),
    }
    if ref_status == str(SolveStatus.FEASIBLE) and ref_ev is not None and bound is not None:
        # Within tolerance: how far the reference itself may be from the optimum (<= tol / T).
        exact["gap_bound"] = relative_gap(problem.objective, ref_ev.objective, bound, target)
        if not within:
            exact["gap_kind"] = "bound"
    rows.append(exact)

    for name in task.heuristics:
        row = {**base, "algorithm": name, "kind": HEURISTIC, "bound": bound, "solver_gap": None}
        row.update({"ref_status": ref_status, "ref_objective": ref_obj, "solve_ms": solve_ms})
        t0 = time.perf_counter()
        try:
            fn = get_heuristic(name)  # imports happen here, outside the timed call
            t0 = time.perf_counter()
            dec = fn(problem)
            decision_ms = (time.perf_counter() - t0) * 1000.0
            dec = checked_decision(dec, name)  # a user's callable may return anything
            ev = evaluate(problem, dec)
            row.update(
                status=HEURISTIC_STATUS,
                message="",
                decision=json.dumps(dec.scheduled(), sort_keys=True),
            )
        except Exception as exc:
            decision_ms = (time.perf_counter() - t0) * 1000.0
            ev = None
            row.update(status="ERROR", message=f"{type(exc).__name__}: {exc}", decision=None)
            dec = None
        row.update(_eval_cols(ev), decision_ms=decision_ms)
        row["n_preempted"] = None if ev is None else len(dec.preempted)
        row.update(gap=None, gap_abs=None, gap_bound=None, gap_incumbent=None)
        if ev is None:
            row["gap_kind"] = "error"
        elif not ev.feasible:
            row["gap_kind"] = "violation"  # L > T under goodput, or any hard rule: not a gap
        elif dec.preempted:
            # Preemption frees slots and KV blocks: a decision the exact model does not have,
            # so the optimum is no reference for it (it may even beat it).
            row["gap_kind"] = "preemption"
        elif usable:
            # Within tolerance the true gap lies in [gap, gap + within_ns / T]; it may be
            # slightly negative when the heuristic beat the (not exactly optimal) reference.
            row["gap"] = relative_gap(problem.objective, ev.objective, ref_obj, target)
            row["gap_abs"] = (
                ev.objective - ref_obj if problem.objective == "target" else ref_obj - ev.objective
            )
            row["gap_kind"] = kind
        elif ref_status == str(SolveStatus.FEASIBLE) and ref_obj is not None:
            # Unproven: the true gap lies between these two (incumbent below, bound above).
            row["gap_incumbent"] = relative_gap(problem.objective, ev.objective, ref_obj, target)
            if bound is not None:
                row["gap_bound"] = relative_gap(problem.objective, ev.objective, bound, target)
            row["gap_kind"] = "bound"
        else:
            row["gap_kind"] = "no_reference"
        rows.append(row)
    return rows


def _no_gap_kind(status: str, ev: Evaluation | None) -> str:
    if status == "INFEASIBLE":
        return "infeasible_problem"
    if status in ("NO_SOLUTION", "ERROR") or ev is None:
        return "no_reference"
    return "bound"
