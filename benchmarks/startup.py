"""Start-up time of the command line: ``stepopt --help`` and ``stepopt evaluate`` on a small
problem, as fresh processes (what a user waits for). Prints the median and the spread of N runs.

    python benchmarks/startup.py [--runs 9] [--src OTHER/src]   # --src: time another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBLEM = {
    "config": {"max_num_scheduled_tokens": 512},
    "latency_model": {"preset": "demo"},
    "target_latency_ms": 30,
    "running": [{"id": "a", "prompt_tokens": 100, "computed_tokens": 120}],
    "waiting": [{"id": "b", "prompt_tokens": 300, "priority": 1, "arrival_time": 2.0}],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--src", help="another checkout's src/ to time instead of the installed one")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="startup_"))
    (tmp / "p.json").write_text(json.dumps(PROBLEM))
    (tmp / "d.json").write_text(json.dumps({"tokens": {"a": 1, "b": 300}}))
    cases = {
        "stepopt --help": ["--help"],
        "stepopt --version": ["--version"],
        "stepopt evaluate": ["evaluate", str(tmp / "p.json"), str(tmp / "d.json")],
        "stepopt heuristic": ["heuristic", str(tmp / "p.json")],
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.runs):  # interleaved, so a load change hits every case alike
        for name, argv in cases.items():
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "stepopt", *argv], env=env, capture_output=True
            )
            times[name].append(time.perf_counter() - t0)
            if proc.returncode not in (0, 2) and name != "stepopt --version":
                print(proc.stderr.decode()[-500:], file=sys.stderr)
    src = args.src or "installed"
    print(f"load average {os.getloadavg()[0]:.2f}; {args.runs} runs each; src {src}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:20s} median {med:.3f} s  (min {min(ts):.3f}, max {max(ts):.3f})")


if __name__ == "__main__":
    main()
