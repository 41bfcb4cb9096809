"""``make demo``: an optimality-gap study of thousands of trace-driven steps, then its report.

Generates 3,000 steady-engine states from the Splitwise conversation trace
(``../shared/data/vidur/data/processed_traces/splitwise_conv.csv``; synthetic queues when the
data is absent), runs the shipped heuristics and the exact reference (``auto``: the structured
solver, CP-SAT where it does not prove) on 2 worker processes, and prints the report.
Everything goes under ``./out/demo/``; running it again reuses what is stored (``--fresh``
starts over). By default the steps are strict-priority, half ``target`` and half ``goodput``, whose
references the structured solver proves in milliseconds (``target`` within the 1 us
tolerance); ``--priority mix --count 300`` adds weighted steps, whose references need CP-SAT
(tens of milliseconds each: hundreds, not thousands, in the same time). Queues are kept
moderate (32 running requests at load 1); for ``target`` a reference proven within 1 us of the
optimum also gives a gap (``--target-tolerance-ns``); the report counts the ones it does not.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

TRACE = ("vidur", "data", "processed_traces", "splitwise_conv.csv")


def trace_source() -> str:
    from stepopt.testing.data import shared_data_dir

    root = shared_data_dir()
    path = None if root is None else root.joinpath(*TRACE)
    if path is None or not path.is_file():
        print(
            "note: trace ../shared/data/" + "/".join(TRACE) + " not found; "
            "using synthetic queues instead",
            file=sys.stderr,
        )
        return "synthetic"
    return f"trace:{path}"


def _same_problems(problems: Path, source: str, opts) -> bool:
    """Whether ``problems`` was generated with these arguments (then it is reused)."""
    import json

    args = json.loads((problems / "manifest.json").read_text()).get("args", {})
    return (
        args.get("source") == source
        and args.get("count") == opts.count
        and args.get("seed") == opts.seed
        and args.get("presets") == list(opts.presets)
        and args.get("concurrency") == opts.concurrency
        and args.get("priority_mode") == (opts.priority_mode or "mix")
        and args.get("objective") == (opts.objective or "mix")
    )


def main(argv: list[str] | None = None) -> int:
    # long: the demo's steps in order (options, problems, study, report), each a library call with
    # its progress line
    ap = argparse.ArgumentParser(prog="python -m stepopt.demo", description=__doc__)
    ap.add_argument("--count", type=int, default=3000, help="problems (default 3000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--time-limit", type=float, default=2.0, help="exact solver seconds per problem"
    )
    ap.add_argument(
        "--target-tolerance-ns",
        type=int,
        default=None,
        help="target: a reference proven within this many ns of the optimum gives gaps "
        "(default 1000 = 1 us; 0 = exact proofs only)",
    )
    ap.add_argument(
        "--concurrency", type=int, default=32, help="running requests at load 1 (default 32)"
    )
    ap.add_argument(
        "--priority",
        choices=["strict", "weighted", "mix"],
        default="strict",
        help="priority mode of the problems (default strict: the structured solver proves "
        "their references in milliseconds; weighted ones need CP-SAT)",
    )
    ap.add_argument(
        "--objective",
        choices=["goodput", "target", "mix"],
        default="mix",
        help="objective of the problems (default mix: half target, half goodput; strict "
        "references of both are proven in milliseconds)",
    )
    ap.add_argument("--out", type=Path, default=Path("out/demo"))
    ap.add_argument("--fresh", action="store_true", help="delete previous demo output first")
    args = ap.parse_args(argv)

    from stepopt.console import print_report, progress_mode
    from stepopt.errors import StepoptError
    from stepopt.scenarios import GenerateOptions, default_presets, generate
    from stepopt.studies import StudyConfig, load_rows, run_study, write_report

    out: Path = args.out
    if args.fresh and out.exists():
        shutil.rmtree(out)
    problems = out / "problems"
    presets = default_presets()
    source = trace_source()
    opts = GenerateOptions(
        count=args.count,
        seed=args.seed,
        presets=presets,
        concurrency=args.concurrency,
        max_waiting=args.concurrency,
        priority_mode=None if args.priority == "mix" else args.priority,
        objective=None if args.objective == "mix" else args.objective,
    )
    if (problems / "manifest.json").is_file() and not _same_problems(problems, source, opts):
        print(f"note: {out} holds another demo's problems; starting over", file=sys.stderr)
        shutil.rmtree(out)
    try:
        if not (problems / "manifest.json").is_file():
            generate(source, opts, problems)
            print(
                f"generated {args.count} problems ({source.split('/')[-1]}, preset "
                f"{', '.join(presets)}) in {problems}",
                file=sys.stderr,
            )
        cfg = StudyConfig(
            problems=problems,
            db=out / "study.duckdb",
            workers=args.workers,
            time_limit=args.time_limit,
        ).with_flags(target_tolerance_ns=args.target_tolerance_ns)
        t0 = time.perf_counter()
        summary = run_study(cfg, progress=progress_mode(False))
        print(
            f"study: {summary.ran} problems run, {summary.skipped} already stored, "
            f"{time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
        write_report(cfg.db, out / "report", by="regime")
        rows = load_rows(cfg.db, "latest")
    except StepoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_report(rows, "regime")
    print(
        f"\nreport: {out / 'report' / 'report.md'} (plots: gap_cdf.png, "
        "performance_profile.png, gap_vs_load.png)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
