"""What :func:`stepopt.testing.assert_gap_within` measured: the scored cases and their gaps."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from stepopt.evaluate import Evaluation
from stepopt.model import Decision, StepProblem
from stepopt.solvers.base import SolveResult


@dataclass
class Case:
    """One problem scored: the heuristic's decision, the oracle's answer and the gap."""

    problem: StepProblem
    decision: Decision
    evaluation: Evaluation
    oracle: SolveResult | None = None
    gap: float | None = None


@dataclass
class GapReport:
    """What :func:`assert_gap_within` measured (returned when it passes)."""

    heuristic: str
    max_gap: float
    quantile: float
    scored: list[Case]
    unproven: list[Case]  # the solver did not prove optimality: left out, reported
    no_feasible: list[Case]  # proven: no decision satisfies the problem (goodput cap too tight)

    @property
    def gaps(self) -> list[float]:
        return sorted(c.gap for c in self.scored if c.gap is not None)

    @property
    def quantile_gap(self) -> float:
        return quantile_of(self.gaps, self.quantile)

    @property
    def worst(self) -> Case | None:
        return max(self.scored, key=lambda c: (c.gap, -len(c.problem.requests)), default=None)

    def summary(self) -> str:
        unproven = Counter(str(c.oracle.status) for c in self.unproven if c.oracle)
        un = ", ".join(f"{k} {v}" for k, v in sorted(unproven.items()))
        gaps = self.gaps
        return (
            f"{len(self.scored)} problems scored against proven optima; gap quantile "
            f"{self.quantile:g} = {self.quantile_gap:.4g}, max {max(gaps, default=0.0):.4g}; "
            f"not proven optimal (left out): {len(self.unproven)}"
            + (f" ({un})" if un else "")
            + f"; proven without any feasible decision (left out): {len(self.no_feasible)}"
        )


def quantile_of(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile: the smallest value with at least a share ``q`` at or below it."""
    if not sorted_values:
        return 0.0
    k = max(math.ceil(q * len(sorted_values)) - 1, 0)
    return sorted_values[min(k, len(sorted_values) - 1)]
