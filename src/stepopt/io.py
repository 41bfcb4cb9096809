"""Problem and decision files: validation at the edge, conversion to the plain model.

Every error names the field and the value (``running[2].prompt_tokens: ... (got -5)``) so the
CLI can print it on one line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from stepopt.errors import InputError
from stepopt.latency.model import LatencyModel
from stepopt.latency.serialize import LatencySpec, PresetRef, model_from_dict, model_to_dict
from stepopt.model import Decision, EngineConfig, Request, StepProblem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestSpec(_Strict):
    """A request: ``computed_tokens`` are already in the KV cache; lower ``priority`` = more
    urgent."""

    id: str = Field(min_length=1)
    prompt_tokens: StrictInt = Field(ge=1)
    computed_tokens: StrictInt = Field(default=0, ge=0)
    priority: StrictInt = 0
    arrival_time: float = 0.0
    output_tokens: StrictInt | None = Field(default=None, ge=0)


class ConfigSpec(_Strict):
    """Engine limits (vLLM's names)."""

    max_num_scheduled_tokens: StrictInt = Field(default=8192, ge=1)
    max_num_running_reqs: StrictInt = Field(default=256, ge=1)
    long_prefill_token_threshold: StrictInt = Field(default=0, ge=0)
    min_prefill_chunk: StrictInt = Field(default=64, ge=1)
    block_size: StrictInt = Field(default=16, ge=1)
    num_free_blocks: StrictInt | None = Field(default=None, ge=0)


class ProblemSpec(_Strict):
    """A step problem file."""

    config: ConfigSpec = Field(default_factory=ConfigSpec)
    latency_model: PresetRef | LatencySpec
    target_latency_ms: float = Field(gt=0)
    objective: Literal["target", "goodput"] = "target"
    priority_mode: Literal["strict", "weighted"] = "strict"
    running: list[RequestSpec] = Field(default_factory=list)
    waiting: list[RequestSpec] = Field(default_factory=list)


class DecisionSpec(_Strict):
    """A decision file: tokens per request id (absent ids get 0)."""

    tokens: dict[str, StrictInt]
    preempted: list[str] = Field(default_factory=list)


def validation_error(exc: ValidationError, prefix: str = "") -> InputError:
    """The first pydantic error as one line naming the field and the value."""
    err = exc.errors()[0]
    path = prefix
    for part in err["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("PresetRef", "LatencySpec"):
            continue  # union branch names: not a field the user wrote
        else:
            path += f".{part}" if path else str(part)
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    value = err.get("input")
    show = err["type"] not in ("missing",) and not isinstance(value, dict | list)
    return InputError(path or "file", msg[0].lower() + msg[1:], value, show_value=show)


def read_document(path: str | Path) -> Any:
    """JSON (or YAML for .yaml/.yml) from a file, with one-line errors."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file", "no such file", str(p)) from None
    except OSError as exc:
        raise InputError("file", f"cannot read: {exc.strerror}", str(p)) from None
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError("file", f"{p}: invalid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            "file", f"{p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def problem_from_dict(doc: Any) -> StepProblem:
    """Validate a problem document and build the :class:`StepProblem`."""
    if not isinstance(doc, dict):
        raise InputError("file", "a problem must be a JSON object", type(doc).__name__)
    lat_doc = doc.get("latency_model")
    rest = {k: v for k, v in doc.items() if k != "latency_model"}
    try:
        spec = ProblemSpec.model_validate({**rest, "latency_model": {"preset": "_"}})
    except ValidationError as exc:
        raise validation_error(exc) from None
    if lat_doc is None:
        raise InputError("latency_model", "field required", show_value=False)
    latency = model_from_dict(lat_doc, field="latency_model")
    return _build(spec, latency)


def _build(spec: ProblemSpec, latency: LatencyModel) -> StepProblem:
    seen: dict[str, str] = {}
    for queue in ("running", "waiting"):
        for k, r in enumerate(getattr(spec, queue)):
            if r.id in seen:
                where = seen[r.id]
                what = "duplicate id" if where.startswith(queue) else "id in both queues"
                raise InputError(f"{queue}[{k}].id", f"{what}, first at {where}", r.id)
            seen[r.id] = f"{queue}[{k}]"
    for k, r in enumerate(spec.waiting):
        if r.computed_tokens >= r.prompt_tokens:
            raise InputError(
                f"waiting[{k}].computed_tokens",
                f"a waiting request must have computed_tokens < prompt_tokens ({r.prompt_tokens})",
                r.computed_tokens,
            )
    cfg = EngineConfig(**spec.config.model_dump())
    if len(spec.running) > cfg.max_num_running_reqs:
        raise InputError(
            "running",
            f"{len(spec.running)} running requests exceed config.max_num_running_reqs",
            cfg.max_num_running_reqs,
        )
    return StepProblem(
        running=tuple(Request(**r.model_dump()) for r in spec.running),
        waiting=tuple(Request(**r.model_dump()) for r in spec.waiting),
        config=cfg,
        latency=latency,
        target_latency_ms=spec.target_latency_ms,
        objective=spec.objective,
        priority_mode=spec.priority_mode,
    )


def load_problem(path: str | Path) -> StepProblem:
    return problem_from_dict(read_document(path))


def _request_dict(r: Request) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": r.id,
        "prompt_tokens": r.prompt_tokens,
        "computed_tokens": r.computed_tokens,
        "priority": r.priority,
        "arrival_time": r.arrival_time,
    }
    if r.output_tokens is not None:
        d["output_tokens"] = r.output_tokens
    return d


def problem_to_dict(problem: StepProblem, *, explicit_latency: bool = False) -> dict[str, Any]:
    """The file form of a problem. A shipped preset is written as ``{"preset": NAME}`` unless
    ``explicit_latency`` (then the coefficients are inlined, as hashing needs)."""
    from stepopt.latency.presets import load_preset, preset_names

    lat = problem.latency
    if not explicit_latency and lat.name in preset_names() and load_preset(lat.name) == lat:
        lat_doc: dict[str, Any] = {"preset": lat.name}
    else:
        lat_doc = model_to_dict(lat)
    cfg = problem.config
    return {
        "config": {
            "max_num_scheduled_tokens": cfg.max_num_scheduled_tokens,
            "max_num_running_reqs": cfg.max_num_running_reqs,
            "long_prefill_token_threshold": cfg.long_prefill_token_threshold,
            "min_prefill_chunk": cfg.min_prefill_chunk,
            "block_size": cfg.block_size,
            "num_free_blocks": cfg.num_free_blocks,
        },
        "latency_model": lat_doc,
        "target_latency_ms": problem.target_latency_ms,
        "objective": problem.objective,
        "priority_mode": problem.priority_mode,
        "running": [_request_dict(r) for r in problem.running],
        "waiting": [_request_dict(r) for r in problem.waiting],
    }


def save_problem(problem: StepProblem, path: str | Path) -> None:
    Path(path).write_text(json.dumps(problem_to_dict(problem), indent=1) + "\n", encoding="utf-8")


def problem_hash(problem: StepProblem) -> str:
    """Content hash of everything that defines the problem (latency coefficients inlined)."""
    doc = problem_to_dict(problem, explicit_latency=True)
    doc["latency_model"].pop("meta", None)
    doc["latency_model"].pop("name", None)
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def decision_from_dict(doc: Any) -> Decision:
    if not isinstance(doc, dict):
        raise InputError("file", "a decision must be a JSON object", type(doc).__name__)
    try:
        spec = DecisionSpec.model_validate(doc)
    except ValidationError as exc:
        raise validation_error(exc) from None
    return Decision(tokens=dict(spec.tokens), preempted=tuple(spec.preempted))


def load_decision(path: str | Path) -> Decision:
    return decision_from_dict(read_document(path))


def decision_to_dict(decision: Decision) -> dict[str, Any]:
    doc: dict[str, Any] = {"tokens": decision.scheduled()}
    if decision.preempted:
        doc["preempted"] = list(decision.preempted)
    return doc


def save_decision(decision: Decision, path: str | Path) -> None:
    Path(path).write_text(json.dumps(decision_to_dict(decision), indent=1) + "\n")


def problem_json_schema() -> dict[str, Any]:
    """JSON Schema of a problem file."""
    schema = ProblemSpec.model_json_schema()
    schema["title"] = "stepopt step problem"
    return schema
