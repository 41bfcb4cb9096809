"""A differential run larger than the test suite's: every backend on generated problems.

    .venv/bin/python benchmarks/differential.py --count 10000 [--seed 0] [--families a,b]

Problems are drawn round-robin from every family of :mod:`stepopt.testing.edge_cases` (the
``small`` family is the suite's kind of problem; the others reach zero-latency pieces,
near-zero optima, tight weighted ties and a 128-request tie-break). Each is solved by every
exact backend (cpsat, cbc, highs, structured, auto) and by brute force where the family is
small; each decision is re-judged by the evaluator (done inside every solver's result) and
the solvers must agree on the status and on ``evaluate.rank_key``. A FEASIBLE answer (optimum
not proven within the per-solve limit) or a refusal of ``structured`` is counted, not
compared: it is slow or out of its scope, not wrong. Every disagreement is
printed with its family and seed (``edge_cases.draw(family, seed)`` rebuilds it); the exit
code is 1 if there was any.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from stepopt.evaluate import rank_key
from stepopt.solvers import SolveStatus, solve
from stepopt.testing.edge_cases import BRUTE_FAMILIES, FAMILIES, draw

BACKENDS = ("cpsat", "cbc", "highs", "structured", "auto")
LIMIT_S = 20.0  # per solve: a backend that cannot prove the optimum in it counts as a miss


def check(family: str, seed: int, unproven: Counter) -> list[str]:
    """The disagreements on one problem (empty when every solver agrees)."""
    problem = draw(family, seed)
    names = BACKENDS + (("brute",) if family in BRUTE_FAMILIES else ())
    results = {name: solve(problem, name, time_limit=LIMIT_S) for name in names}
    out = []
    statuses = {name: str(r.status) for name, r in results.items()}
    # FEASIBLE: unproven in time; structured's NO_SOLUTION: a refusal (weighted priority, ...)
    refused = {
        n for n, r in results.items() if n == "structured" and r.status == SolveStatus.NO_SOLUTION
    }
    found = {s for n, s in statuses.items() if s != "FEASIBLE" and n not in refused}
    if len(found) > 1 or "ERROR" in found or "NO_SOLUTION" in found:
        out.append(f"status {statuses}")
    keys = {}
    unproven.update(
        name for name, r in results.items() if r.status == SolveStatus.FEASIBLE or name in refused
    )
    for name, r in results.items():
        if r.evaluation is not None:
            if not r.evaluation.feasible:
                out.append(f"{name}: evaluator rejects its decision")
            if r.params.get("model_latency_ns", r.evaluation.latency_ns) != r.evaluation.latency_ns:
                out.append(f"{name}: model latency != evaluator latency")
        if r.status == SolveStatus.OPTIMAL:
            keys[name] = rank_key(problem, r.evaluation)
    if len(set(keys.values())) > 1:
        out.append(f"optima differ {keys}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="first seed of every family")
    ap.add_argument("--families", default=",".join(FAMILIES))
    args = ap.parse_args(argv)
    families = args.families.split(",")
    started = time.perf_counter()
    bad = 0
    per: Counter = Counter()
    unproven: Counter = Counter()
    for k in range(args.count):
        family = families[k % len(families)]
        seed = args.seed + k // len(families)
        per[family] += 1
        problems = check(family, seed, unproven)
        if problems:
            bad += 1
            print(f"DISAGREE {family}:{seed}: " + " | ".join(problems), flush=True)
        if (k + 1) % 50 == 0:
            print(f"... {k + 1} problems, {bad} disagreements", file=sys.stderr, flush=True)
    wall = time.perf_counter() - started
    print(f"{args.count} problems ({dict(per)}), {bad} disagreements, {wall:.0f} s")
    print(f"not proven within {LIMIT_S:.0f} s per solve (no verdict to compare): {dict(unproven)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
