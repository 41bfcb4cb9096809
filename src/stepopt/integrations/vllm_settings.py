"""Settings of :class:`stepopt.integrations.vllm.OptimizedScheduler`, from the environment
and/or a config file.

``STEPOPT_CONFIG`` names a YAML or JSON file whose keys are the field names below; each field
can also be set (and overridden) by ``STEPOPT_<FIELD>`` in upper case, e.g.
``STEPOPT_TARGET_MS=40``. Bad values fail at start-up with one line naming the variable.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stepopt.errors import InputError

if TYPE_CHECKING:
    from stepopt.heuristics.base import Heuristic
    from stepopt.latency.model import LatencyModel
    from stepopt.simulate.policies import ExactPolicy

ENV_PREFIX = "STEPOPT_"
CONFIG_ENV = "STEPOPT_CONFIG"


class SchedulerSettings(BaseModel):
    """What the optimized scheduler aims at, and how it reports."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_ms: float = Field(gt=0)
    """Target step latency (``objective=target``) or latency cap (``goodput``), ms."""
    preset: str = "demo"
    """Latency model: a preset name (``stepopt.latency.presets``) or a path to a JSON file in
    the preset format."""
    objective: Literal["target", "goodput"] = "target"
    heuristic: str = "three-stage"
    """The decision rule: a registered heuristic, ``NAME[key=value,...]`` with its keyword
    parameters, a ``module:function`` path, or ``exact`` / ``exact:SOLVER`` (a solver per step
    within ``time_limit_ms``, ``fallback`` deciding when it has no proven optimum)."""
    heuristic_params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Keyword parameters of the heuristic (those written in ``heuristic`` win)."""
    time_limit_ms: float = Field(default=20.0, gt=0)
    """``exact`` only: the solver's time limit per step."""
    fallback: str = "three-stage"
    """``exact`` only: the heuristic that decides when the solver has no proven optimum."""
    priority_mode: Literal["strict", "weighted"] = "strict"
    min_prefill_chunk: int = Field(default=64, ge=1)
    prefix_cache_lookup: bool = True
    step_log: str | None = None
    """Write one JSON line per step to this file (target, prediction, decision, vLLM's step)."""
    fast_decode_steps: int = Field(default=32, ge=0)
    """In a decode-only state the heuristic chose every decode for, leave up to this many
    following decode-only steps to vLLM while a bound on their latency stays within the target
    (0 = ask the heuristic every step)."""
    fast_whole_steps: bool = True
    """Leave a step to vLLM when nothing binds it (budget, slots, KV blocks) and a bound on
    its latency is within the target: then it is the optimum of either objective. Off for a
    rule that is not an optimizer of the objective."""
    log_interval: int = Field(default=500, ge=0)
    """Log an INFO summary every this many steps (0 = never); every step goes to DEBUG."""
    plan_ahead: bool = True
    """Plan the next step right after ``update_from_output()`` and keep the plan while the
    state stays as it was (any new request, abort or other change drops it), so that
    ``schedule()`` only checks and applies it. The same decisions either way. Not for
    ``exact`` (its solver runs in ``schedule()``)."""


_FIELDS = tuple(SchedulerSettings.model_fields)


def load_settings(environ: Mapping[str, str] | None = None) -> SchedulerSettings:
    """Settings from ``STEPOPT_CONFIG`` (if set) overridden by ``STEPOPT_<FIELD>`` variables."""
    env = os.environ if environ is None else environ
    doc: dict[str, object] = {}
    source: dict[str, str] = {}
    path = env.get(CONFIG_ENV)
    if path:
        from stepopt.io import read_document

        loaded = read_document(path)
        if not isinstance(loaded, dict):
            raise InputError(CONFIG_ENV, "the file must hold a mapping of settings", path)
        doc.update(loaded)
        source.update({k: f"{path}: {k}" for k in loaded})
    for name in _FIELDS:
        var = ENV_PREFIX + name.upper()
        if var in env:
            doc[name] = env[var]
            source[name] = var
    if "target_ms" not in doc:
        raise InputError(
            "STEPOPT_TARGET_MS",
            "required: the target step latency in ms (or target_ms in the STEPOPT_CONFIG file)",
        )
    try:
        return SchedulerSettings.model_validate(doc, strict=False)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = str(err["loc"][0]) if err["loc"] else ""
        field = source.get(loc, ENV_PREFIX + loc.upper() if loc in _FIELDS else loc or CONFIG_ENV)
        raise InputError(field, err["msg"], err.get("input")) from None


