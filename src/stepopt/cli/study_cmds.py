"""Commands for problem sets and gap studies: ``scenarios generate``, ``study run|report``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stepopt.cli.common import (
    command,
    console,
    err_console,
    exit_with,
    output_dir,
    print_json,
    sub_app,
)
from stepopt.console import print_report
from stepopt.errors import InputError
from stepopt.limits import check_seed, check_target_ms, check_time_limit, finite

if TYPE_CHECKING:
    pass

scenarios_app = sub_app("Problem generators (synthetic, trace, snapshot).")
study_app = sub_app("Optimality-gap studies: run, report.")
# The most problems one `scenarios generate` writes (a study reads them all into memory).
MAX_COUNT = 1_000_000


def _mix(value: str | None, field: str, valid: tuple[str, ...]) -> str | None:
    if value is None or value == "mix":
        return None
    if value not in valid:
        raise InputError(field, f"must be {', '.join(valid)} or mix", value)
    return value


def cmd_generate(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output directory.")],
    source: Annotated[str, typer.Option(help="synthetic | trace:CSV | snapshot:DIR")] = "synthetic",
    count: Annotated[int, typer.Option(help="Number of problems.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
    preset: Annotated[
        str | None, typer.Option(help="Latency preset(s), comma-separated (mixed per problem).")
    ] = None,
    target_ms: Annotated[
        float | None,
        typer.Option(
            help="Fixed target; default: factor U(0.8, 1.6) x the state's reference "
            "batch latency (decodes + one 512-token chunk)."
        ),
    ] = None,
    objective: Annotated[str, typer.Option(help="target | goodput | mix")] = "mix",
    priority_mode: Annotated[str, typer.Option(help="strict | weighted | mix")] = "mix",
    regime: Annotated[
        str | None, typer.Option(help="Regimes to mix, comma-separated (default: all).")
    ] = None,
    load: Annotated[float | None, typer.Option(help="Fixed load (default U(0.3, 1.3)).")] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace the problem set OUT already holds (else refused)."),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Write a problem set: one file per state, and manifest.json.

    The manifest records each problem's knobs (regime, load, target factor, ...).

    OUT must be empty of problem files unless --force is given (a study reads every problem
    file of a directory, and a set generated with other settings would be lost silently).
    """
    from stepopt.scenarios import REGIMES, GenerateOptions, default_presets, generate

    check_seed(seed)
    if not 0 <= count <= MAX_COUNT:
        raise InputError("--count", f"must be in 0..{MAX_COUNT}", count)
    if target_ms is not None:
        check_target_ms(target_ms, "--target-ms")
    if load is not None:
        finite(load, "--load")
    output_dir(out, "--out")
    presets = tuple(p for p in (preset or "").split(",") if p) or default_presets()
    opts = GenerateOptions(
        count=count,
        seed=seed,
        presets=presets,
        target_ms=target_ms,
        objective=_mix(objective, "objective", ("target", "goodput")),
        priority_mode=_mix(priority_mode, "priority_mode", ("strict", "weighted")),
        regimes=tuple(r for r in (regime or "").split(",") if r) or REGIMES,
        load=load,
    )
    records = generate(source, opts, out, replace=force)
    regimes: dict[str, int] = {}
    for r in records:
        regimes[r["regime"]] = regimes.get(r["regime"], 0) + 1
    used = sorted({str(r["preset"]) for r in records}) or list(presets)
    doc = {"out": str(out), "problems": len(records), "presets": used, "regimes": regimes}
    if json_out:
        print_json(doc)
    else:
        console.print(
            f"wrote {len(records)} problems to {out} (presets {', '.join(used)}; regimes "
            + ", ".join(f"{k} {v}" for k, v in sorted(regimes.items()))
            + ")"
        )


