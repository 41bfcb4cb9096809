"""The ``heuristic`` command: run an online heuristic on one problem, judged by the evaluator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stepopt.cli.common import command, console, exit_with, output_file, print_json
from stepopt.errors import InputError, StepoptError

if TYPE_CHECKING:
    from stepopt.model import StepProblem
    from stepopt.solvers.base import SolveResult

HEURISTIC_STATUS = "HEURISTIC"


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


def run_heuristic(
    problem: StepProblem, name: str, params: dict[str, Any] | None = None
) -> tuple[SolveResult, dict[str, Any]]:
    """Run ``name`` and judge its decision: the result and its ``stepopt solve``-style dict
    (``status`` = ``HEURISTIC``, ``solve_ms`` = decision time, no bound or gap). A user's
    heuristic that raises or returns no Decision is a one-line error."""
    from stepopt.evaluate import evaluate
    from stepopt.heuristics.base import checked_decision, get_heuristic, heuristic_names
    from stepopt.solvers.base import SolveResult, SolveStatus

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
    res = SolveResult(
        status=SolveStatus.FEASIBLE,  # placeholder: reported as HEURISTIC below
        solver=name,
        decision=decision,
        evaluation=evaluate(problem, decision),
        bound=None,
        wall_ms=wall_ms,
        params=params,
    )
    doc = res.to_dict()
    doc["status"] = HEURISTIC_STATUS
    doc["bound"] = None
    doc["gap"] = None
    doc["preempted"] = list(decision.preempted)
    return res, doc


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
    res, doc = run_heuristic(prob, name, params)
    assert res.decision is not None and res.evaluation is not None
    if output is not None:
        save_decision(res.decision, output)
    if json_out:
        print_json(doc)
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