def load_latency(spec: str) -> LatencyModel:
    """A latency preset by name, or a latency model file (JSON, the preset format)."""
    from stepopt.io import load_latency_model

    return load_latency_model(spec, field="STEPOPT_PRESET")


@dataclass(frozen=True)
class Resolved:
    """Settings with the latency model and the decision rule looked up (done once, at start).

    ``heuristic`` is the rule as one ``problem -> Decision`` callable (its parameters bound);
    ``params`` the heuristic's keyword parameters as they apply (``exact``: none);
    ``policy`` the ``exact`` rule's policy (its solver and fallback counts), else None."""

    settings: SchedulerSettings
    latency: LatencyModel
    heuristic: Heuristic
    params: Mapping[str, object]
    policy: ExactPolicy | None = None


def resolve(settings: SchedulerSettings, *, reserve_full_prompt: bool | None = None) -> Resolved:
    """Look up the latency model and the decision rule.

    ``reserve_full_prompt``: whether vLLM admits a waiting request only when its whole prompt's
    blocks are free (``scheduler_reserve_full_isl``, on by default); a heuristic that takes a
    ``reserve_full_prompt`` parameter gets this value unless the settings give one, so that its
    decisions are ones vLLM will carry out."""
    from functools import partial

    from stepopt.heuristics.base import check_signature, coerce_params, get_heuristic
    from stepopt.simulate.policies import EXACT, ExactPolicy, parse_policy_spec

    field = "STEPOPT_HEURISTIC"
    head, raw = parse_policy_spec(settings.heuristic)
    given = {k: _text(v) for k, v in settings.heuristic_params.items()} | raw
    latency = load_latency(settings.preset)
    kind, _, solver = head.partition(":")
    if kind == EXACT:
        if given:
            raise InputError(field, "the exact rule takes no parameters", settings.heuristic)
        policy = ExactPolicy(solver or "auto", settings.time_limit_ms / 1000, settings.fallback)
        warm_up(policy, latency)
        return Resolved(settings, latency, lambda problem: policy.decide(problem)[0], {}, policy)
    fn = get_heuristic(head)
    params = coerce_params(fn, given, field)
    if reserve_full_prompt is not None and "reserve_full_prompt" not in params:
        try:
            accepts = "reserve_full_prompt" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            accepts = False
        if accepts:
            params["reserve_full_prompt"] = reserve_full_prompt
    check_signature(fn, head, params)
    rule = partial(fn, **params) if params else fn
    return Resolved(settings, latency, rule, params)


def warm_up(policy: ExactPolicy, latency: LatencyModel) -> None:
    """Solve a two-request step once with each backend the policy may use, so that the first
    served step does not pay the backends' first-call costs (measured: a first ``auto`` solve
    of a 40-request step took 13-21 ms against 3-11 ms after a warm-up, enough to pass a
    20 ms limit and hand the step to the fallback). Best effort: a failure here shows at the
    first step, where the fallback handles it."""
    from stepopt.model import EngineConfig, StepProblem, make_request
    from stepopt.simulate.policies import PolicyStats
    from stepopt.solvers.base import solve

    config = EngineConfig(max_num_scheduled_tokens=64, max_num_running_reqs=2, block_size=16)
    tiny = StepProblem(
        running=(make_request("warm-a", 100, 100, 0, 0.0),),
        waiting=(make_request("warm-b", 64, 0, 0, 1.0),),
        config=config,
        latency=latency,
        target_latency_ms=50.0,
        objective="target",
    )
    for name in dict.fromkeys([policy.solver, *(["cpsat"] if policy.solver == "auto" else [])]):
        with contextlib.suppress(Exception):
            solve(tiny, name, time_limit=1.0)
    with contextlib.suppress(Exception):
        policy.decide(tiny)
    policy.stats = PolicyStats()


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
