"""Exact solvers through PuLP: ``cbc`` (bundled CBC binary) and ``highs`` (in-process highspy).

The lexicographic objective is solved in phases: the primary objective, then each tie-break
level with the levels before it fixed at their optima (``target``: most scheduled requests,
then most weighted tokens; ``goodput``: lowest latency). Phase 1 (the primary, what a gap
measures) gets 80 % of the time left, a middle phase half, the last one the rest; the whole
call, model building included, is bounded by the limit. Tolerances: integrality 1e-9, primal
feasibility 1e-7 (see ``PRIMAL_TOLERANCE``), relative gap 0, absolute gap below 1 on
objectives that are integers, so the optimum is exact; the decision is read back by rounding
and judged by the evaluator. A verdict short of OPTIMAL is cross-checked
(:func:`~stepopt.solvers.common.cross_checked`).

``target_tolerance_ns=N`` (default 0) raises the primary phase's absolute gap of ``target`` to
``N + 0.99`` ns: it stops once |L - T| is within N ns of the bound. The backends then say
optimal, but they prune the nodes within the gap, so this proves the optimum within N ns only
(never exactly, unless |L - T| = 0): the result is FEASIBLE with the bound ``max(|L - T| - N,
0)``, or the backend's bound when lower. Prefer ``cpsat`` with a tolerance.

With a time limit, the solve (model building included) runs in a forked child killed at the
deadline (:mod:`~stepopt.solvers.isolate`): the backends' own limits are advice, HiGHS overran
them by seconds. The child reports the result of each proven phase as it has it; a killed
solve returns the last one (FEASIBLE, tie-break not proven) or, when none, the greedy
decision. Both backends start from the greedy decision (CBC through PuLP's ``warmStart``, HiGHS
through ``Highs.setSolution`` on PuLP's model) and each later phase from the one before.

PuLP reports a time-limited run as ``status == "Optimal"``; only ``sol_status`` tells a proven
optimum (``LpSolutionOptimal``) from an incumbent (``LpSolutionIntegerFeasible``).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from dataclasses import replace
from typing import Any

import pulp

from stepopt.formulation import build
from stepopt.formulation.milp import MilpEncoding, encode
from stepopt.formulation.milp_start import set_start
from stepopt.model import NS_PER_MS, Decision, StepProblem
from stepopt.solvers import isolate
from stepopt.solvers.base import SolveResult, SolveStatus, finish, register_solver
from stepopt.solvers.common import (
    TOLERANCE_PARAM,
    admissible,
    cross_checked,
    pop_tolerance,
    tolerance_message,
    trivial_result,
)
from stepopt.solvers.hint import greedy_hint
from stepopt.solvers.pulp_backends import ABS_GAP, TOLERANCE, PulpBackend, make_cbc, make_highs

PHASE1_SHARE = 0.8
_UNPROVEN = "tie-break not proven (stopped at the time limit)"


def _expired(started: float, time_limit: float | None) -> bool:
    return time_limit is not None and time.perf_counter() - started >= time_limit * 0.95


def _status(prob: pulp.LpProblem) -> SolveStatus:
    if prob.sol_status == pulp.LpSolutionOptimal:
        return SolveStatus.OPTIMAL
    if prob.sol_status == pulp.LpSolutionIntegerFeasible:
        return SolveStatus.FEASIBLE
    if prob.status == pulp.LpStatusInfeasible or prob.sol_status == pulp.LpSolutionInfeasible:
        return SolveStatus.INFEASIBLE
    if prob.status == pulp.LpStatusNotSolved:
        return SolveStatus.NO_SOLUTION
    return SolveStatus.ERROR


def _read(enc: MilpEncoding) -> tuple[Decision, int]:
    dec = Decision.of(
        (it.id, round(v.varValue or 0)) for it, v in zip(enc.form.items, enc.c, strict=True)
    )
    return dec, round(_value(enc.latency))


def _value(expr: pulp.LpAffineExpression | pulp.LpVariable) -> float:
    """Like ``pulp.value`` but a variable the backend never saw (all its coefficients were
    zero, so the file or model omitted it) counts as 0 instead of making the sum None."""
    if isinstance(expr, pulp.LpVariable):
        return expr.varValue or 0.0
    return expr.constant + sum(a * (v.varValue or 0.0) for v, a in expr.items())


class MilpSolver:
    def __init__(self, backend: PulpBackend):
        self.backend = backend
        self.name = backend.name

    def solve(
        self, problem: StepProblem, time_limit: float | None = None, **params: Any
    ) -> SolveResult:
        started = time.perf_counter()
        params = dict(params)
        tolerance = pop_tolerance(params)  # the only parameter (the registry checks names)
        if time_limit is None or not isolate.supported():
            return self._solve(problem, started, time_limit, tolerance, None)
        # The backends' own limits are advice (HiGHS overran them by seconds): the solve runs
        # in a child killed at the deadline, which reports each phase's result as it has it.
        res, finished = isolate.run_until(
            lambda report: self._solve(problem, started, time_limit, tolerance, report),
            started + time_limit,
        )
        if not finished:
            res = self._killed(problem, res, started, time_limit)
        return replace(res, wall_ms=(time.perf_counter() - started) * 1000.0)

    def _solve(self, problem, started, time_limit, tolerance, report) -> SolveResult:
        name = self.name
        pruned = admissible(problem)
        form = build(pruned)  # model building counts against the limit
        early = trivial_result(problem, form, name, started, time_limit)
        if early is not None:
            return early
        if _expired(started, time_limit):
            return self._out_of_time(problem, started, time_limit)
        enc = encode(form)
        hint = greedy_hint(pruned)
        if hint is not None:
            set_start(enc, hint.scheduled())  # the backends start from the greedy decision
        if _expired(started, time_limit):
            return self._out_of_time(problem, started, time_limit)
        info: dict[str, Any] = {
            "tolerance": TOLERANCE,
            "abs_gap": ABS_GAP,
            "target_tolerance_ns": tolerance,
            "build_ms": (time.perf_counter() - started) * 1000.0,
            "phases": 1,
        }
        try:
            with tempfile.TemporaryDirectory(prefix="stepopt-") as tmp:
                log = os.path.join(tmp, "solver.log") if name == "cbc" else None
                args = (problem, enc, started, time_limit, info, log, tolerance, report)
                return cross_checked(problem, self._phases(*args), started, time_limit)
        except (pulp.PulpSolverError, OSError) as exc:
            return finish(
                problem,
                name,
                SolveStatus.ERROR,
                None,
                started,
                time_limit=time_limit,
                params=info,
                message=f"{name}: {exc}",
            )

    def _killed(self, problem, res, started, time_limit) -> SolveResult:
        """The last result the killed child reported (a proven primary phase, its tie-break
        not proven), or none: either way checked against the greedy decision."""
        if res is None:
            res = finish(
                problem,
                self.name,
                SolveStatus.NO_SOLUTION,
                None,
                started,
                time_limit=time_limit,
                message="stopped at the time limit",
            )
        return cross_checked(problem, res, started, time_limit)

    def _phases(
        self, problem, enc, started, time_limit, info, log, tolerance, report
    ) -> SolveResult:
        # long: the lexicographic phases top to bottom: each fixes the previous objective and
        # reports the incumbent before the next one runs
        name = self.name
        target = enc.form.objective == "target"
        primary = enc.deviation if target else -enc.weighted
        tol = tolerance if target else 0
        gap = ABS_GAP + tol
        st, bound = self._run(enc, primary, started, time_limit, PHASE1_SHARE, log, gap)
        if st not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
            return finish(
                problem,
                name,
                st,
                None,
                started,
                time_limit=time_limit,
                params=info,
                message="" if st != SolveStatus.ERROR else f"PuLP status {enc.prob.status}",
            )
        dec, lat = _read(enc)
        info["model_latency_ns"] = lat
        best = _value(primary)
        if st == SolveStatus.FEASIBLE:
            return self._done(
                problem,
                enc,
                st,
                dec,
                started,
                time_limit,
                info,
                bound,
                "primary objective not proven",
            )
        # Phase 2: keep the primary at its optimum (integer-valued: +0.5 is slack for
        # tolerances only), optimize the tie-break.
        best_i = round(best)
        # Without a tolerance the backend stops at a gap below 1: a proof on integers. With one,
        # its "optimal" only proves |L - T| - opt < tol + 1, i.e. <= tol: CBC and HiGHS prune
        # the nodes within the gap, so a reported bound above ``best - tol`` is not a proof.
        proven = best_i
        if tol > 0:
            proven = max(best_i - tol, 0)
            if bound is not None:
                proven = max(min(math.ceil(bound - 1e-6), proven), 0)
        if report is not None:  # what the caller keeps if the tie-breaks run out of time
            note = "; ".join([*([tolerance_message(tol)] if proven < best_i else []), _UNPROVEN])
            report(
                self._done(
                    problem, enc, SolveStatus.FEASIBLE, dec, started, time_limit, info, proven, note
                )
            )
        if target:
            enc.prob += enc.deviation <= best_i + 0.5, "fix_primary"
            # Then most scheduled requests (unweighted), fixed, then most weighted tokens.
            st2, _ = self._run(enc, -pulp.lpSum(enc.z), started, time_limit, 0.5, log)
            info["phases"] = 2
            if st2 == SolveStatus.OPTIMAL:
                n_best = round(sum(v.varValue or 0 for v in enc.z))
                dec, lat = _read(enc)
                info["model_latency_ns"] = lat
                enc.prob += pulp.lpSum(enc.z) >= n_best - 0.5, "fix_requests"
                if report is not None:
                    report(
                        self._done(
                            problem,
                            enc,
                            SolveStatus.FEASIBLE,
                            dec,
                            started,
                            time_limit,
                            info,
                            proven,
                            _UNPROVEN,
                        )
                    )
                st2, _ = self._run(enc, -enc.weighted, started, time_limit, 1.0, log)
                info["phases"] = 3
        else:
            enc.prob += enc.weighted >= -best_i - 0.5, "fix_primary"
            st2, _ = self._run(enc, enc.latency, started, time_limit, 1.0, log)
            info["phases"] = 2
        if st2 in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
            dec, lat = _read(enc)
            info["model_latency_ns"] = lat
        exact = proven >= best_i
        ok = st2 == SolveStatus.OPTIMAL and exact
        status = SolveStatus.OPTIMAL if ok else SolveStatus.FEASIBLE
        notes = [] if exact else [tolerance_message(tol)]
        if st2 != SolveStatus.OPTIMAL:
            notes.append(f"tie-break not proven (phase 2: {st2})")
        msg = "; ".join(notes)
        return self._done(problem, enc, status, dec, started, time_limit, info, proven, msg)

    def _out_of_time(self, problem, started, time_limit) -> SolveResult:
        res = finish(problem, self.name, SolveStatus.NO_SOLUTION, None, started)
        return cross_checked(problem, res, started, time_limit)

    def _run(self, enc, objective, started, time_limit, share, log, abs_gap=ABS_GAP):
        if _expired(started, time_limit):  # the limit bounds the whole call
            return SolveStatus.NO_SOLUTION, None
        enc.prob.setObjective(objective)
        tl = None
        if time_limit is not None:
            # 90 %: reading the answer back and cross-checking it also count against the limit
            left = 0.9 * time_limit - (time.perf_counter() - started)
            tl = max(left * share, 0.01)
        if log and os.path.exists(log):
            os.remove(log)
        enc.prob.solve(self.backend.make(tl, log, abs_gap))
        return _status(enc.prob), self.backend.bound(enc.prob, log)

    def _done(self, problem, enc, status, dec, started, time_limit, info, bound, msg):
        if bound is not None:
            # Bound on the minimized primary, an integer: deviation in ns (rounded up) or minus
            # the weighted tokens (so the token bound is rounded down).
            if enc.form.objective == "target":
                bound = math.ceil(bound - 1e-6) / NS_PER_MS
            else:
                bound = float(math.floor(-bound + 1e-6))
        return finish(
            problem,
            self.name,
            status,
            dec,
            started,
            bound=bound,
            time_limit=time_limit,
            params=info,
            message=msg,
        )


@register_solver("cbc", params=(TOLERANCE_PARAM,), available=lambda: _available("cbc"))
def _cbc() -> MilpSolver:
    return MilpSolver(make_cbc())


@register_solver("highs", params=(TOLERANCE_PARAM,), available=lambda: _available("highs"))
def _highs() -> MilpSolver:
    return MilpSolver(make_highs())


def _available(backend: str) -> bool:
    """Whether PuLP finds the backend (CBC's bundled binary, the highspy package)."""
    if backend == "highs":
        import importlib.util

        return importlib.util.find_spec("highspy") is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # as in _Cbc.make
        return bool(pulp.PULP_CBC_CMD(msg=False).available())
