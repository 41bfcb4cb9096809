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
from stepopt.model import Decision, StepProblem

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

    problem = problem_from_dict(task.problem_doc)
    base = {
        "problem_hash": task.problem_hash,
        "objective": problem.objective,
        "target_ms": problem.target_latency_ms,
        "settings": task.settings,
        "version": task.version,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "target_tolerance_ns": task.target_tolerance_ns,
        **task.dims,
    }
    # The exact reference first: every heuristic row carries its status and bound.
    ref = _reference(problem, task)
    base["ref_proven_within_ns"] = 0 if ref.proven else ref.within_ns
    base["ref_backend"] = ref.backend
    rows = [_exact_row(base, task.solver, problem, ref)]
    rows += [_heuristic_row(base, name, problem, ref) for name in task.heuristics]
    return rows


@dataclass
class _Reference:
    """The exact solver's answer, as the rows use it."""

    status: str
    evaluation: Evaluation | None
    bound: float | None
    message: str
    solve_ms: float
    tokens: dict[str, int] | None = None
    solver_gap: float | None = None
    within_ns: int | None = None
    backend: str | None = None
    proven: bool = False  # proven optimal
    usable: bool = False  # proven, or (target) |L - T| proven within the tolerance
    within: bool = False  # usable through the tolerance only

    @property
    def objective(self) -> Any:
        return None if self.evaluation is None else self.evaluation.objective


def _reference(problem: StepProblem, task: Task) -> _Reference:
    """Solve ``problem`` exactly (a solver failure is a result, not a crash of the study)."""
    from stepopt.solvers.base import SolveStatus, solve

    tol = task.target_tolerance_ns
    extra = {"target_tolerance_ns": tol} if tol else {}
    t0 = time.perf_counter()
    try:
        res = solve(problem, task.solver, time_limit=task.time_limit, **extra, **task.solver_params)
        message = res.message
        if res.status == SolveStatus.INFEASIBLE and not message:
            from stepopt.diagnose import infeasibility_reason

            message = infeasibility_reason(problem)
        ref = _Reference(
            str(res.status),
            res.evaluation,
            res.bound,
            message,
            res.wall_ms,
            None if res.decision is None else res.decision.scheduled(),
            res.gap,
            getattr(res, "proven_within_ns", None),  # a user's solver may lack it
            res.params.get("answered_by", task.solver),
        )
    except Exception as exc:
        wall = (time.perf_counter() - t0) * 1000.0
        ref = _Reference("ERROR", None, None, f"{type(exc).__name__}: {exc}", wall)
    ref.proven = ref.status == str(SolveStatus.OPTIMAL) and ref.evaluation is not None
    # FEASIBLE but |L - T| proven within the tolerance (a tolerance stop, or a primary proven
    # exactly with an unproven tie-break): its gaps are exact to within ``within_ns / T``.
    ref.within = (
        not ref.proven
        and ref.status == str(SolveStatus.FEASIBLE)
        and ref.evaluation is not None
        and problem.objective == "target"
        and ref.within_ns is not None
        and ref.within_ns <= tol
    )
    ref.usable = ref.proven or ref.within
    return ref


def _exact_row(
    base: dict[str, Any], solver: str, problem: StepProblem, ref: _Reference
) -> dict[str, Any]:
    """The exact solver's own row (gap 0 when it is a usable reference)."""
    kind = OPTIMAL_KIND if ref.proven else TOLERANCE_KIND
    usable, ev, bound = ref.usable, ref.evaluation, ref.bound
    row = {
        **base,
        "algorithm": solver,
        "kind": EXACT,
        "status": ref.status,
        "message": ref.message,
        **_eval_cols(ev),
        "bound": bound,
        "solver_gap": ref.solver_gap,
        "ref_status": ref.status,
        "ref_objective": ref.objective,
        "gap": 0.0 if usable else None,
        "gap_abs": 0.0 if usable else None,
        "gap_bound": None,
        "gap_incumbent": None,
        "gap_kind": kind if usable else _no_gap_kind(ref.status, ev),
        "n_preempted": None if ref.tokens is None else 0,
        "decision_ms": ref.solve_ms,
        "solve_ms": ref.solve_ms,
        "decision": None if ref.tokens is None else json.dumps(ref.tokens, sort_keys=True),
    }
    if ref.status == "FEASIBLE" and ev is not None and bound is not None:
        # Within tolerance: how far the reference itself may be from the optimum (<= tol / T).
        row["gap_bound"] = relative_gap(problem.objective, ev.objective, bound, base["target_ms"])
        if not ref.within:
            row["gap_kind"] = "bound"
    return row


def _heuristic_row(
    base: dict[str, Any], name: str, problem: StepProblem, ref: _Reference
) -> dict[str, Any]:
    """A heuristic's row: its decision, judged, and its gap to the reference."""
    row = {**base, "algorithm": name, "kind": HEURISTIC, "bound": ref.bound, "solver_gap": None}
    row.update({"ref_status": ref.status, "ref_objective": ref.objective})
    row["solve_ms"] = ref.solve_ms
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
    row["n_preempted"] = None if ev is None else len(dec.preempted)  # type: ignore[union-attr]
    row.update(gap=None, gap_abs=None, gap_bound=None, gap_incumbent=None)
    row.update(_gap_cols(problem, ev, dec, ref))
    return row


def _gap_cols(
    problem: StepProblem, ev: Evaluation | None, dec: Decision | None, ref: _Reference
) -> dict[str, Any]:
    """A heuristic's gap columns against the reference, and what kind of gap they are."""
    target, ref_obj = problem.target_latency_ms, ref.objective
    if ev is None:
        return {"gap_kind": "error"}
    if not ev.feasible:
        return {"gap_kind": "violation"}  # L > T under goodput, or any hard rule: not a gap
    if dec is not None and dec.preempted:
        # Preemption frees slots and KV blocks: a decision the exact model does not have, so
        # the optimum is no reference for it (it may even beat it).
        return {"gap_kind": "preemption"}
    if ref.usable:
        # Within tolerance the true gap lies in [gap, gap + within_ns / T]; it may be slightly
        # negative when the heuristic beat the (not exactly optimal) reference.
        gap_abs = (
            ev.objective - ref_obj if problem.objective == "target" else ref_obj - ev.objective
        )
        return {
            "gap": relative_gap(problem.objective, ev.objective, ref_obj, target),
            "gap_abs": gap_abs,
            "gap_kind": OPTIMAL_KIND if ref.proven else TOLERANCE_KIND,
        }
    if ref.status == "FEASIBLE" and ref_obj is not None:
        # Unproven: the true gap lies between these two (incumbent below, bound above).
        out = {
            "gap_incumbent": relative_gap(problem.objective, ev.objective, ref_obj, target),
            "gap_kind": "bound",
        }
        if ref.bound is not None:
            out["gap_bound"] = relative_gap(problem.objective, ev.objective, ref.bound, target)
        return out
    return {"gap_kind": "no_reference"}


def _no_gap_kind(status: str, ev: Evaluation | None) -> str:
    if status == "INFEASIBLE":
        return "infeasible_problem"
    if status in ("NO_SOLUTION", "ERROR") or ev is None:
        return "no_reference"
    return "bound"
