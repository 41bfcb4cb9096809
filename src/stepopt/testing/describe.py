"""How the assertions describe a failure: the rule broken and what it asks for, the problem
and decisions (inline and saved to files)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stepopt.constraints import FAMILIES
from stepopt.evaluate import Evaluation, Rule
from stepopt.io import problem_hash, problem_to_dict, save_decision, save_problem
from stepopt.model import Decision, StepProblem
from stepopt.testing.oracle import default_cache_dir

HeuristicLike = Callable[[StepProblem], Decision] | str

# What each rule asks of a decision, in the words of the problem's fields: the families
# state their own; the decision's well-formedness rules are the evaluator's.
HINTS: dict[Rule, str] = {
    Rule.UNKNOWN_REQUEST: "only ids of problem.running and problem.waiting may get tokens",
    Rule.NEGATIVE_TOKENS: "token counts are >= 0",
    Rule.PREEMPTION: "preempted ids are running requests that get no tokens",
    **{rule: text for family in FAMILIES for rule, text in family.HINTS.items()},
}

MAX_INLINE_JSON = 6000


def heuristic_label(heuristic: HeuristicLike) -> str:
    if isinstance(heuristic, str):
        return heuristic
    return getattr(heuristic, "__name__", None) or type(heuristic).__name__


def import_path(heuristic: HeuristicLike) -> str | None:
    """A name the CLI accepts for ``heuristic`` (registered name or ``module:function``)."""
    if isinstance(heuristic, str):
        return heuristic
    module = getattr(heuristic, "__module__", None)
    qual = getattr(heuristic, "__qualname__", None)
    if not module or not qual or module == "__main__" or "<" in qual:
        return None
    from stepopt.heuristics.base import get_heuristic

    path = f"{module}:{qual}"
    try:
        return path if get_heuristic(path) is heuristic else None
    except Exception:
        return None


def describe_problem(problem: StepProblem) -> str:
    cfg = problem.config
    kv = "" if cfg.num_free_blocks is None else f", num_free_blocks {cfg.num_free_blocks}"
    return (
        f"{len(problem.running_decodes)} decodes + {len(problem.running_prefills)} prefills "
        f"running, {len(problem.waiting)} waiting; budget {cfg.max_num_scheduled_tokens}, "
        f"max_num_running_reqs {cfg.max_num_running_reqs}{kv}; objective {problem.objective}, "
        f"priority {problem.priority_mode}, target {problem.target_latency_ms:g} ms, "
        f"latency model {problem.latency.name!r}"
    )


def describe_decision(decision: Decision | None, ev: Evaluation | None) -> str:
    if decision is None:
        return "(none)"
    tokens = json.dumps(decision.scheduled(), separators=(",", ":"))
    if ev is None:
        return tokens
    what = (
        f"|L - T| {ev.deviation_ns / 1e6:.4f} ms"
        if ev.objective_name == "target"
        else f"{ev.weighted_tokens} weighted tokens"
    )
    return (
        f"{tokens} -> latency {ev.latency_ms:.4f} ms, {what}, {ev.scheduled_tokens} tokens, "
        f"batch {ev.batch_size}"
    )


def describe_violations(ev: Evaluation) -> list[str]:
    lines = []
    for v in ev.violations:
        lines.append(f"  - {v.rule}: {v.message}")
        lines.append(f"      rule: {HINTS.get(v.rule, '')}")
    return lines


def problem_json(problem: StepProblem) -> str:
    text = json.dumps(problem_to_dict(problem), separators=(",", ":"))
    if len(text) > MAX_INLINE_JSON:
        return f"({len(text)} characters; see the saved file)"
    return text


def failure_dir(save_dir: str | Path | None = None) -> Path:
    """Where failing problems are saved: ``save_dir``, else ``failures/`` in the oracle cache
    directory, else ``stepopt-failures`` in the system temp directory."""
    if save_dir is not None:
        d = Path(save_dir)
    elif (cache := default_cache_dir()) is not None:
        d = cache / "failures"
    else:
        d = Path(tempfile.gettempdir()) / "stepopt-failures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:40] or "decision"


@dataclass
class SavedCase:
    problem: Path
    decisions: dict[str, Path] = field(default_factory=dict)


def save_case(
    problem: StepProblem, decisions: Mapping[str, Decision | None], save_dir: Path | str | None
) -> SavedCase:
    d = failure_dir(save_dir)
    h = problem_hash(problem)
    case = SavedCase(d / f"{h}.problem.json")
    save_problem(problem, case.problem)
    for label, dec in decisions.items():
        if dec is not None:
            name = "decision" if label == "decision" else f"{_slug(label)}.decision"
            path = d / f"{h}.{name}.json"
            save_decision(dec, path)
            case.decisions[label] = path
    return case
