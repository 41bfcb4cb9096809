"""Assertions for a team's own heuristic tests: feasibility, and the gap to the exact optimum.

Every failure message is something to act on: the rule broken (with what the rule asks for),
the problem (saved to a file and inlined as problem-file JSON), the heuristic's and the optimal
decision, the gap, and the ``stepopt`` commands that reproduce it.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepopt.constraints import FAMILIES
from stepopt.evaluate import Evaluation, Rule, evaluate
from stepopt.gap import relative_gap
from stepopt.io import problem_hash, problem_to_dict, save_decision, save_problem
from stepopt.model import Decision, StepProblem
from stepopt.solvers.base import SolveResult, SolveStatus
from stepopt.testing.oracle import OracleCache, default_cache_dir, default_oracle

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


# ---- gap ----------------------------------------------------------------------------------
def gap(problem: StepProblem, heuristic: Evaluation, optimal: Evaluation) -> float:
    """FORMULATION.md's relative gap of a (feasible) heuristic decision to the optimum.

    ``target``: ``(|L_h - T| - |L_* - T|) / T``; ``goodput``: ``(obj_* - obj_h) / obj_*`` with
    weighted tokens as ``obj`` (0 when the optimum schedules nothing).
    """
    if problem.objective == "target":
        g = relative_gap("target", heuristic.deviation_ns, optimal.deviation_ns, problem.target_ns)
    else:
        g = relative_gap("goodput", heuristic.weighted_tokens, optimal.weighted_tokens, 0.0)
    return 0.0 if g is None else g


def gap_formula(problem: StepProblem, h: Evaluation, opt: Evaluation) -> str:
    g = gap(problem, h, opt)
    if problem.objective == "target":
        t = problem.target_ns / 1e6
        return (
            f"(|L_h - T| - |L_* - T|) / T = ({h.deviation_ns / 1e6:.4f} - "
            f"{opt.deviation_ns / 1e6:.4f}) / {t:.4f} ms = {g:.4g}"
        )
    return (
        f"(obj_* - obj_h) / obj_* = ({opt.weighted_tokens} - {h.weighted_tokens}) / "
        f"{opt.weighted_tokens} weighted tokens = {g:.4g}"
    )


# ---- describing problems and decisions -----------------------------------------------------
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


# ---- assert_feasible ------------------------------------------------------------------------
def _as_decision(value: Any, who: str) -> Decision:
    if isinstance(value, Decision):
        return value
    raise AssertionError(
        f"{who} must return a stepopt.model.Decision (e.g. Decision.of({{'r0': 1}})), "
        f"got {type(value).__name__}: {value!r:.200}"
    )


def assert_feasible(
    problem: StepProblem,
    decision: Decision | Mapping[str, int],
    *,
    save_dir: str | Path | None = None,
) -> Evaluation:
    """Fail unless the evaluator finds ``decision`` feasible for ``problem``; returns the
    evaluation. The message lists each broken rule and what it asks, the decision, and the
    problem (saved to a file) with the ``stepopt evaluate`` command that shows the same."""
    if isinstance(decision, Mapping):
        decision = Decision.of(decision)
    decision = _as_decision(decision, "the decision")
    ev = evaluate(problem, decision)
    if ev.feasible:
        return ev
    case = save_case(problem, {"decision": decision}, save_dir)
    rules = ", ".join(sorted({str(v.rule) for v in ev.violations}))
    lines = [
        f"infeasible decision: {len(ev.violations)} violation(s) ({rules})",
        *describe_violations(ev),
        f"decision: {describe_decision(decision, ev)}",
        f"problem: {describe_problem(problem)}",
        "reproduce:",
        f"  stepopt evaluate {case.problem} {case.decisions['decision']}",
        f"problem file JSON: {problem_json(problem)}",
    ]
    raise AssertionError("\n".join(lines))


# ---- assert_gap_within ----------------------------------------------------------------------
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


@contextmanager
def _without_local_constants() -> Iterator[None]:
    """Hypothesis mixes literals from the project's loaded modules into its draws, so the same
    seed gives other problems depending on what else the process imported. A gap threshold
    must be judged on the same problems every run: draw without them. (Internal hook of
    hypothesis; when it is absent, draws are as hypothesis makes them.)"""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    cache = getattr(getattr(providers, "CONSTANTS_CACHE", None), "cache", None)
    if original is None or cache is None or not hasattr(providers, "Constants"):
        yield
        return
    empty = providers.Constants()
    cache.clear()
    providers._get_local_constants = lambda: empty
    try:
        yield
    finally:
        providers._get_local_constants = original
        cache.clear()


def draw_examples(strategy: Any, max_examples: int) -> list[StepProblem]:
    """``max_examples`` problems from a hypothesis strategy, the same ones every run (and in
    every process, whatever else it imported)."""
    from hypothesis import HealthCheck, Phase, given, settings

    out: list[StepProblem] = []

    @settings(
        max_examples=max_examples,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(problem: StepProblem) -> None:
        out.append(problem)

    with _without_local_constants():
        collect()
    return out


def _problem_list(problems: Any, max_examples: int) -> list[StepProblem]:
    if isinstance(problems, StepProblem):
        items = [problems]
    elif hasattr(problems, "example") and hasattr(problems, "map"):  # a hypothesis strategy
        items = draw_examples(problems, max_examples)
    else:
        items = list(problems)
    seen: set[str] = set()
    out = []
    for p in items:
        if not isinstance(p, StepProblem):
            raise TypeError(f"problems must be StepProblems, got {type(p).__name__}")
        h = problem_hash(p)
        if h not in seen:
            seen.add(h)
            out.append(p)
    return out


def _commands(
    case: SavedCase, solver: str, time_limit: float | None, name: str | None, label: str
) -> list[str]:
    tl = "" if time_limit is None else f" --time-limit {time_limit:g}"
    lines = ["reproduce:"]
    if label in case.decisions:
        lines.append(f"  stepopt evaluate {case.problem} {case.decisions[label]}")
    if "optimal" in case.decisions:
        lines.append(f"  stepopt evaluate {case.problem} {case.decisions['optimal']}")
    lines.append(f"  stepopt solve {case.problem} --solver {solver}{tl}")
    if name is not None:
        lines.append(f"  {_pythonpath(name)}stepopt heuristic {case.problem} --name {name}")
    return lines


def _pythonpath(name: str) -> str:
    """``PYTHONPATH=DIR `` when ``module:function``'s module lives outside site-packages (a
    test directory, an uninstalled example), so the command works from any directory."""
    if ":" not in name:
        return ""
    top = name.partition(":")[0].split(".")[0]
    file = getattr(sys.modules.get(top), "__file__", None)
    if not file:
        return ""
    path = Path(file).resolve()
    root = path.parent.parent if path.name == "__init__.py" else path.parent
    if "site-packages" in root.parts or "dist-packages" in root.parts:
        return ""
    return f"PYTHONPATH={shlex.quote(str(root))} "


def _smallest(cases: list[Case]) -> Case:
    return min(cases, key=lambda c: (len(c.problem.requests), problem_hash(c.problem)))


def assert_gap_within(
    heuristic: HeuristicLike,
    problems: Any,
    *,
    max_gap: float,
    quantile: float = 1.0,
    solver: str = "cpsat",
    time_limit: float | None = 10.0,
    solver_params: Mapping[str, Any] | None = None,
    oracle: OracleCache | None = None,
    max_examples: int = 25,
    save_dir: str | Path | None = None,
) -> GapReport:
    """Fail when ``heuristic`` is infeasible on any problem, or when the ``quantile`` of its
    gap to the proven optimum exceeds ``max_gap`` (FORMULATION.md's relative gap; ``quantile``
    1.0 = every problem).

    ``heuristic``: a callable ``(StepProblem) -> Decision``, a registered name or
    ``module:function``. ``problems``: an iterable of problems or a hypothesis strategy (then
    ``max_examples`` problems are drawn, the same ones every run; call this from a plain test,
    not inside ``@given``). Only ``OPTIMAL`` solver results count as the oracle; problems the
    solver does not prove within ``time_limit`` are left out and reported. Optima come from
    ``oracle`` (default: the pytest plugin's on-disk cache, else memory). Failing problems are
    saved under ``save_dir`` (default: ``failures/`` next to the oracle cache).
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    label = heuristic_label(heuristic)
    name = import_path(heuristic)
    if isinstance(heuristic, str):
        from stepopt.heuristics.base import get_heuristic

        fn = get_heuristic(heuristic)
    else:
        fn = heuristic
    oracle = oracle if oracle is not None else default_oracle()
    params = dict(solver_params or {})
    items = _problem_list(problems, max_examples)
    if not items:
        raise AssertionError("assert_gap_within: no problems given")

    def solve(p: StepProblem) -> SolveResult:
        return oracle.solve(p, solver, time_limit, **params)

    # 1. Run the heuristic everywhere (cheap) and judge each decision.
    cases = []
    for p in items:
        try:
            dec = _as_decision(fn(p), f"heuristic {label!r}")
        except AssertionError:
            raise
        except Exception as exc:
            saved = save_case(p, {}, save_dir)
            raise AssertionError(
                f"heuristic {label!r} raised {type(exc).__name__}: {exc}\n"
                f"problem: {describe_problem(p)}\n"
                + "\n".join(_commands(saved, solver, time_limit, name, label))
                + f"\nproblem file JSON: {problem_json(p)}"
            ) from exc
        cases.append(Case(p, dec, evaluate(p, dec)))

    # 2. An infeasible decision fails outright, unless only the goodput latency cap is broken
    #    and the solver proves that no decision meets it.
    bad: list[Case] = []
    no_feasible: list[Case] = []
    for c in cases:
        if c.evaluation.feasible:
            continue
        if c.evaluation.hard_feasible:  # only the latency cap
            c.oracle = solve(c.problem)
            if c.oracle.status == SolveStatus.INFEASIBLE:
                no_feasible.append(c)
                continue
        bad.append(c)
    if bad:
        c = _smallest(bad)
        saved = save_case(c.problem, {label: c.decision}, save_dir)
        rules = Counter(str(v.rule) for b in bad for v in b.evaluation.violations)
        lines = [
            f"heuristic {label!r} returned an infeasible decision on {len(bad)} of "
            f"{len(cases)} problems (an infeasible decision fails outright; rules broken: "
            + ", ".join(f"{k} x{v}" for k, v in sorted(rules.items()))
            + ")",
            f"smallest failing problem: {describe_problem(c.problem)}",
            "violations:",
            *describe_violations(c.evaluation),
            f"heuristic decision: {describe_decision(c.decision, c.evaluation)}",
            f"problem file: {saved.problem}",
            *_commands(saved, solver, time_limit, name, label),
            f"problem file JSON: {problem_json(c.problem)}",
        ]
        raise AssertionError("\n".join(lines))

    # 3. Gaps against proven optima.
    scored: list[Case] = []
    unproven: list[Case] = []
    skip = {id(c) for c in no_feasible}
    for c in cases:
        if id(c) in skip:
            continue
        res = c.oracle or solve(c.problem)
        c.oracle = res
        if res.status != SolveStatus.OPTIMAL or res.evaluation is None:
            unproven.append(c)
            continue
        c.gap = gap(c.problem, c.evaluation, res.evaluation)
        scored.append(c)
    report = GapReport(label, max_gap, quantile, scored, unproven, no_feasible)
    if not scored:
        raise AssertionError(
            f"heuristic {label!r}: no problem could be scored; {report.summary()}. "
            f"Raise time_limit (now {time_limit}) or draw smaller problems."
        )
    qgap = report.quantile_gap
    if qgap <= max_gap:
        return report
    worst = report.worst
    assert worst is not None and worst.oracle is not None and worst.oracle.evaluation is not None
    opt = worst.oracle
    saved = save_case(worst.problem, {label: worst.decision, "optimal": opt.decision}, save_dir)
    over = sum(1 for g in report.gaps if g > max_gap)
    lines = [
        f"heuristic {label!r}: gap quantile {quantile:g} = {qgap:.4g} > max_gap {max_gap:g} "
        f"({over} of {len(scored)} scored problems above max_gap; worst gap {worst.gap:.4g})",
        f"worst problem: {describe_problem(worst.problem)}",
        f"heuristic decision: {describe_decision(worst.decision, worst.evaluation)}",
        f"optimal decision ({opt.solver} {opt.status}): "
        f"{describe_decision(opt.decision, opt.evaluation)}",
        f"gap: {gap_formula(worst.problem, worst.evaluation, opt.evaluation)}",
        f"problem file: {saved.problem}",
        *_commands(saved, solver, time_limit, name, label),
        f"summary: {report.summary()}",
        f"problem file JSON: {problem_json(worst.problem)}",
    ]
    raise AssertionError("\n".join(lines))
