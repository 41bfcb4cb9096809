"""The PuLP backends: CBC (the bundled binary) and HiGHS (in-process highspy), with the
options every exact run uses and the reading of each backend's proven bound."""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from typing import Any

import pulp

TOLERANCE = 1e-9  # integrality
# Primal feasibility: an absolute tolerance of 1e-9 is below the resolution of doubles on rows
# whose constants are latencies in ns (~1e8): CBC then declared problems with optima
# INFEASIBLE. The backends' default 1e-7 cannot change an integer solution (the evaluator
# re-judges it), and every optimum then matched brute force.
PRIMAL_TOLERANCE = 1e-7
ABS_GAP = 0.99  # objectives are integers: a gap below 1 proves optimality


class PulpBackend:
    name = ""

    def make(
        self, time_limit: float | None, log_path: str | None, abs_gap: float = ABS_GAP
    ) -> pulp.LpSolver:
        raise NotImplementedError

    def bound(self, prob: pulp.LpProblem, log_path: str | None) -> float | None:
        raise NotImplementedError


_banner_shown = False


def _silence_banner() -> None:
    """highspy prints a banner when the first ``Highs`` object is built, before any option
    can be set; build that first one with stdout redirected."""
    global _banner_shown
    if _banner_shown:
        return
    _banner_shown = True
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class _Highs(PulpBackend):
    name = "highs"

    def make(self, time_limit, log_path, abs_gap=ABS_GAP):
        _silence_banner()
        return _HighsUntil(
            deadline=None if time_limit is None else time.perf_counter() + time_limit,
            msg=False,
            timeLimit=time_limit,
            gapRel=0.0,
            gapAbs=abs_gap,
            threads=1,
            # HiGHS's MIP feasibility tolerance (integrality and rows) must not be tighter than
            # the LP's primal tolerance: at 1e-9 under 1e-7 its search discarded the LP
            # relaxations' solutions and proved worse decisions "optimal" (edge_cases small:322
            # and weighted_ties:618, visible once the greedy warm start is off).
            mip_feasibility_tolerance=PRIMAL_TOLERANCE,
            primal_feasibility_tolerance=PRIMAL_TOLERANCE,
            random_seed=0,
            # HiGHS 1.16's presolve returned a wrong "optimal" on generated problems here (the
            # empty batch, strictly better, was cut off). Without it one wrong proof remains
            # known (edge_cases zero_pieces:486, a decision worse than the empty step): every
            # OPTIMAL claim is checked against the greedy decision and the empty step
            # (solvers.common.cross_checked), which turns it into an honest FEASIBLE.
            presolve="off",
        )

    def bound(self, prob, log_path):
        try:
            value = prob.solverModel.getInfo().mip_dual_bound
        except AttributeError:
            return None
        return value if abs(value) < 1e300 else None


class _HighsUntil(pulp.HiGHS):
    """PuLP's HiGHS whose time limit is what is left of the phase once PuLP has copied the
    model into highspy (half a second of Python at a thousand requests): the limit is a
    deadline, not a duration that starts after the copy."""

    def __init__(self, deadline: float | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.deadline = deadline

    def callSolver(self, lp: pulp.LpProblem) -> None:
        if self.deadline is not None:
            left = max(self.deadline - time.perf_counter(), 0.01)
            lp.solverModel.setOptionValue("time_limit", float(left))
        # Warm start: PuLP's HiGHS interface takes none, but its model is the highspy one
        # (columns in ``lp.variables()`` order, see ``buildSolverModel``).
        start = [v.varValue for v in lp.variables()]
        if all(x is not None for x in start):
            import highspy

            sol = highspy.HighsSolution()
            sol.col_value = start
            lp.solverModel.setSolution(sol)
        super().callSolver(lp)


_CBC_BOUND = re.compile(r"^Lower bound:\s*(\S+)", re.MULTILINE)


class _Cbc(PulpBackend):
    name = "cbc"

    def make(self, time_limit, log_path, abs_gap=ABS_GAP):
        with warnings.catch_warnings():
            # PuLP 3 deprecates the bundled-binary class; it is still the one that ships CBC.
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._make(time_limit, log_path, abs_gap)

    def _make(self, time_limit, log_path, abs_gap):
        return pulp.PULP_CBC_CMD(
            msg=False,
            timeLimit=time_limit,
            gapRel=0.0,
            gapAbs=abs_gap,
            threads=1,
            warmStart=True,  # the variables' start values (greedy, then the previous phase)
            # CBC 2.10's preprocessing "proved" feasible tie-break phases infeasible on two
            # generated problems, and its two-step MIR cuts cut off an optimum; without both,
            # every optimum matched the brute-force oracle.
            options=[
                f"integerT {TOLERANCE}",
                f"primalT {PRIMAL_TOLERANCE}",
                "preprocess off",
                "twoMir off",
                "randomSeed 1",
                # the limit is wall time (CBC counts CPU seconds by default, which on a busy
                # machine lets a run overrun the caller's deadline)
                "timeMode elapsed",
            ],
            logPath=log_path,
        )

    def bound(self, prob, log_path):
        if not log_path or not os.path.exists(log_path):
            return None
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        # A search that ran to completion prints no "Lower bound" line; with a gap limit
        # above 1 it pruned nodes within that gap, so it proves nothing tighter than the gap.
        m = _CBC_BOUND.search(text)
        try:
            return float(m.group(1)) if m else None
        except ValueError:
            return None


def make_cbc() -> PulpBackend:
    return _Cbc()


def make_highs() -> PulpBackend:
    return _Highs()
