"""Problem and decision files: validation at the edge, conversion to the plain model.

Every error names the field and the value (``running[2].prompt_tokens: ... (got -5)``) so the
CLI can print it on one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
)

from stepopt.errors import InputError, validation_error
from stepopt.latency.documents import model_from_dict
from stepopt.latency.model import LatencyModel
from stepopt.latency.serialize import LatencySpec, PresetRef, model_to_dict
from stepopt.limits import (
    MAX_BLOCKS,
    MAX_ID_LENGTH,
    MAX_PRIORITY,
    MAX_REQUESTS,
    MAX_TARGET_MS,
    MAX_TIME_S,
    MAX_TOKENS,
    MIN_TARGET_MS,
    bad_id_char,
)
from stepopt.model import Decision, EngineConfig, Request, StepProblem


def _clean_id(text: str) -> str:
    bad = bad_id_char(text)
    if bad is not None:
        raise ValueError(f"ids must not contain control or bidi characters ({bad})")
    return text


# A request id: printable on one line (no control, line-separator or bidi characters).
RequestId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="No control, line-separator or bidi-control character.",
    ),
    AfterValidator(_clean_id),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestSpec(_Strict):
    """A request: ``computed_tokens`` are already in the KV cache; lower ``priority`` = more
    urgent."""

    id: RequestId
    prompt_tokens: StrictInt = Field(ge=1, le=MAX_TOKENS)
    computed_tokens: StrictInt = Field(default=0, ge=0, le=MAX_TOKENS)
    priority: StrictInt = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    arrival_time: float = Field(
        default=0.0,
        ge=-MAX_TIME_S,
        le=MAX_TIME_S,
        allow_inf_nan=False,
        description="Seconds (finite); orders the waiting queue.",
    )
    output_tokens: StrictInt | None = Field(default=None, ge=0, le=MAX_TOKENS)


class ConfigSpec(_Strict):
    """Engine limits (vLLM's names)."""

    max_num_scheduled_tokens: StrictInt = Field(default=8192, ge=1, le=MAX_TOKENS)
    max_num_running_reqs: StrictInt = Field(default=256, ge=1, le=MAX_REQUESTS)
    long_prefill_token_threshold: StrictInt = Field(default=0, ge=0, le=MAX_TOKENS)
    min_prefill_chunk: StrictInt = Field(default=64, ge=1, le=MAX_TOKENS)
    block_size: StrictInt = Field(default=16, ge=1, le=MAX_TOKENS)
    num_free_blocks: StrictInt | None = Field(default=None, ge=0, le=MAX_BLOCKS)


class ProblemSpec(_Strict):
    """A step problem file."""

    config: ConfigSpec = Field(default_factory=ConfigSpec)
    latency_model: PresetRef | LatencySpec
    # At least 1 ns; at most 1e9 ms so that |L - T| in ns stays exact in every solver.
    target_latency_ms: float = Field(
        ge=MIN_TARGET_MS,
        le=MAX_TARGET_MS,
        allow_inf_nan=False,
        description="At least 1 ns; finite. Numbers anywhere in the file must be finite.",
    )
    objective: Literal["target", "goodput"] = "target"
    priority_mode: Literal["strict", "weighted"] = "strict"
    running: list[RequestSpec] = Field(default_factory=list, max_length=MAX_REQUESTS)
    waiting: list[RequestSpec] = Field(default_factory=list, max_length=MAX_REQUESTS)


class DecisionSpec(_Strict):
    """A decision file: tokens per request id (absent ids get 0; negative counts are kept so
    that the evaluator reports them)."""

    tokens: dict[RequestId, Annotated[StrictInt, Field(ge=-MAX_TOKENS, le=MAX_TOKENS)]]
    preempted: list[RequestId] = Field(default_factory=list)


def latency_from_document(doc: Any, field: str = "latency_model") -> LatencyModel:
    """An explicit latency model or a ``{"preset": NAME}`` reference."""
    return model_from_dict(doc, field)


def load_latency_model(spec: str, field: str = "preset") -> LatencyModel:
    """The one "preset name or model file" loader (CLI options, the vLLM plug-in's setting):
    a shipped preset by name, else a JSON/YAML file in the preset format."""
    from stepopt.latency.presets import load_preset, preset_names

    path = Path(spec)
    if spec not in preset_names() and (spec.endswith((".json", ".yaml", ".yml")) or path.is_file()):
        return latency_from_document(read_document(path), field=field)
    return load_preset(spec)  # a preset name, or an error listing the valid ones


def read_text(path: str | Path, field: str = "file") -> str:
    """A text file's content as UTF-8 (a byte-order mark is skipped), with one-line errors."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(field, "no such file", str(p)) from None
    except UnicodeDecodeError as exc:
        raise InputError(
            field,
            f"{p}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
            show_value=False,
        ) from None
    except OSError as exc:
        raise InputError(field, f"cannot read: {exc.strerror}", str(p)) from None


def read_document(path: str | Path) -> Any:
    """JSON (or YAML for .yaml/.yml) from a file, with one-line errors. A key given twice in
    one object and a number that is not finite (``Infinity``, ``NaN``, ``.inf``, ``1e999``)
    are errors too: the first would silently drop a value, the second breaks the arithmetic."""
    p = Path(path)
    text = read_text(p)
    yaml = p.suffix.lower() in (".yaml", ".yml")
    try:
        doc = _load_yaml(text, p) if yaml else _load_json(text, p)
    except RecursionError:
        raise InputError("file", f"{p}: nested too deeply", show_value=False) from None
    check_values(doc)
    return doc


class _Object(dict):
    """A parsed object that remembers the first key given twice (parsers keep the last)."""

    duplicate: str | None = None


def _json_object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    for key, value in pairs:
        if key in obj and obj.duplicate is None:
            obj.duplicate = key
        obj[key] = value
    return obj


def _load_json(text: str, p: Path) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError as exc:
        raise InputError(
            "file", f"{p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def _load_yaml(text: str, p: Path) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Loader, node: Any, deep: bool = False) -> Any:
        obj = _Object(loader.construct_mapping(node, deep=deep))
        keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
        obj.duplicate = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        return obj

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InputError("file", f"{p}: invalid YAML: {str(exc).splitlines()[0]}") from None


def check_values(node: Any, path: str = "") -> None:
    """Reject a key given twice and a non-finite number anywhere in a parsed document."""
    if isinstance(node, dict):
        dup = getattr(node, "duplicate", None)
        if dup is not None:
            raise InputError(_join(path, dup), "key given twice in one object", show_value=False)
        for key, value in node.items():
            check_values(value, _join(path, str(key)))
    elif isinstance(node, list):
        for k, value in enumerate(node):
            check_values(value, f"{path}[{k}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise InputError(path or "file", "must be a finite number", node)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate_document(doc: Any, spec_cls: Any, what: str) -> tuple[Any, LatencyModel]:
    """A document with a ``latency_model`` validated against ``spec_cls`` (a problem, a
    window): the spec and the latency model, or a one-line error naming the field."""
    if not isinstance(doc, dict):
        raise InputError("file", f"{what} must be a JSON object", type(doc).__name__)
    check_values(doc)  # documents built in Python skip read_document
    lat_doc = doc.get("latency_model")
    rest = {k: v for k, v in doc.items() if k != "latency_model"}
    try:
        spec = spec_cls.model_validate({**rest, "latency_model": {"preset": "_"}})
    except ValidationError as exc:
        raise validation_error(exc) from None
    if lat_doc is None:
        raise InputError("latency_model", "field required", show_value=False)
    return spec, latency_from_document(lat_doc, field="latency_model")


def problem_from_dict(doc: Any) -> StepProblem:
    """Validate a problem document and build the :class:`StepProblem`."""
    spec, latency = validate_document(doc, ProblemSpec, "a problem")
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
    # len(running) > max_num_running_reqs is a valid problem with no feasible decision: the
    # solvers answer INFEASIBLE and stepopt.diagnose says why.
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


_REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(Request))


def _request_dict(r: Request) -> dict[str, Any]:
    """Every field of the dataclass, in its order; optional fields left unset are omitted."""
    d = {name: getattr(r, name) for name in _REQUEST_FIELDS}
    return {k: v for k, v in d.items() if v is not None}


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
    check_values(doc)
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
