"""Window files (JSON or YAML): validation at the edge, one-line errors naming the field.

Times are integer nanoseconds (``*_ns``) so that a window cut from a simulation replays to
the nanosecond. ``running`` requests hold a slot (and their KV blocks); ``waiting`` ones
arrived by ``start_time_ns``; ``arrivals`` arrive later, inside the window.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, StrictInt

from stepopt.errors import InputError
from stepopt.horizon.problem import Slo, WindowProblem, WindowRequest
from stepopt.io import ConfigSpec, RequestId, _Strict, read_document, validate_document
from stepopt.latency.serialize import LatencySpec, PresetRef, model_to_dict
from stepopt.limits import MAX_PRIORITY, MAX_REQUESTS, MAX_TARGET_MS, MAX_TOKENS
from stepopt.model import EngineConfig

MAX_NS = 4 * 10**18  # int64 with room for K steps on top
MAX_STEPS = 4096


class _ReqBase(_Strict):
    id: RequestId
    prompt_tokens: StrictInt = Field(ge=1, le=MAX_TOKENS)
    output_tokens: StrictInt = Field(ge=1, le=MAX_TOKENS)
    priority: StrictInt = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    arrival_ns: StrictInt = Field(ge=0, le=MAX_NS)
    ttft_ms: float | None = Field(default=None, gt=0, le=MAX_TARGET_MS, allow_inf_nan=False)


class RunningSpec(_ReqBase):
    """An admitted request: ``prompt_tokens`` are the tokens it must have computed before it
    decodes (for a preempted one, prompt + emitted, as the simulator recomputes)."""

    computed_tokens: StrictInt = Field(default=0, ge=0, le=MAX_TOKENS)
    emitted_tokens: StrictInt = Field(default=0, ge=0, le=MAX_TOKENS)
    first_token_ns: StrictInt | None = Field(default=None, ge=0, le=MAX_NS)
    last_token_ns: StrictInt | None = Field(default=None, ge=0, le=MAX_NS)


class SloSpec(_Strict):
    ttft_ms: float = Field(gt=0, le=MAX_TARGET_MS, allow_inf_nan=False)
    tbt_ms: float = Field(gt=0, le=MAX_TARGET_MS, allow_inf_nan=False)
    ttft_ms_by_priority: dict[str, float] = Field(
        default_factory=dict, description="TTFT deadline (ms) per priority value (as text)."
    )


class WindowSpec(_Strict):
    """A window file."""

    config: ConfigSpec = Field(default_factory=ConfigSpec)
    latency_model: PresetRef | LatencySpec
    start_time_ns: StrictInt = Field(ge=0, le=MAX_NS)
    steps: StrictInt = Field(ge=1, le=MAX_STEPS)
    slo: SloSpec
    priority_mode: Literal["strict", "weighted"] = "strict"
    slo_weights: Literal["unweighted", "priority"] = "unweighted"
    running: list[RunningSpec] = Field(default_factory=list, max_length=MAX_REQUESTS)
    waiting: list[_ReqBase] = Field(default_factory=list, max_length=MAX_REQUESTS)
    arrivals: list[_ReqBase] = Field(default_factory=list, max_length=MAX_REQUESTS)


def window_from_dict(doc: Any, name: str = "window") -> WindowProblem:
    """Validate a window document and build the :class:`WindowProblem`."""
    spec, latency = validate_document(doc, WindowSpec, "a window")
    t0 = spec.start_time_ns
    reqs: list[WindowRequest] = []
    seen: dict[str, str] = {}
    for queue in ("running", "waiting", "arrivals"):
        for k, r in enumerate(getattr(spec, queue)):
            where = f"{queue}[{k}]"
            if r.id in seen:
                raise InputError(f"{where}.id", f"duplicate id, first at {seen[r.id]}", r.id)
            seen[r.id] = where
            if queue == "arrivals" and r.arrival_ns <= t0:
                raise InputError(
                    f"{where}.arrival_ns",
                    f"an arrival must come after start_time_ns ({t0})",
                    r.arrival_ns,
                )
            if queue != "arrivals" and r.arrival_ns > t0:
                raise InputError(
                    f"{where}.arrival_ns",
                    f"must be <= start_time_ns ({t0}); use arrivals",
                    r.arrival_ns,
                )
            reqs.append(_request(r, queue == "running", where, t0))
    slo = spec.slo
    by_prio = []
    for key, ms in slo.ttft_ms_by_priority.items():
        try:
            prio = int(key)
        except ValueError:
            raise InputError("slo.ttft_ms_by_priority", "keys must be integers", key) from None
        if not (0 < ms <= MAX_TARGET_MS):
            raise InputError(f"slo.ttft_ms_by_priority.{key}", "must be > 0 ms", ms)
        by_prio.append((prio, float(ms)))
    return WindowProblem(
        start_ns=t0,
        requests=tuple(reqs),
        config=EngineConfig(**spec.config.model_dump()),
        latency=latency,
        slo=Slo(slo.ttft_ms, slo.tbt_ms, tuple(sorted(by_prio))),
        steps=spec.steps,
        priority_mode=spec.priority_mode,
        slo_weights=spec.slo_weights,
        name=name,
    )


def _request(r: Any, running: bool, where: str, t0: int) -> WindowRequest:
    computed = getattr(r, "computed_tokens", 0)
    emitted = getattr(r, "emitted_tokens", 0)
    first = getattr(r, "first_token_ns", None)
    last = getattr(r, "last_token_ns", None)
    if emitted >= r.output_tokens:
        raise InputError(
            f"{where}.emitted_tokens", f"must be < output_tokens ({r.output_tokens})", emitted
        )
    if computed >= r.prompt_tokens and emitted == 0:
        raise InputError(
            f"{where}.emitted_tokens",
            "a request whose prompt is computed has emitted its first token (>= 1)",
            emitted,
        )
    if emitted > 0:
        for fname, v in (("first_token_ns", first), ("last_token_ns", last)):
            if v is None:
                raise InputError(f"{where}.{fname}", "required when emitted_tokens > 0")
            if not r.arrival_ns <= v <= t0:
                raise InputError(
                    f"{where}.{fname}",
                    f"must lie in [arrival_ns, start_time_ns] = [{r.arrival_ns}, {t0}]",
                    v,
                )
        if first > last:
            raise InputError(f"{where}.first_token_ns", f"after last_token_ns ({last})", first)
    if running and computed > r.prompt_tokens + emitted:
        raise InputError(
            f"{where}.computed_tokens",
            f"more than prompt + emitted tokens ({r.prompt_tokens + emitted})",
            computed,
        )
    return WindowRequest(
        r.id,
        r.prompt_tokens,
        r.output_tokens,
        r.arrival_ns,
        computed,
        emitted,
        r.priority,
        r.ttft_ms,
        first if emitted else None,
        last if emitted else None,
        running,
    )


def load_window(path: str | Path) -> WindowProblem:
    return window_from_dict(read_document(path), name=Path(path).stem)


def window_to_dict(w: WindowProblem) -> dict[str, Any]:
    """The file form of a window (the latency model inlined unless it is a shipped preset)."""
    from stepopt.latency.presets import load_preset, preset_names

    lat = w.latency
    if lat.name in preset_names() and load_preset(lat.name) == lat:
        lat_doc: dict[str, Any] = {"preset": lat.name}
    else:
        lat_doc = model_to_dict(lat)
    c = w.config
    out: dict[str, Any] = {
        "config": {
            "max_num_scheduled_tokens": c.max_num_scheduled_tokens,
            "max_num_running_reqs": c.max_num_running_reqs,
            "long_prefill_token_threshold": c.long_prefill_token_threshold,
            "min_prefill_chunk": c.min_prefill_chunk,
            "block_size": c.block_size,
            "num_free_blocks": c.num_free_blocks,
        },
        "latency_model": lat_doc,
        "start_time_ns": w.start_ns,
        "steps": w.steps,
        "slo": {
            "ttft_ms": w.slo.ttft_ms,
            "tbt_ms": w.slo.tbt_ms,
            "ttft_ms_by_priority": {str(p): ms for p, ms in w.slo.ttft_ms_by_priority},
        },
        "priority_mode": w.priority_mode,
        "slo_weights": w.slo_weights,
        "running": [],
        "waiting": [],
        "arrivals": [],
    }
    for r in w.requests:
        d: dict[str, Any] = {
            "id": r.id,
            "prompt_tokens": r.prompt_tokens,
            "output_tokens": r.output_tokens,
            "priority": r.priority,
            "arrival_ns": r.arrival_ns,
        }
        if r.ttft_ms is not None:
            d["ttft_ms"] = r.ttft_ms
        if r.running:
            d.update(computed_tokens=r.computed_tokens, emitted_tokens=r.emitted_tokens)
            if r.emitted_tokens:
                d.update(first_token_ns=r.first_token_ns, last_token_ns=r.last_token_ns)
            out["running"].append(d)
        elif r.arrival_ns <= w.start_ns:
            out["waiting"].append(d)
        else:
            out["arrivals"].append(d)
    return out


def save_window(w: WindowProblem, path: str | Path) -> None:
    Path(path).write_text(json.dumps(window_to_dict(w), indent=1) + "\n", encoding="utf-8")


def window_json_schema() -> dict[str, Any]:
    schema = WindowSpec.model_json_schema()
    schema["title"] = "stepopt window problem"
    return schema