def cmd_run(
    study: Annotated[Path | None, typer.Argument(help="Study file (TOML).")] = None,
    problems: Annotated[Path | None, typer.Option(help="Directory of problem files.")] = None,
    heuristics: Annotated[
        str | None,
        typer.Option(help="Comma-separated names (or pkg.module:function); default: all."),
    ] = None,
    solver: Annotated[
        str | None, typer.Option(help="Exact solver (default auto: structured, then CP-SAT).")
    ] = None,
    time_limit: Annotated[
        float | None, typer.Option(help="Seconds per problem for the solver (default 2).")
    ] = None,
    target_tolerance_ns: Annotated[
        int | None,
        typer.Option(
            "--target-tolerance-ns",
            help="target objective: a reference proven within this many ns of the optimum "
            "gives gaps (flagged apart); default 1000 (1 us); 0 = exact proofs only.",
        ),
    ] = None,
    db: Annotated[Path | None, typer.Option(help="Database file (default study.duckdb).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default 2; 0 = this process).")
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            help="local (default), dask (a local Dask cluster of --workers processes) or "
            "dask://HOST:PORT (a running scheduler)."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Run the heuristics and the exact solver on every problem.

    Resumable: rerun the same command to finish a run that stopped. While it runs,
    `stepopt study report` reads what is stored so far.
    """
    from stepopt.cli.progress import progress_mode
    from stepopt.studies import StudyConfig, load_study, run_study

    check_time_limit(time_limit)
    cfg = load_study(study) if study is not None else StudyConfig()
    cfg = cfg.with_flags(
        problems=problems,
        heuristics=None if heuristics is None else tuple(h for h in heuristics.split(",") if h),
        solver=solver,
        time_limit=time_limit,
        target_tolerance_ns=target_tolerance_ns,
        db=db,
        workers=workers,
        executor=executor,
    )
    summary = run_study(cfg, progress=progress_mode(quiet or json_out))
    if json_out:
        print_json(summary.to_dict())
    elif not quiet:
        d = summary.to_dict()
        err_console.print(
            f"{d['problems']} problems: {d['ran']} run, {d['skipped']} already stored; "
            f"{d['rows_written']} rows written to {d['db']} in {d['seconds']} s",
            markup=False,
        )
        if d["reference_backends"]:
            mix = ", ".join(f"{k} {v}" for k, v in d["reference_backends"].items())
            err_console.print(f"reference answered by: {mix}", markup=False)
    for name, e in summary.errors.items():
        if name not in summary.failed:
            err_console.print(
                f"warning: {name} failed on {e['errors']} of {e['rows']} problems; first: "
                f"{e['first']}",
                markup=False,
            )
    if summary.failed:
        name, first = next(iter(summary.failed.items()))
        e = summary.errors[name]
        others = f" (and {len(summary.failed) - 1} more)" if len(summary.failed) > 1 else ""
        err_console.print(
            f"error: {name}{others} failed on every problem ({e['rows']}): {first}",
            markup=False,
        )
        exit_with(1)


def cmd_report(
    db: Annotated[Path, typer.Argument(help="Study database (DuckDB file).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Write report.md, report.json, PNGs here.")
    ] = None,
    by: Annotated[
        str, typer.Option(help="Breakdown: load, queue_size, preset, target, regime, ...")
    ] = "regime",
    settings: Annotated[
        str,
        typer.Option(
            help="Rows of: latest (the last solver settings/version run), all, or a "
            "settings string as stored."
        ),
    ] = "latest",
) -> None:
    """Gap statistics, a breakdown, plots and report.md.

    Per heuristic and objective, against the proven optimum; errors counted apart. --json
    prints the document written as report.json.
    """
    from stepopt.studies import load_rows, report_document, write_report

    output_dir(out, "--out")
    rows = load_rows(db, settings)
    doc = report_document(rows, by)  # validates the dimension before any output
    if out is not None:
        write_report(db, out, by, settings=settings, rows=rows)
    if json_out:
        print_json(doc)  # the same document as report.json
        return
    print_report(rows, by)
    if out is not None:
        console.print(f"report: {out / 'report.md'}", markup=False)


def register(app: typer.Typer) -> None:
    command(scenarios_app, "generate")(cmd_generate)
    command(study_app, "run")(cmd_run)
    command(study_app, "report")(cmd_report)
    app.add_typer(scenarios_app, name="scenarios")
    app.add_typer(study_app, name="study")
