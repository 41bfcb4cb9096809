"""The ``heuristic`` command: run an online heuristic on one problem, judged by the evaluator."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stepopt.cli.common import (
    command,
    console,
    exit_with,
    output_file,
    print_json,
    warn_kv_capacity,
)
from stepopt.errors import InputError, StepoptError

if TYPE_CHECKING:
    from stepopt.evaluate import Evaluation
    from stepopt.model import Decision, StepProblem


def parse_params(items: list[str], fn: Any) -> dict[str, Any]:
    """``key=value`` pairs checked against the heuristic's keyword parameters and converted
    to the type of each one's default (:func:`stepopt.heuristics.base.coerce_params`)."""
    from stepopt.heuristics.base import coerce_params

    raw: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError("--param", "expected key=value", item)
        raw[key] = value
    return coerce_params(fn, raw, "--param")


@dataclass(frozen=True)
class HeuristicRun:
    decision: Decision
    evaluation: Evaluation
    wall_ms: float
    doc: dict[str, Any]  # the fields of `stepopt solve --json`, status HEURISTIC


def run_heuristic(
    problem: StepProblem, name: str, params: dict[str, Any] | None = None
) -> HeuristicRun:
    """Run ``name`` and judge its decision. The JSON has the fields of ``stepopt solve --json``
    (``status`` = ``HEURISTIC``, ``solve_ms`` = decision time, no bound or gap) and is built
    here rather than through the solvers' result type, so that running a heuristic does not
    import the solvers (about a second of start-up). A user's heuristic that raises or returns
    no Decision is a one-line error."""
    from stepopt.evaluate import evaluate
    from stepopt.heuristics.base import (
        HEURISTIC_STATUS,
        checked_decision,
        get_heuristic,
        heuristic_names,
    )

    fn = get_heuristic(name)
    params = dict(params or {})
    started = time.perf_counter()
    try:
        decision = checked_decision(fn(problem, **params), name)
    except StepoptError:
        raise
    except Exception as exc:
        if name in heuristic_names():
            raise  # a built-in or installed heuristic failing is a bug: show the traceback
        raise StepoptError(
            f"heuristic {name!r} raised {type(exc).__name__}: {exc} "
            "(STEPOPT_DEBUG=1 shows the traceback)"
        ) from exc
    wall_ms = (time.perf_counter() - started) * 1000.0
    ev = evaluate(problem, decision)
    doc = {
        "status": HEURISTIC_STATUS,
        "solver": name,
        "objective": ev.objective,
        "tiebreak": ev.tiebreak,
        "bound": None,
        "gap": None,
        "proven_within_ns": None,
        "latency_ms": ev.latency_ms,
        "latency_ns": ev.latency_ns,
        "feasible": ev.feasible,
        "violations": [v.to_dict() for v in ev.violations],
        "scheduled_tokens": ev.scheduled_tokens,
        "batch_size": ev.batch_size,
        "tokens": decision.scheduled(),
        "solve_ms": wall_ms,
        "time_limit_s": None,
        "params": params,
        "message": "",
        "preempted": list(decision.preempted),
    }
    return HeuristicRun(decision, ev, wall_ms, doc)


def cmd_heuristic(
    problem: Annotated[Path, typer.Argument(help="Problem file (JSON or YAML).")],
    name: Annotated[
        str,
        typer.Option(
            "--name",
            "-n",
            help="three-stage, vllm-v1, vllm-v1-priority, sarathi, or module:function.",
        ),
    ] = "three-stage",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Heuristic parameter key=value (repeatable)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the decision to this file.")
    ] = None,
) -> None:
    """Run an online heuristic on one problem, judged.

    The evaluator judges the heuristic's decision like any other.

    Exit 0 when the decision is feasible, 1 when the evaluator reports violations (vLLM's
    rules differ from stepopt's; see docs/heuristics.md), 2 on bad input.
    """
    from rich.markup import escape

    from stepopt.cli.core import evaluation_table
    from stepopt.cli.solve_cmds import decision_text
    from stepopt.heuristics.base import check_signature, get_heuristic
    from stepopt.io import load_problem, save_decision

    fn = get_heuristic(name)  # unknown names list the valid ones (exit 2)
    params = parse_params(param or [], fn)
    check_signature(fn, name, params)
    output_file(output, "--output")
    prob = load_problem(problem)
    warn_kv_capacity(prob)
    res = run_heuristic(prob, name, params)
    if output is not None:
        save_decision(res.decision, output)
    if json_out:
        print_json(res.doc)
    else:
        t = evaluation_table(res.evaluation, title=f"heuristic: {name}")
        t.add_row("decision time", f"{res.wall_ms:.3f} ms")
        t.add_row("decision", escape(decision_text(res.decision.scheduled())))
        if res.decision.preempted:
            t.add_row("preempted", escape(", ".join(res.decision.preempted)))
        console.print(t)
    exit_with(0 if res.evaluation.feasible else 1)


def register(app: typer.Typer) -> None:
    command(app, "heuristic")(cmd_heuristic)
