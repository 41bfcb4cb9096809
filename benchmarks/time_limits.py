"""Does ``--time-limit`` bound the whole call? Wall time per backend, limit and large problem.

Problems (the toy ``demo`` latency curves of the test factories, target 60 ms, budget 2,048):
``1024+256w``: 1,024 running decodes and 256 waiting prompts, weighted priority; ``1024+20000s``:
the same decodes and 20,000 waiting, strict (most of the queue is pruned before the model);
``2000+5000w``: 2,000 decodes and 5,000 waiting, weighted. Wall time includes model building;
``ok`` says whether it is within 1.2 * limit + 0.5 s (the test's bound).

    .venv/bin/python benchmarks/time_limits.py                        # limits 1 and 2 s
    .venv/bin/python benchmarks/time_limits.py --limits 2 --solvers highs --repeat 3
    .venv/bin/python benchmarks/time_limits.py --in-process           # no killable child

``--in-process`` runs the solvers without the child process that is killed at the deadline
(what they did before it), to compare.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from stepopt.solvers import isolate, solve
from stepopt.testing.factories import decodes, make_problem, waitings

PROBLEMS = {
    "1024+256w": (1024, 256, "weighted"),
    "1024+20000s": (1024, 20_000, "strict"),
    "2000+5000w": (2000, 5_000, "weighted"),
}


def problem(n_dec: int, n_wait: int, mode: str):
    rng = random.Random(1)
    return make_problem(
        decodes(n_dec, 300),
        waitings([rng.randint(20, 3000) for _ in range(n_wait)]),
        target_ms=60.0,
        priority_mode=mode,
        max_num_scheduled_tokens=2048,
        max_num_running_reqs=max(1536, n_dec + 512),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--solvers", default="cpsat,cbc,highs")
    ap.add_argument("--limits", default="1,2")
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell (median reported)")
    ap.add_argument("--in-process", action="store_true")
    args = ap.parse_args()
    if args.in_process:
        isolate.supported = lambda: False  # type: ignore[assignment]
    print(f"{'problem':<12} {'solver':<6} {'limit':>5} {'wall s':>7} {'ok':<3} status / note")
    for key in args.problems.split(","):
        prob = problem(*PROBLEMS[key])
        for limit in (float(x) for x in args.limits.split(",")):
            for name in args.solvers.split(","):
                walls = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    res = solve(prob, name, time_limit=limit)
                    walls.append(time.perf_counter() - t)
                wall = statistics.median(walls)
                ok = "yes" if wall <= 1.2 * limit + 0.5 else "NO"
                note = res.message[:60]
                print(f"{key:<12} {name:<6} {limit:>5.1f} {wall:>7.2f} {ok:<3} {res.status} {note}")


if __name__ == "__main__":
    main()
